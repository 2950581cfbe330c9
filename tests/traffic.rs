//! End-to-end tests of the traffic layer with the real binary: an endpoint with a canary and a
//! shadow under real traffic, sticky routing, feedback, local stats, the registry's analysis
//! across replicas, the prediction log, and a policy that cannot be loaded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn request_body() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("mlp-request.json")).unwrap()).unwrap()
}

fn push(dir: &std::path::Path, registry: &str, file: &str) -> i64 {
    push_model(dir, registry, "fraud", &fixture(file), &[], &[])
}

fn endpoint_set(dir: &std::path::Path, registry: &str, args: &[&str]) {
    set_endpoint(dir, registry, "fraud", "fraud", args);
}

struct Answer {
    status: u16,
    version: String,
    route: String,
    request_id: String,
}

async fn infer(client: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> Answer {
    let mut request = client
        .post(url)
        .json(&json!({"inputs": request_body()["inputs"]}));
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let route = response
        .headers()
        .get("x-ferry-route")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    Answer {
        status,
        version: body["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        route,
        request_id,
    }
}

async fn wait_until<F: Fn(&Value) -> bool>(url: &str, what: &str, check: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    // The repository index is a POST, as the protocol has it; everything else is a GET.
    let post = url.ends_with("/v2/repository/index");
    loop {
        let request = if post {
            client.post(url)
        } else {
            client.get(url)
        };
        if let Ok(r) = request.send().await
            && let Ok(v) = r.json::<Value>().await
            && check(&v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn version_of(analysis: &Value, v: i64) -> &Value {
    analysis["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["version"] == v)
        .unwrap_or_else(|| panic!("no version {v} in {analysis}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_splits_mirrors_and_judges_real_traffic() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("prediction-log");
    let log_url = format!("file://{}", log_dir.display());
    let server = Server::start(
        dir.path(),
        &[
            "up",
            "--no-demo",
            "--prediction-log",
            &log_url,
            "--log-inputs",
        ],
    );
    let base = server.url();
    let (v1, v2, v3) = (
        push(dir.path(), &base, "mlp.onnx"),
        push(dir.path(), &base, "mlp.onnx"),
        push(dir.path(), &base, "mlp.onnx"),
    );
    endpoint_set(
        dir.path(),
        &base,
        &[
            "--stable",
            &v1.to_string(),
            "--canary",
            &v2.to_string(),
            "--weight",
            "0.3",
            "--shadow",
            &v3.to_string(),
            "--sticky-header",
            "x-user",
        ],
    );
    let url = format!("{base}/v2/models/fraud/infer");
    let client = reqwest::Client::new();
    // Wait for serving to switch to the endpoint's routing table (until then the name is served
    // as a plain model).
    wait_until(
        &format!("{base}/v2/models/fraud/stats"),
        "the routing table",
        |s| {
            s["versions"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| v["role"] == "canary"))
        },
    )
    .await;
    // The split: 400 requests with random ids land on the canary about 30% of the time.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids_by_version: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..400 {
        let a = infer(&client, &url, &[]).await;
        assert_eq!(a.status, 200);
        let expected = if a.route == "canary" { v2 } else { v1 };
        assert_eq!(
            a.version,
            expected.to_string(),
            "route {} answered by {}",
            a.route,
            a.version
        );
        *counts.entry(a.route.clone()).or_default() += 1;
        ids_by_version
            .entry(a.version.clone())
            .or_default()
            .push(a.request_id);
    }
    let canary = *counts.get("canary").unwrap_or(&0) as f64 / 400.0;
    let bound = 3.29 * (0.3f64 * 0.7 / 400.0).sqrt();
    assert!(
        (canary - 0.3).abs() <= bound,
        "canary share {canary} outside 0.3 ± {bound}"
    );

    // Stickiness: every request of a user goes to the same version.
    for user in 0..30 {
        let header = [("x-user", format!("user-{user}"))];
        let first = infer(&client, &url, &header).await.version;
        for _ in 0..4 {
            assert_eq!(
                infer(&client, &url, &header).await.version,
                first,
                "user-{user} moved"
            );
        }
    }
    // Naming a version bypasses the split.
    let direct = infer(
        &client,
        &format!("{base}/v2/models/fraud/versions/{v2}/infer"),
        &[],
    )
    .await;
    assert_eq!(
        (
            direct.status,
            direct.route.as_str(),
            direct.version.as_str()
        ),
        (200, "direct", v2.to_string().as_str())
    );

    // Feedback: the stable version earns 0.8, the canary 0.2; labels make accuracy.
    let feedback_url = format!("{base}/v2/models/fraud/feedback");
    let mut given = 0;
    for (version, reward, label) in [(v1, 0.8, 0), (v2, 0.2, 1)] {
        for id in ids_by_version[&version.to_string()].iter().take(20) {
            let r = client
                .post(&feedback_url)
                .json(&json!({"id": id, "reward": reward, "label": label}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            given += 1;
        }
    }
    assert_eq!(given, 40);
    let again = client
        .post(&feedback_url)
        .json(&json!({"id": ids_by_version[&v1.to_string()][0], "reward": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a second feedback must not count");
    let unknown = client
        .post(&feedback_url)
        .json(&json!({"id": "never-predicted", "reward": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let out = ferry(
        dir.path(),
        &[
            "feedback",
            "fraud",
            &ids_by_version[&v2.to_string()][30],
            "--reward",
            "0.2",
        ],
        &[("FERRY_SERVING", base.as_str())],
    );
    assert!(out.status.success(), "{}", text(&out));

    // This replica's stats: every request counted; the shadow compared and agreed (same model).
    let stats = wait_until(
        &format!("{base}/v2/models/fraud/stats?window=300s"),
        "shadow comparisons",
        |s| {
            s["versions"].as_array().is_some_and(|vs| {
                vs.iter().any(|v| {
                    v["role"] == "shadow" && v["shadow_compared"].as_u64().unwrap_or(0) >= 400
                })
            })
        },
    )
    .await;
    let (s1, s2, s3) = (
        version_of(&stats, v1),
        version_of(&stats, v2),
        version_of(&stats, v3),
    );
    assert_eq!(s1["role"], "stable");
    assert_eq!(s2["role"], "canary");
    assert_eq!(s3["role"], "shadow");
    assert!(s1["requests"].as_u64().unwrap() + s2["requests"].as_u64().unwrap() >= 551);
    assert_eq!(s3["requests"], 0, "a shadow never answers");
    assert_eq!(s3["shadow_agreement"], 1.0);
    assert!(
        (s1["reward_mean"].as_f64().unwrap() - 0.8).abs() < 1e-9,
        "{s1}"
    );
    assert_eq!(
        s1["accuracy"], 1.0,
        "the fixture predicts class 0 for this input"
    );
    assert_eq!(s2["reward_count"], 21);
    assert_eq!(s2["accuracy"], 0.0);

    // The registry's analysis sums the replica's reports (sent every 5 s).
    let analysis = wait_until(
        &format!("{base}/api/v1/endpoints/fraud/analysis?window=5m"),
        "reports",
        |a| {
            a["versions"].as_array().is_some_and(|vs| {
                vs.iter()
                    .any(|v| v["reward_count"].as_u64().unwrap_or(0) >= 21)
            })
        },
    )
    .await;
    assert_eq!(analysis["replicas"].as_array().unwrap().len(), 1);
    let a2 = version_of(&analysis, v2);
    assert!((a2["reward_mean"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    assert!(
        version_of(&analysis, v3)["shadow_compared"]
            .as_u64()
            .unwrap()
            > 0
    );
    let show = ferry(
        dir.path(),
        &["endpoint", "show", "fraud"],
        &[("FERRY_REGISTRY", base.as_str())],
    );
    assert!(show.status.success(), "{}", text(&show));
    assert!(text(&show).contains("canary"), "{}", text(&show));

    // The prediction log holds the answers (and, with --log-inputs, the requests).
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines: Vec<Value> = loop {
        let lines = log_lines(&log_dir, "predictions/fraud/");
        if lines.len() >= 551 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        lines.len() >= 551,
        "only {} predictions logged",
        lines.len()
    );
    let sample = &lines[0];
    assert!(
        sample["id"].is_string() && sample["response"]["outputs"].is_array(),
        "{sample}"
    );
    assert!(
        sample["request"]["inputs"].is_array(),
        "inputs are logged: {sample}"
    );
    let versions: BTreeSet<&str> = lines.iter().filter_map(|l| l["version"].as_str()).collect();
    assert!(
        versions.contains(v1.to_string().as_str()) && versions.contains(v2.to_string().as_str())
    );

    // Every accepted feedback is kept next to it, with what it joined: 41 given, none twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kept: Vec<Value> = loop {
        let kept = log_lines(&log_dir, "feedback/fraud/");
        if kept.len() >= 41 || Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(kept.len(), 41, "{kept:?}");
    let predicted: BTreeMap<&str, &str> = lines
        .iter()
        .filter_map(|l| Some((l["id"].as_str()?, l["version"].as_str()?)))
        .collect();
    let ids: BTreeSet<&str> = kept.iter().filter_map(|k| k["id"].as_str()).collect();
    assert_eq!(ids.len(), 41, "each feedback once");
    for k in &kept {
        let id = k["id"].as_str().unwrap();
        assert_eq!(
            predicted.get(id).copied(),
            Some(k["version"].to_string().as_str()),
            "the feedback names the version that answered: {k}"
        );
        assert!(
            k["reward"].is_number() && k["predicted_at"].is_string() && k["at"].is_string(),
            "{k}"
        );
        assert_eq!(
            k["route"],
            if k["version"] == v1 {
                "stable"
            } else {
                "canary"
            },
            "{k}"
        );
    }
    assert_eq!(kept.iter().filter(|k| k["label"].is_number()).count(), 40);

    // `ferry feedback export` joins them into a training set: inputs, prediction, label.
    let export = ferry(
        dir.path(),
        &[
            "feedback", "export", "fraud", "--log", &log_url, "--since", "1h",
        ],
        &[],
    );
    assert!(export.status.success(), "{}", text(&export));
    let examples: Vec<Value> = String::from_utf8(export.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(examples.len(), 41, "{}", text(&export));
    for e in &examples {
        assert_eq!(e["features"].as_object().unwrap().len(), 32, "{e}");
        assert!(e["features"]["input_00"].is_number(), "{e}");
        assert_eq!(
            Some(e["version"].to_string().as_str()),
            predicted.get(e["id"].as_str().unwrap()).copied()
        );
    }
    let labelled = examples.iter().filter(|e| e["label"].is_number()).count();
    assert_eq!(labelled, 40);
    assert!(examples.iter().all(|e| e["predicted"].is_number()));
    let csv = ferry(
        dir.path(),
        &[
            "feedback", "export", "fraud", "--log", &log_url, "-o", "csv",
        ],
        &[],
    );
    assert!(csv.status.success(), "{}", text(&csv));
    let csv = String::from_utf8(csv.stdout).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with(
            "id,row,version,route,predicted_at,feedback_at,reward,label,predicted,input_00,"
        ),
        "{header}"
    );
    assert_eq!(header.split(',').count(), 9 + 32);
    assert_eq!(csv.lines().count(), 1 + 41);
    let parquet = ferry(
        dir.path(),
        &[
            "feedback", "export", "fraud", "--log", &log_url, "-o", "parquet",
        ],
        &[],
    );
    assert!(parquet.status.success(), "{}", text(&parquet));
    let bytes = &parquet.stdout;
    assert!(
        bytes.len() > 1000 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
        "a Parquet file ({} bytes)",
        bytes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_cannot_load_keeps_the_last_good_table_and_says_why() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["up", "--no-demo"]);
    let base = server.url();
    let v1 = push(dir.path(), &base, "mlp.onnx");
    let bad = push(dir.path(), &base, "unloadable.onnx");
    endpoint_set(dir.path(), &base, &["--stable", &v1.to_string()]);
    let url = format!("{base}/v2/models/fraud/infer");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = infer(&client, &url, &[]).await;
        if a.status == 200 && a.version == v1.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint never routed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    endpoint_set(
        dir.path(),
        &base,
        &[
            "--stable",
            &v1.to_string(),
            "--canary",
            &bad.to_string(),
            "--weight",
            "0.5",
        ],
    );
    // The new table cannot be built: every request keeps going to version 1.
    let index = wait_until(
        &format!("{base}/v2/repository/index"),
        "the load error",
        |i| {
            i.as_array().is_some_and(|e| {
                e.iter()
                    .any(|x| x["name"] == "fraud" && !x["reason"].as_str().unwrap_or("").is_empty())
            })
        },
    )
    .await;
    let entry = index
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "fraud")
        .unwrap();
    assert!(
        entry["reason"].as_str().unwrap().contains("failed to load"),
        "{entry}"
    );
    for _ in 0..50 {
        let a = infer(&client, &url, &[]).await;
        assert_eq!(
            (a.status, a.version.as_str()),
            (200, v1.to_string().as_str())
        );
    }
    // The replica reports the error; the registry records it once as an event.
    let events = wait_until(
        &format!("{base}/api/v1/events?after=0&limit=1000"),
        "endpoint.degraded",
        |p| {
            p["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x["type"] == "endpoint.degraded"))
        },
    )
    .await;
    let degraded: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["type"] == "endpoint.degraded")
        .collect();
    assert_eq!(degraded.len(), 1, "one event per incident");
    assert!(
        degraded[0]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("failed to load")
    );
    let analysis: Value = reqwest::get(format!("{base}/api/v1/endpoints/fraud/analysis"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(analysis["load_error"].as_str().is_some(), "{analysis}");
    // Fixing the policy recovers.
    endpoint_set(dir.path(), &base, &["--stable", &v1.to_string()]);
    wait_until(&format!("{base}/v2/repository/index"), "recovery", |i| {
        i.as_array()
            .is_some_and(|e| e.iter().any(|x| x["name"] == "fraud" && x["reason"] == ""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serving_replicas_add_up_in_the_registrys_analysis() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, "mlp.onnx");
    let v2 = push(dir.path(), &reg, "mlp.onnx");
    endpoint_set(
        dir.path(),
        &reg,
        &[
            "--stable",
            &v1.to_string(),
            "--canary",
            &v2.to_string(),
            "--weight",
            "0.5",
        ],
    );
    let replicas: Vec<Server> = (0..2)
        .map(|i| {
            let cache = dir.path().join(format!("cache-{i}"));
            Server::start_with_env(
                dir.path(),
                &[
                    "serving",
                    "--registry",
                    &reg,
                    "--endpoint",
                    "fraud",
                    "--cache-dir",
                    cache.to_str().unwrap(),
                ],
                &[(
                    "FERRY_REPLICA_ID",
                    if i == 0 { "replica-a" } else { "replica-b" },
                )],
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let mut sent = 0u64;
    for replica in &replicas {
        let url = format!("{}/v2/models/fraud/infer", replica.url());
        for _ in 0..100 {
            assert_eq!(infer(&client, &url, &[]).await.status, 200);
            sent += 1;
        }
    }
    let analysis = wait_until(
        &format!("{reg}/api/v1/endpoints/fraud/analysis?window=5m"),
        "both replicas",
        |a| {
            let total: u64 = a["versions"].as_array().map_or(0, |vs| {
                vs.iter().map(|v| v["requests"].as_u64().unwrap_or(0)).sum()
            });
            a["replicas"].as_array().is_some_and(|r| r.len() == 2) && total == sent
        },
    )
    .await;
    let replicas_seen: BTreeSet<&str> = analysis["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        replicas_seen,
        ["replica-a", "replica-b"].into_iter().collect()
    );
    assert!(version_of(&analysis, v1)["requests"].as_u64().unwrap() > 0);
    assert!(version_of(&analysis, v2)["requests"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_is_ready_only_once_its_endpoints_stable_version_is_loaded() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let cache = dir.path().join("cache");
    let serving = Server::spawn(
        dir.path(),
        &[
            "serving",
            "--registry",
            &reg,
            "--endpoint",
            "fraud",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[],
    );
    let ready = format!("{}/v2/health/ready", serving.url());
    // Up, but the endpoint does not exist yet: not ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(&ready).await {
            assert_eq!(r.status(), 503, "ready before its endpoint exists");
            break;
        }
        assert!(Instant::now() < deadline, "serving never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v1 = push(dir.path(), &reg, "mlp.onnx");
    endpoint_set(dir.path(), &reg, &["--stable", &v1.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(&ready).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "serving never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::new();
    let a = infer(
        &client,
        &format!("{}/v2/models/fraud/infer", serving.url()),
        &[],
    )
    .await;
    assert_eq!((a.status, a.route.as_str()), (200, "stable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_sigterm_reports_its_last_counters_first() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, "mlp.onnx");
    endpoint_set(dir.path(), &reg, &["--stable", &v1.to_string()]);
    // Reports every 10 minutes: only the report sent at shutdown can carry these requests.
    let mut replica = Server::start(
        dir.path(),
        &[
            "serving",
            "--registry",
            &reg,
            "--endpoint",
            "fraud",
            "--report-interval",
            "10m",
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/fraud/infer", replica.url());
    for _ in 0..25 {
        assert_eq!(infer(&client, &url, &[]).await.status, 200);
    }
    let status = replica.terminate();
    assert!(status.success(), "{status}: {}", replica.logs());
    let analysis: Value = reqwest::get(format!("{reg}/api/v1/endpoints/fraud/analysis?window=5m"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        version_of(&analysis, v1)["requests"].as_u64(),
        Some(25),
        "{analysis}"
    );
}

/// A proxy in front of the registry that forwards everything and loses the registry's answer
/// to the first `lose` reports that carry counts: the report is stored, the replica hears 502.
#[derive(Clone)]
struct LosingProxy {
    upstream: String,
    client: reqwest::Client,
    lose: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn lose_report_answers(
    axum::extract::State(proxy): axum::extract::State<LosingProxy>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = proxy
        .client
        .request(parts.method.clone(), format!("{}{path}", proxy.upstream));
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            forward = forward.header(name, value);
        }
    }
    let Ok(answer) = forward.body(bytes.clone()).send().await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let is_report_with_counts = parts.method == axum::http::Method::POST
        && parts.uri.path().ends_with("/reports")
        && serde_json::from_slice::<Value>(&bytes)
            .is_ok_and(|r| r["versions"].as_object().is_some_and(|v| !v.is_empty()));
    if is_report_with_counts
        && answer.status().is_success()
        && proxy
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return (axum::http::StatusCode::BAD_GATEWAY, "the answer was lost").into_response();
    }
    let status = answer.status();
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != axum::http::header::TRANSFER_ENCODING
            && name != axum::http::header::CONTENT_LENGTH
            && name != axum::http::header::CONNECTION
        {
            headers.insert(name.clone(), value.clone());
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    (status, headers, body).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_answer_was_lost_is_sent_again_and_counted_once() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, "mlp.onnx");
    endpoint_set(dir.path(), &reg, &["--stable", &v1.to_string()]);

    let lose = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(3));
    let proxy = LosingProxy {
        upstream: reg.clone(),
        client: reqwest::Client::new(),
        lose: lose.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(lose_report_answers)
        .with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cache = dir.path().join("cache");
    let replica = Server::start(
        dir.path(),
        &[
            "serving",
            "--registry",
            &proxy_url,
            "--endpoint",
            "fraud",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--report-interval",
            "300ms",
        ],
    );
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/fraud/infer", replica.url());
    // Traffic spread over several reports, so that the lost ones carry counts.
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while lose.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        for _ in 0..10 {
            assert_eq!(infer(&client, &url, &[]).await.status, 200);
            sent += 1;
        }
        assert!(Instant::now() < deadline, "the proxy never lost 3 answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = |a: &Value| -> u64 {
        a["versions"].as_array().map_or(0, |vs| {
            vs.iter().map(|v| v["requests"].as_u64().unwrap_or(0)).sum()
        })
    };
    let analysis_url = format!("{reg}/api/v1/endpoints/fraud/analysis?window=5m");
    wait_until(&analysis_url, "every request counted", |a| {
        requests(a) >= sent
    })
    .await;
    // More reports go by: a report sent again must never be counted a second time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let analysis = wait_until(&analysis_url, "the analysis", |_| true).await;
    assert_eq!(requests(&analysis), sent, "{analysis}");
}
