//! Perishable models and performance decay end to end with the real binary: `ferry up` (serving
//! and registry in one process, the monitors every second), `ferry endpoint set --max-age
//! --decay reward:…`, real predictions and business feedback with rewards posted to serving,
//! and the CLI showing the incidents; `off` removes a policy and closes its incident. The
//! accuracy variant with labels is the README walk-through's (`tests/readme.rs`); the exact
//! windows and references are `registry/tests/lifecycle.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::*;

fn run_ok(dir: &Path, args: &[&str], registry: &str) -> String {
    let out = ferry(dir, args, &[("FERRY_REGISTRY", registry)]);
    assert!(out.status.success(), "ferry {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Waits (at most a minute) for the next event of `kind` after `after`, with the CLI.
fn next_event(dir: &Path, registry: &str, kind: &str, after: i64) -> Value {
    let out = ferry(
        dir,
        &[
            "events",
            "--follow",
            "--after",
            &after.to_string(),
            "--type",
            kind,
            "--count",
            "1",
            "-o",
            "json",
        ],
        &[("FERRY_REGISTRY", registry)],
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn conditions(dir: &Path, registry: &str) -> Vec<Value> {
    let shown: Value = serde_json::from_str(&run_ok(
        dir,
        &["endpoint", "show", "fraud", "--no-analysis", "-o", "json"],
        registry,
    ))
    .unwrap();
    shown["endpoint"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `n` predictions answered by the endpoint, each given `reward` as business feedback.
async fn predict_and_reward(client: &reqwest::Client, base: &str, n: usize, reward: f64) {
    let request: Value =
        serde_json::from_slice(&std::fs::read(fixture("mlp-request.json")).unwrap()).unwrap();
    for i in 0..n {
        let id = format!("p-{reward}-{i}");
        let mut body = request.clone();
        body["id"] = json!(id);
        let answer = client
            .post(format!("{base}/v2/models/fraud/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let fed = client
            .post(format!("{base}/v2/models/fraud/feedback"))
            .json(&json!({"id": id, "reward": reward}))
            .send()
            .await
            .unwrap();
        assert!(fed.status().is_success(), "{}", fed.text().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_model_and_falling_rewards_are_raised_once_and_off_closes_them() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &["up", "--no-demo"],
        &[
            ("FERRY_DRIFT_INTERVAL", "1s"),
            ("FERRY_REPORT_INTERVAL", "200ms"),
        ],
    );
    let registry = server.url();
    let d = dir.path();
    let mlp = fixture("mlp.onnx");
    run_ok(
        d,
        &["model", "push", mlp.to_str().unwrap(), "--name", "fraud"],
        &registry,
    );
    // Bad specs are refused naming the flag, before anything is sent.
    for (flag, value, says) in [
        ("--decay", "precision:0.1", "unknown metric `precision`"),
        ("--decay", "reward", "is not METRIC:MAX_DROP"),
        ("--max-age", "soon", "--max-age `soon`"),
    ] {
        let out = ferry(
            d,
            &[
                "endpoint", "set", "fraud", "--model", "fraud", "--stable", "1", flag, value,
            ],
            &[("FERRY_REGISTRY", &registry)],
        );
        assert!(!out.status.success());
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    run_ok(
        d,
        &[
            "endpoint",
            "set",
            "fraud",
            "--model",
            "fraud",
            "--stable",
            "1",
            "--max-age",
            "2s",
            "--decay",
            "reward:0.5",
            "--decay-window",
            "20",
        ],
        &registry,
    );

    // Perishable: two seconds after its creation, one model.stale.
    let stale = next_event(d, &registry, "model.stale", 0);
    assert_eq!(stale["data"]["version"], 1);
    assert_eq!(stale["data"]["max_age_seconds"], 2);
    assert_eq!(stale["data"]["age_from"], "created");

    // Decay: 20 predictions rewarded 1.0 are the reference; 20 rewarded 0.0 are a drop of 1.
    let client = reqwest::Client::new();
    predict_and_reward(&client, &registry, 20, 1.0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = conditions(d, &registry);
        let quality = c
            .iter()
            .find(|c| c["type"] == "PerformanceDegraded")
            .unwrap();
        if quality["status"] == "False" {
            assert!(
                quality["message"]
                    .as_str()
                    .unwrap()
                    .contains("reference of 1.000 (first_window)"),
                "{quality}"
            );
            break;
        }
        assert_eq!(quality["status"], "Unknown", "{quality}");
        assert!(
            std::time::Instant::now() < deadline,
            "never judged: {quality}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    predict_and_reward(&client, &registry, 20, 0.0).await;
    let degraded = next_event(d, &registry, "performance.degraded", 0);
    assert_eq!(degraded["data"]["metric"], "reward");
    assert_eq!(degraded["data"]["reference"], 1.0);
    assert_eq!(degraded["data"]["reference_source"], "first_window");
    assert!(
        degraded["data"]["value"].as_f64().unwrap() < 0.5,
        "{degraded}"
    );

    // The CLI says it.
    let shown = run_ok(
        d,
        &["endpoint", "show", "fraud", "--no-analysis"],
        &registry,
    );
    assert!(shown.contains("max age:   2s"), "{shown}");
    assert!(
        shown.contains("decay:     reward drop > 0.5 over the newest 20 rewards"),
        "{shown}"
    );
    assert!(shown.contains("age:       STALE: version 1 is"), "{shown}");
    assert!(shown.contains("quality:   DEGRADED: reward"), "{shown}");

    // `set` without the flags keeps both policies (and their incidents: no event).
    run_ok(
        d,
        &[
            "endpoint", "set", "fraud", "--model", "fraud", "--stable", "1",
        ],
        &registry,
    );
    let kept: Vec<String> = conditions(d, &registry)
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kept, ["Stale True", "PerformanceDegraded True"]);

    // `off` removes them, and their incidents close.
    run_ok(
        d,
        &[
            "endpoint",
            "set",
            "fraud",
            "--model",
            "fraud",
            "--stable",
            "1",
            "--max-age",
            "off",
            "--decay",
            "off",
        ],
        &registry,
    );
    let refreshed = next_event(d, &registry, "model.refreshed", 0);
    assert_eq!(refreshed["data"]["reason"], "policy");
    assert_eq!(refreshed["data"]["stale_event"], stale["id"]);
    let recovered = next_event(d, &registry, "performance.recovered", 0);
    assert_eq!(recovered["data"]["reason"], "policy");
    assert_eq!(recovered["data"]["degraded_event"], degraded["id"]);
    assert!(conditions(d, &registry).is_empty());
}
