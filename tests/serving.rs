//! End-to-end tests of serving: `ferry serving` from files and from a registry, and `ferry up`
//! serving what is pushed to it, over the Open Inference Protocol v2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn expected(model: &str) -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["models"][model].clone()
}

fn assert_close(got: &Value, want: &Value) {
    let got = got.as_array().unwrap();
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!(
            (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
            "{g} differs from {w}"
        );
    }
}

async fn post(url: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, headers)
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn serve_files(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "serving".to_string(),
        "--model".to_string(),
        format!("mlp={}", fixture("mlp.onnx").display()),
        "--model".to_string(),
        format!("two={}", fixture("two_inputs.onnx").display()),
        "--model".to_string(),
        format!("ints={}", fixture("int64.onnx").display()),
        "--model".to_string(),
        format!("fixed={}", fixture("fixed_shape.onnx").display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(dir, &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_files_answer_like_onnx_runtime_itself() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(dir.path(), &[]);
    let base = server.url();
    for (name, fixture_name) in [
        ("mlp", "mlp.onnx"),
        ("two", "two_inputs.onnx"),
        ("ints", "int64.onnx"),
        ("fixed", "fixed_shape.onnx"),
    ] {
        let case = expected(fixture_name);
        let request = json!({"id": format!("req-{name}"), "inputs": case["inputs"]});
        let (status, answer, _) = post(&format!("{base}/v2/models/{name}/infer"), &request).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["model_name"], name);
        assert_eq!(answer["model_version"], "1");
        assert_eq!(answer["id"], format!("req-{name}"));
        for want in case["outputs"].as_array().unwrap() {
            let got = answer["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == want["name"])
                .unwrap_or_else(|| panic!("{name}: no output {}", want["name"]));
            assert_eq!(got["datatype"], want["datatype"], "{name}");
            assert_eq!(got["shape"], want["shape"], "{name}");
            if want["datatype"] == "FP32" || want["datatype"] == "FP64" {
                assert_close(&got["data"], &want["data"]);
            } else {
                assert_eq!(got["data"], want["data"], "{name}");
            }
        }
    }
    // Nested data is accepted too, and the outputs filter is honoured.
    let case = expected("mlp.onnx");
    let flat = case["inputs"][0]["data"].as_array().unwrap().clone();
    let nested: Vec<Value> = flat
        .chunks(32)
        .map(|row| Value::from(row.to_vec()))
        .collect();
    let request = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [nested.len(), 32], "data": nested}],
                          "outputs": [{"name": "probabilities"}]});
    let (status, answer, _) =
        post(&format!("{base}/v2/models/mlp/versions/1/infer"), &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_close(&answer["outputs"][0]["data"], &case["outputs"][0]["data"]);
    assert!(answer.get("id").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_health_and_triton_config_describe_the_models() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(dir.path(), &[]);
    let base = server.url();
    let (status, meta) = get(&format!("{base}/v2")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "ferry");
    assert_eq!(get(&format!("{base}/v2/health/live")).await.0, 200);
    assert_eq!(get(&format!("{base}/v2/health/ready")).await.0, 200);
    let (status, meta) = get(&format!("{base}/v2/models/mlp")).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "input", "datatype": "FP32", "shape": [-1, 32]})
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 2]));
    assert_eq!(get(&format!("{base}/v2/models/mlp/ready")).await.0, 200);
    assert_eq!(
        get(&format!("{base}/v2/models/mlp/versions/1/ready"))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&format!("{base}/v2/models/mlp/versions/9/ready"))
            .await
            .0,
        404
    );
    let (status, config) = get(&format!("{base}/v2/models/mlp/config")).await;
    assert_eq!(status, 200, "{config}");
    assert!(config["max_batch_size"].as_u64().unwrap() > 0, "{config}");
    assert_eq!(config["input"][0]["dims"], json!([32]));
    let (_, config) = get(&format!("{base}/v2/models/fixed/config")).await;
    assert_eq!(config["max_batch_size"], 0, "{config}");
    assert_eq!(config["input"][0]["dims"], json!([1, 3, 4, 4]));
    let (status, index, _) = post(&format!("{base}/v2/repository/index"), &json!({})).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fixed", "ints", "mlp", "two"]);
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "READY")
    );
    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ferry_serving_queue_depth")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inferences_are_400s_that_name_the_input_and_never_5xx() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(dir.path(), &[]);
    let url = format!("{}/v2/models/mlp/infer", server.url());
    let row: Vec<f32> = vec![0.5; 32];
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 32], "data": row}]}),
            "nope",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 32], "data": vec![1; 32]}]}),
            "FP32",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [32], "data": row}]}),
            "input",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 31], "data": vec![0.5; 31]}]}),
            "32",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 32], "data": row}]}),
            "input",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 32], "data": row}]}),
            "FP16",
        ),
        (json!({"inputs": []}), "input"),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 32], "data": row}], "outputs": [{"name": "logits"}]}),
            "logits",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [4611686018427387904_u64, 4], "data": row}]}),
            "input",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer, headers) = post(&url, &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(headers["content-type"], "application/json");
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            message.contains(needle),
            "{message} should mention {needle}"
        );
    }
    let raw = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"inputs\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let (status, answer, _) = post(
        &format!("{}/v2/models/ghost/infer", server.url()),
        &json!({"inputs": []}),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("ghost"));
    let (status, _, _) = post(
        &format!("{}/v2/models/mlp/versions/7/infer", server.url()),
        &json!({"inputs": []}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_429_with_retry_after_and_no_errors_of_ours() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(
        dir.path(),
        &[
            "--queue-capacity",
            "2",
            "--max-batch-size",
            "1",
            "--intra-op-threads",
            "1",
        ],
    );
    let url = format!("{}/v2/models/mlp/infer", server.url());
    // Big requests keep the single worker busy while many more arrive.
    let rows = 4000;
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 32], "data": vec![0.25f32; rows * 32]}]});
    let body = Arc::new(body.to_string());
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body((*body).clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry = response.headers().get("retry-after").cloned();
            (status, retry)
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                shed += 1;
                assert!(retry.is_some(), "a 429 without Retry-After");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1, "nothing was served");
    assert!(shed >= 1, "a queue of 2 admitted 64 concurrent requests");
    // Service resumes as soon as the load drops.
    let small = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 32], "data": vec![0.25f32; 32]}]});
    let (status, _, _) = post(&url, &small).await;
    assert_eq!(status, 200);
}

