//! Online features end to end with the real binary and a real Redis (a `redis-server` of its own,
//! so that it can be stopped): register a view, `ferry features materialize` a CSV into Redis
//! (recorded as a `feature_view.materialized` event), push a model trained with the view, and ask
//! `ferry up` for predictions by entity key. The answer is the one the same features sent as a
//! tensor get; an entity without a row is refused naming it; a feature another writer puts
//! online in another unit raises one `skew.detected` naming it; with Redis stopped the answer is
//! a prompt 503 with `Retry-After`, and predictions come back when Redis does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// A `redis-server` on `port` keeping nothing on disk; killed when dropped.
struct Redis(Child);

impl Redis {
    fn start(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            assert!(
                !ferry_api::testing::in_ci(),
                "redis-server is required when CI=true"
            );
            ferry_api::testing::skipped("no redis-server on PATH");
            return None;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Redis(child))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const FEATURES: usize = 32;

/// Customers c0…c19; customer c3's features are the fixture request's, the others are shifted.
fn write_csv(path: &Path, request: &Value) {
    let base: Vec<f64> = request["inputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut text = String::from("segment,customer_id");
    for f in 0..FEATURES {
        text.push_str(&format!(",f{f}"));
    }
    text.push('\n');
    for c in 0..20 {
        text.push_str(&format!("retail,c{c}"));
        for v in &base {
            let shift = if c == 3 { 0.0 } else { f64::from(c) / 10.0 };
            text.push_str(&format!(",{}", v + shift));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn run_ok(dir: &Path, args: &[&str], registry: &str) -> String {
    let out = ferry(dir, args, &[("FERRY_REGISTRY", registry)]);
    assert!(out.status.success(), "ferry {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

async fn infer(client: &reqwest::Client, base: &str, body: &Value) -> (u16, Value, Option<String>) {
    let answer = client
        .post(format!("{base}/v2/models/churn/infer"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let retry = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, answer.json().await.unwrap(), retry)
}

fn by_entity(ids: &[&str]) -> Value {
    json!({"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [ids.len()], "data": ids}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_by_entity_read_the_materialized_features_and_fail_fast_without_redis() {
    if !have_onnxruntime() {
        return;
    }
    let redis_port = free_port();
    let Some(redis) = Redis::start(redis_port) else {
        return;
    };
    let store = format!("redis://127.0.0.1:{redis_port}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start_with_env(d, &["up", "--no-demo", "--feature-store", &store], &[]);
    let registry = server.url();
    let request: Value =
        serde_json::from_slice(&std::fs::read(fixture("mlp-request.json")).unwrap()).unwrap();
    let csv = d.join("customers.csv");
    write_csv(&csv, &request);

    let mut register = vec![
        "features".to_string(),
        "register".into(),
        "customers".into(),
        "--entity".into(),
        "customer_id".into(),
        "--source".into(),
        csv.to_str().unwrap().into(),
    ];
    for f in 0..FEATURES {
        register.push("--feature".into());
        register.push(format!("f{f}:FP32"));
    }
    let register: Vec<&str> = register.iter().map(String::as_str).collect();
    run_ok(d, &register, &registry);

    // --entity is checked against the view; a store that is not Redis is a usage error.
    let out = ferry(
        d,
        &[
            "features",
            "materialize",
            "customers",
            csv.to_str().unwrap(),
            "--entity",
            "user_id",
            "--store",
            &store,
        ],
        &[("FERRY_REGISTRY", &registry)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is keyed by `customer_id`"),
        "{}",
        text(&out)
    );

    let said = run_ok(
        d,
        &[
            "features",
            "materialize",
            "customers",
            csv.to_str().unwrap(),
            "--store",
            &store,
        ],
        &registry,
    );
    assert!(
        said.starts_with("materialized customers:1: 20 rows ("),
        "{said}"
    );
    assert!(
        said.contains(&format!("into redis://127.0.0.1:{redis_port}")),
        "{said}"
    );
    let events = run_ok(
        d,
        &[
            "events",
            "--type",
            "feature_view.materialized",
            "-o",
            "json",
        ],
        &registry,
    );
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "feature_view.materialized");
    assert_eq!(event["subject"], "customers");
    assert_eq!(event["data"]["version"], 1);
    assert_eq!(event["data"]["rows"], 20);
    let shown: Value = serde_json::from_str(&run_ok(
        d,
        &["features", "show", "customers", "-o", "json"],
        &registry,
    ))
    .unwrap();
    // The source hashed at registration is the file materialized.
    assert_eq!(event["data"]["source_sha256"], shown["source"]["sha256"]);

    push_model(
        d,
        &registry,
        "churn",
        &fixture("mlp.onnx"),
        &["--feature-view", "customers"],
        &[],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Wait for serving to load the version.
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let (status, body, _) = infer(&client, &registry, &by_entity(&["c3", "c7"])).await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // c3's features are the fixture's: the same answer as sending them as a tensor, which the
    // version still takes.
    let (status, direct, _) = infer(&client, &registry, &request).await;
    assert_eq!(status, 200, "{direct}");
    let rows = |v: &Value| -> Vec<f64> {
        v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let width = direct["outputs"][0]["shape"][1].as_u64().unwrap() as usize;
    assert_eq!(answer["outputs"][0]["shape"][0], 2);
    let (by_key, sent) = (rows(&answer), rows(&direct));
    for (a, b) in by_key[..width].iter().zip(&sent) {
        assert!((a - b).abs() < 1e-5, "{by_key:?} vs {sent:?}");
    }
    // c7 has other features, so another answer.
    assert_ne!(by_key[..width], by_key[width..]);

    // An entity without a row is refused, naming it.
    let (status, body, _) = infer(&client, &registry, &by_entity(&["c1", "nobody"])).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("no features for customer_id `nobody`"),
        "{error}"
    );
    assert!(!error.contains("`c1`"), "{error}");

    // Skew: another writer puts income-like feature f5 online in another unit (×1000) for
    // every customer. The rows serving reads for sampled entities reach the registry, which
    // compares them with the materialization's offline values: one skew.detected naming f5.
    {
        let client = redis::Client::open(store.as_str()).unwrap();
        let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
        let dtypes = vec![ferry_api::features::FeatureDtype::Fp32; FEATURES];
        for c in 0..20 {
            let key = ferry_features::row_key("customers", 1, &format!("c{c}"));
            let bytes: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let mut values = ferry_features::decode(&dtypes, &bytes).unwrap();
            if let Some(ferry_features::Value::Float(v)) = values[5] {
                values[5] = Some(ferry_features::Value::Float(v * 1000.0));
            }
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(ferry_features::encode(&dtypes, &values))
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    let everyone: Vec<String> = (0..20).map(|c| format!("c{c}")).collect();
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let detected = loop {
        let (status, body, _) = infer(&client, &registry, &by_entity(&everyone)).await;
        assert_eq!(status, 200, "{body}");
        let out = run_ok(d, &["events", "--type", "skew.*", "-o", "json"], &registry);
        if let Some(line) = out.lines().next() {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(Instant::now() < deadline, "no skew.detected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detected["type"], "skew.detected", "{detected}");
    let skewed = detected["data"]["features"].as_array().unwrap();
    assert_eq!(skewed.len(), 1, "{detected}");
    assert_eq!(skewed[0]["feature"], "f5");
    let (offline, served) = (
        skewed[0]["offline"].as_f64().unwrap(),
        skewed[0]["served"].as_f64().unwrap(),
    );
    assert!((served / offline - 1000.0).abs() < 1.0, "{detected}");
    // Once per incident: more skewed windows raise nothing new.
    for _ in 0..10 {
        infer(&client, &registry, &by_entity(&everyone)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = run_ok(d, &["events", "--type", "skew.*", "-o", "json"], &registry);
    assert_eq!(out.lines().count(), 1, "{out}");

    // The lookups are counted by outcome.
    let metrics = client
        .get(format!("{registry}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "ferry_serving_feature_lookups_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("ok") >= 12, "{metrics}");
    assert_eq!(count("missing"), 1, "{metrics}");
    assert!(
        metrics.contains("ferry_serving_feature_lookup_duration_seconds_count"),
        "{metrics}"
    );

    // Redis stops: a prompt 503 with Retry-After, never a wait for the request timeout; after a
    // few failures the breaker answers without asking.
    drop(redis);
    for _ in 0..6 {
        let started = Instant::now();
        let (status, body, retry) = infer(&client, &registry, &by_entity(&["c3"])).await;
        assert_eq!(status, 503, "{body}");
        assert!(retry.is_some(), "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("online feature store"),
            "{body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
    let (_, body, _) = infer(&client, &registry, &by_entity(&["c3"])).await;
    assert!(body["error"].as_str().unwrap().contains("paused"), "{body}");
    // Requests that send the features do not need Redis.
    let (status, _, _) = infer(&client, &registry, &request).await;
    assert_eq!(status, 200);

    // Redis is back (empty: it keeps nothing), the rows are materialized again, and once the
    // breaker lets lookups through the answers come back.
    let _redis = Redis::start(redis_port).unwrap();
    run_ok(
        d,
        &[
            "features",
            "materialize",
            "customers",
            csv.to_str().unwrap(),
            "--store",
            &store,
        ],
        &registry,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = infer(&client, &registry, &by_entity(&["c3"])).await;
        if status == 200 {
            assert_eq!(rows(&body)[..width].len(), width);
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
