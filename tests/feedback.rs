//! Business feedback with several serving replicas sharing the Redis prediction index (the
//! machine's real Redis, `FERRY_TEST_REDIS` or redis://127.0.0.1:6379): feedback joins at any
//! replica and at the registry, counts once, and the analysis is exact; with Redis down,
//! predictions are still answered and feedback is a 503 with Retry-After; feedback needs the
//! `feedback` role; ids are capped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn redis_url() -> String {
    std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether the test Redis listens; outside CI a missing one skips the test, in CI it fails it.
fn have_redis() -> bool {
    let addr = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let up = std::net::TcpStream::connect(&addr).is_ok();
    assert!(up || !in_ci(), "Redis is not reachable at {addr} (CI=true)");
    if !up {
        skipped(&format!("no Redis at {addr} (make test starts one)"));
    }
    up
}

fn request_inputs() -> Value {
    let body: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("mlp-request.json")).unwrap())
            .unwrap();
    body["inputs"].clone()
}

fn serving_replica(dir: &std::path::Path, registry: &str, name: &str, extra: &[&str]) -> Server {
    let cache = dir.join(format!("cache-{name}"));
    let mut args = vec![
        "serving",
        "--registry",
        registry,
        "--endpoint",
        "fraud",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--report-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    Server::start_with_env(dir, &args, &[("FERRY_REPLICA_ID", name)])
}

/// One prediction's answer: its id, version and predicted class.
struct Predicted {
    id: String,
    version: i64,
    class: i64,
    replica: usize,
}

async fn predict(client: &reqwest::Client, base: &str, replica: usize) -> Predicted {
    let response = client
        .post(format!("{base}/v2/models/fraud/infer"))
        .json(&json!({"inputs": request_inputs()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    let scores: Vec<f64> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let class = i64::from(scores[1] > scores[0]);
    Predicted {
        id,
        version: body["model_version"].as_str().unwrap().parse().unwrap(),
        class,
        replica,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_joins_at_any_of_three_replicas_and_the_analysis_is_exact() {
    if !have_onnxruntime() || !have_redis() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_url();
    let registry = Server::start(
        dir.path(),
        &[
            "up",
            "--no-demo",
            "--no-serving",
            "--feedback-store",
            &redis,
        ],
    );
    let reg = registry.url();
    let v1 = push_model(dir.path(), &reg, "fraud", &fixture("mlp.onnx"), &[], &[]);
    let v2 = push_model(dir.path(), &reg, "fraud", &fixture("mlp.onnx"), &[], &[]);
    set_endpoint(
        dir.path(),
        &reg,
        "fraud",
        "fraud",
        &[
            "--stable",
            &v1.to_string(),
            "--canary",
            &v2.to_string(),
            "--weight",
            "0.5",
        ],
    );
    let replicas: Vec<Server> = ["replica-a", "replica-b", "replica-c"]
        .iter()
        .map(|name| serving_replica(dir.path(), &reg, name, &["--feedback-store", &redis]))
        .collect();
    let bases: Vec<String> = replicas.iter().map(Server::url).collect();
    let client = reqwest::Client::new();

    // 10,000 predictions, round robin over the replicas, 8 at a time.
    let n = 10_000;
    let mut predicted = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 8).min(n))
            .map(|i| {
                let (client, base) = (client.clone(), bases[i % 3].clone());
                tokio::spawn(async move { predict(&client, &base, i % 3).await })
            })
            .collect();
        for task in batch {
            predicted.push(task.await.unwrap());
        }
        next += 8;
    }

    // Feedback for every prediction at the *next* replica (never the one that answered); every
    // tenth goes to the registry instead. Reward i % 5, and a label that is right for i % 3 == 0.
    let mut expected: BTreeMap<i64, (u64, f64, u64, u64)> = BTreeMap::new();
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 8).min(n))
            .map(|i| {
                let p = &predicted[i];
                let reward = (i % 5) as f64;
                let label = if i % 3 == 0 { p.class } else { 1 - p.class };
                let e = expected.entry(p.version).or_default();
                e.0 += 1;
                e.1 += reward;
                e.2 += 1;
                e.3 += u64::from(i % 3 == 0);
                let url = if i % 10 == 0 {
                    format!("{reg}/api/v1/endpoints/fraud/feedback")
                } else {
                    format!("{}/v2/models/fraud/feedback", bases[(p.replica + 1) % 3])
                };
                let body = json!({"id": p.id, "reward": reward, "label": label});
                let client = client.clone();
                tokio::spawn(async move {
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap())
                })
            })
            .collect();
        for task in batch {
            let (status, text) = task.await.unwrap();
            assert_eq!(status, 200, "{text}");
        }
        next += 8;
    }

    // A second feedback for an id is a 409 at every replica and at the registry.
    let again = json!({"id": predicted[1].id, "reward": 1.0});
    for base in &bases {
        let r = client
            .post(format!("{base}/v2/models/fraud/feedback"))
            .json(&again)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
    }
    let r = client
        .post(format!("{reg}/api/v1/endpoints/fraud/feedback"))
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // `ferry endpoint show` sums every replica's reports: exact counts, rewards and accuracy.
    let deadline = Instant::now() + Duration::from_secs(60);
    let analysis = loop {
        let out = ferry(
            dir.path(),
            &[
                "endpoint",
                "show",
                "fraud",
                "--registry",
                &reg,
                "-o",
                "json",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out));
        let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
        let analysis = shown["analysis"].clone();
        let rewards: u64 = analysis["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["reward_count"].as_u64().unwrap_or(0))
            .sum();
        if rewards == n as u64 {
            break analysis;
        }
        assert!(
            Instant::now() < deadline,
            "the analysis never counted {n} rewards: {analysis}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(expected.len(), 2, "both versions answered");
    for (version, (rewards, reward_sum, labels, correct)) in &expected {
        let v = analysis["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == *version)
            .unwrap();
        assert_eq!(v["reward_count"].as_u64().unwrap(), *rewards, "{v}");
        let mean = v["reward_mean"].as_f64().unwrap();
        assert!((mean - reward_sum / *rewards as f64).abs() < 1e-9, "{v}");
        assert_eq!(v["label_count"].as_u64().unwrap(), *labels, "{v}");
        let accuracy = v["accuracy"].as_f64().unwrap();
        assert!(
            (accuracy - *correct as f64 / *labels as f64).abs() < 1e-9,
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_predictions_are_answered_and_feedback_is_503_with_retry_after() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    let v1 = push_model(dir.path(), &reg, "fraud", &fixture("mlp.onnx"), &[], &[]);
    set_endpoint(
        dir.path(),
        &reg,
        "fraud",
        "fraud",
        &["--stable", &v1.to_string()],
    );
    // Nothing listens on port 1.
    let replica = serving_replica(
        dir.path(),
        &reg,
        "replica-a",
        &["--feedback-store", "redis://127.0.0.1:1"],
    );
    let base = replica.url();
    let client = reqwest::Client::new();
    let p = predict(&client, &base, 0).await;
    let r = client
        .post(format!("{base}/v2/models/fraud/feedback"))
        .json(&json!({"id": p.id, "reward": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let text = r.text().await.unwrap();
    assert!(text.contains("feedback cannot be joined now"), "{text}");

    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a feedback store down leaves serving ready"
    );
    let details: Value = ready.json().await.unwrap();
    assert_eq!(details["feedback_store"]["store"], "redis");
    assert_eq!(details["feedback_store"]["up"], false);
    assert!(details["feedback_store"]["error"].is_string(), "{details}");
    // The writer's failed attempt is counted once it has happened (it runs beside the request).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let down = metrics.contains("ferry_feedback_store_up{store=\"redis\"} 0");
        let dropped =
            metrics.contains("ferry_feedback_predictions_dropped_total{store=\"redis\"} 1");
        if down && dropped {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `ferry up` (the registry's /readyz) says so too, and stays ready.
    let up_dir = tempfile::tempdir().unwrap();
    let up = Server::start(
        up_dir.path(),
        &["up", "--feedback-store", "redis://127.0.0.1:1"],
    );
    let base = up.url();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A prediction of the demo model makes the writer try Redis.
        let _ = client
            .post(format!("{base}/v2/models/demo/infer"))
            .json(&json!({"inputs": request_inputs()}))
            .send()
            .await;
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        let status = ready.status();
        let details: Value = ready.json().await.unwrap();
        if details["feedback_store"]["up"] == false {
            assert_eq!(status, 200, "{details}");
            assert_eq!(details["feedback_store"]["store"], "redis", "{details}");
            assert!(details["feedback_store"]["error"].is_string(), "{details}");
            break;
        }
        assert!(Instant::now() < deadline, "{details}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_needs_the_feedback_role_and_ids_are_capped() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = [
        ("read", "read-token-0123456789"),
        ("feedback", "feedback-token-012345"),
        ("admin", "admin-token-012345678"),
    ];
    let specs: Vec<String> = tokens.iter().map(|(r, s)| format!("{r}:{s}")).collect();
    let server = Server::start_with_env(
        dir.path(),
        &["up", "--no-demo"],
        &[("FERRY_TOKENS", &specs.join(","))],
    );
    let base = server.url();
    let admin = tokens[2].1;
    let v1 = push_model(
        dir.path(),
        &base,
        "fraud",
        &fixture("mlp.onnx"),
        &[],
        &[("FERRY_TOKEN", admin)],
    );
    set_endpoint_with_token(dir.path(), &base, admin, v1);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let infer = |id: String, token: &'static str| {
        client
            .post(format!("{base}/v2/models/fraud/infer"))
            .bearer_auth(token)
            .json(&json!({"id": id, "inputs": request_inputs()}))
            .send()
    };
    loop {
        let r = infer("warm".into(), tokens[0].1).await.unwrap();
        if r.status() == 200 && r.headers().contains_key("x-ferry-route") {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..2 {
        assert_eq!(
            infer(format!("p-{i}"), tokens[0].1).await.unwrap().status(),
            200
        );
    }
    let feedback = |url: String, token: &'static str, id: &str| {
        client
            .post(url)
            .bearer_auth(token)
            .json(&json!({"id": id, "reward": 1.0}))
            .send()
    };
    let serving_url = format!("{base}/v2/models/fraud/feedback");
    let registry_url = format!("{base}/api/v1/endpoints/fraud/feedback");
    // An inference-only token may predict, not steer the rollout.
    let r = feedback(serving_url.clone(), tokens[0].1, "p-0")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("`feedback` role"));
    let r = feedback(registry_url.clone(), tokens[0].1, "p-0")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The feedback role may, at serving and at the registry (one shared index in `ferry up`).
    let r = feedback(serving_url.clone(), tokens[1].1, "p-0")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = feedback(registry_url.clone(), tokens[1].1, "p-1")
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = feedback(registry_url, tokens[1].1, "p-0").await.unwrap();
    assert_eq!(r.status(), 409);

    // Ids are capped: in the request, in x-request-id, and in feedback.
    let long = "x".repeat(257);
    let r = infer(long.clone(), tokens[0].1).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("ids are at most 256 bytes")
    );
    let r = client
        .post(format!("{base}/v2/models/fraud/infer"))
        .bearer_auth(tokens[0].1)
        .header("x-request-id", &long)
        .json(&json!({"inputs": request_inputs()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("x-request-id is 257 bytes long")
    );
    let r = feedback(serving_url, tokens[1].1, &long).await.unwrap();
    assert_eq!(r.status(), 400);
}

fn set_endpoint_with_token(dir: &std::path::Path, base: &str, token: &str, v1: i64) {
    let out = ferry(
        dir,
        &[
            "endpoint",
            "set",
            "fraud",
            "--model",
            "fraud",
            "--stable",
            &v1.to_string(),
            "--registry",
            base,
        ],
        &[("FERRY_TOKEN", token)],
    );
    assert!(out.status.success(), "{}", text(&out));
}