/// Pushes with the CLI; returns the version.
fn push(dir: &std::path::Path, registry: &str, name: &str, file: &str, alias: Option<&str>) -> i64 {
    let extra: Vec<&str> = alias.map(|a| vec!["--alias", a]).unwrap_or_default();
    push_model(dir, registry, name, &fixture(file), &extra, &[])
}

fn set_alias(dir: &std::path::Path, registry: &str, name: &str, alias: &str, version: i64) {
    let v = version.to_string();
    let out = ferry(
        dir,
        &["model", "alias", "set", name, alias, &v],
        &[("FERRY_REGISTRY", registry)],
    );
    assert!(out.status.success(), "{}", text(&out));
}

async fn wait_for_version(url: &str, body: &Value, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer, _) = post(url, body).await;
        if status == 200 && answer["model_version"] == version {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "version {version} never answered: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_up_serves_what_is_pushed_and_follows_alias_moves() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["up"]);
    let base = server.url();
    // The demo model is served at its production alias.
    let case = expected("mlp.onnx");
    let body = json!({"inputs": case["inputs"]});
    wait_for_version(&format!("{base}/v2/models/demo/infer"), &body, "1").await;
    // A pushed model is served at its newest version until it gets a production alias.
    let v1 = push(dir.path(), &base, "fraud", "mlp.onnx", None);
    let url = format!("{base}/v2/models/fraud/infer");
    wait_for_version(&url, &body, &v1.to_string()).await;
    let v2 = push(dir.path(), &base, "fraud", "mlp.onnx", None);
    wait_for_version(&url, &body, &v2.to_string()).await;
    set_alias(dir.path(), &base, "fraud", "production", v1);
    wait_for_version(&url, &body, &v1.to_string()).await;
    let (status, meta) = get(&format!("{base}/v2/models/fraud")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["versions"], json!([v1.to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_under_load_fails_no_request() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, "fraud", "mlp.onnx", Some("production"));
    // Same bytes, another version: the swap machinery runs in full either way.
    let v2 = push(dir.path(), &reg, "fraud", "mlp.onnx", None);
    let cache = dir.path().join("cache");
    let serving = Server::start(
        dir.path(),
        &[
            "serving",
            "--registry",
            &reg,
            "--model",
            "fraud@production",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let url = format!("{}/v2/models/fraud/infer", serving.url());
    let case = expected("mlp.onnx");
    let body = Arc::new(json!({"inputs": case["inputs"]}).to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, body, stop, failures, served) = (
            url.clone(),
            body.clone(),
            stop.clone(),
            failures.clone(),
            served.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body((*body).clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        versions.insert(v["model_version"].as_str().unwrap().to_string());
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            versions
        }));
    }
    for round in 0..3 {
        let (to, _) = if round % 2 == 0 { (v2, v1) } else { (v1, v2) };
        set_alias(dir.path(), &reg, "fraud", "production", to);
        let probe = json!({"inputs": case["inputs"]});
        wait_for_version(&url, &probe, &to.to_string()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for c in clients {
        seen.extend(c.await.unwrap());
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the swaps"
    );
    assert!(served.load(Ordering::Relaxed) > 50);
    assert_eq!(seen, [v1.to_string(), v2.to_string()].into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_of_many_chunks_downloads_checks_and_serves() {
    if !have_onnxruntime() {
        return;
    }
    // 48 MiB arrives in far more HTTP chunks than the download keeps in flight: the writer
    // thread must be draining them while they arrive (it once started only after the last).
    let dir = tempfile::tempdir().unwrap();
    let mut model = Vec::new();
    onnx_bytes::write_identity_model(&mut model, 48 << 20);
    let path = dir.path().join("big.onnx");
    std::fs::write(&path, &model).unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let version = push_model(
        dir.path(),
        &reg,
        "big",
        &path,
        &["--alias", "production"],
        &[],
    );
    let cache = dir.path().join("cache");
    let serving = Server::start(
        dir.path(),
        &[
            "serving",
            "--registry",
            &reg,
            "--model",
            "big@production",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let url = format!("{}/v2/models/big/infer", serving.url());
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]});
    wait_for_version(&url, &body, &version.to_string()).await;
    let (status, answer, _) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([1.0, 2.0, 3.0, 4.0]));
    // The cached copy is the whole model, byte for byte.
    let cached: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == model.len() as u64))
        .collect();
    assert_eq!(cached.len(), 1, "no complete copy in the cache");
    assert!(std::fs::read(&cached[0]).unwrap() == model);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_registry_down_serves_from_the_cache_and_converges_later() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, "fraud", "mlp.onnx", Some("production"));
    let cache = dir.path().join("cache");
    let args = [
        "serving",
        "--registry",
        &reg,
        "--model",
        "fraud@production",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let mut serving = Server::start(dir.path(), &args);
    let case = expected("mlp.onnx");
    let body = json!({"inputs": case["inputs"]});
    wait_for_version(
        &format!("{}/v2/models/fraud/infer", serving.url()),
        &body,
        &v1.to_string(),
    )
    .await;
    serving.kill9();
    registry.kill9();

    // Registry down: the restarted server still answers, from its cache.
    let serving = Server::start(dir.path(), &args);
    let url = format!("{}/v2/models/fraud/infer", serving.url());
    let (status, answer, _) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], v1.to_string());

    // The registry comes back (same port, same data) and moves the alias: serving converges.
    let port = reg.rsplit(':').next().unwrap().to_string();
    let mut restarted = std::process::Command::new(ferry_bin())
        .args([
            "up",
            "--no-demo",
            "--no-serving",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if reqwest::get(format!("{reg}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the registry did not restart");
    let v2 = push(dir.path(), &reg, "fraud", "two_inputs.onnx", None);
    set_alias(dir.path(), &reg, "fraud", "production", v2);
    let probe = expected("two_inputs.onnx");
    wait_for_version(&url, &json!({"inputs": probe["inputs"]}), &v2.to_string()).await;
    let _ = restarted.kill();
    let _ = restarted.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_finish_before_its_deadline_is_504() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(
        dir.path(),
        &[
            "--request-timeout-ms",
            "1",
            "--max-batch-size",
            "1",
            "--intra-op-threads",
            "1",
        ],
    );
    let rows = 20_000;
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 32], "data": vec![0.5f32; rows * 32]}]});
    let (status, answer, _) = post(&format!("{}/v2/models/mlp/infer", server.url()), &body).await;
    assert_eq!(status, 504, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("deadline"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_serving_fails_readiness_but_keeps_answering_for_the_shutdown_delay() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_files(dir.path(), &["--shutdown-delay", "3s"]);
    let url = server.url();
    let infer = format!("{url}/v2/models/mlp/infer");
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 32], "data": vec![0.5f32; 32]}]});
    assert_eq!(get(&format!("{url}/v2/health/ready")).await.0, 200);
    let signalled = std::time::Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status();
    // Readiness fails at once, so load balancers stop sending...
    let mut not_ready = false;
    while signalled.elapsed() < Duration::from_secs(2) {
        if get(&format!("{url}/v2/health/ready")).await.0 == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(not_ready, "readiness still passes after SIGTERM");
    // ...while new connections are still answered until the delay is over (each `post` opens a
    // new connection).
    let (status, answer, _) = post(&infer, &body).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the check ran too late to mean anything"
    );
    assert_eq!(status, 200, "{answer}");
    // Then it stops listening and exits cleanly.
    let exit = server.terminate();
    assert!(exit.success(), "{exit}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "exited before the shutdown delay was over"
    );
    assert!(
        server.logs().contains("still accepting"),
        "{}",
        server.logs()
    );
}

/// What the server logged as `http_threads` when its async runtime started.
fn runtime_threads(server: &Server) -> Option<u64> {
    server.logs().lines().find_map(|line| {
        let line: Value = serde_json::from_str(line).ok()?;
        (line["message"] == "async runtime started")
            .then(|| line["http_threads"].as_u64())
            .flatten()
    })
}

/// What the server logged as `intra_op_threads` when it loaded `model`.
fn loaded_threads(server: &Server, model: &str) -> Option<u64> {
    server.logs().lines().find_map(|line| {
        let line: Value = serde_json::from_str(line).ok()?;
        (line["message"] == "model loaded and warmed up" && line["model"] == model)
            .then(|| line["intra_op_threads"].as_u64())
            .flatten()
    })
}

#[test]
fn a_small_model_gets_one_intra_op_thread_unless_told_otherwise_and_the_log_says_so() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(dir.path(), &["--model-option", "fixed:intra_op_threads=2"]);
    // Both files are far under the 8 MiB threshold.
    assert_eq!(loaded_threads(&server, "mlp"), Some(1), "{}", server.logs());
    assert_eq!(
        loaded_threads(&server, "fixed"),
        Some(2),
        "{}",
        server.logs()
    );
}

#[test]
fn the_async_runtime_has_the_threads_asked_for_and_half_the_cpus_by_default() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = format!("mlp={}", fixture("mlp.onnx").display());
    let mut asked = Server::start(
        dir.path(),
        &["serving", "--model", &model, "--http-threads", "3"],
    );
    assert_eq!(runtime_threads(&asked), Some(3), "{}", asked.logs());
    asked.terminate();
    let mut default = Server::start(dir.path(), &["serving", "--model", &model]);
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(
        runtime_threads(&default),
        Some((cpus / 2).max(1)),
        "{}",
        default.logs()
    );
    default.terminate();
    let refused = ferry(
        dir.path(),
        &["serving", "--model", &model, "--http-threads", "0"],
        &[],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("--http-threads"),
        "{}",
        text(&refused)
    );
}
