//! Drift end to end with the real binary: a version pushed with its training profile, an
//! endpoint with a drift policy, traffic from the training distribution (no incident), then
//! traffic with one feature shifted: exactly one `drift.detected`, delivered to a webhook with a
//! signature the receiver can verify and naming the shifted feature; back to normal traffic:
//! `drift.recovered`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::*;

const SECRET: &str = "s3cret-for-the-test";

/// What the receiver got: headers and body of every POST.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn start_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/retrain",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/retrain", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// The receiver's side of the contract, written independently of the registry's code:
/// `X-Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
fn signature_is_valid(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = headers
        .get("x-ferry-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok() && (now - t).abs() <= 300
}

fn events_of(received: &Received, kind: &str) -> Vec<(HeaderMap, Value)> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(h, b)| (h.clone(), serde_json::from_slice::<Value>(b).unwrap()))
        .filter(|(_, e)| e["type"] == kind)
        .collect()
}

fn run_ok(dir: &Path, args: &[&str], registry: &str) -> String {
    let out = ferry(dir, args, &[("FERRY_REGISTRY", registry)]);
    assert!(out.status.success(), "ferry {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Sends `rows` single-row requests with the README's script (feature f0 shifted by `shift`).
fn send(url: &str, rows: u32, shift: f64) {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/drift_demo.py"))
        .args([
            "send",
            url,
            &rows.to_string(),
            "--shift",
            &shift.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{rows} answered")),
        "{}",
        text(&out)
    );
}

/// The stable version's drift analysis over the last minute.
async fn drift_analysis(client: &reqwest::Client, base: &str) -> Value {
    let analysis: Value = client
        .get(format!("{base}/api/v1/endpoints/fraud/analysis?window=60s"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    analysis["versions"][0]["drift"].clone()
}

/// Waits until the registry has the reports of at least `samples` live rows in the window.
async fn wait_for_samples(client: &reqwest::Client, base: &str, samples: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let drift = drift_analysis(client, base).await;
        if drift["samples"].as_u64().unwrap_or(0) >= samples {
            return drift;
        }
        assert!(
            Instant::now() < deadline,
            "the reports never carried {samples} samples: {drift}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_delivery(received: &Received, kind: &str) -> (HeaderMap, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(first) = events_of(received, kind).into_iter().next() {
            return first;
        }
        assert!(Instant::now() < deadline, "no {kind} delivery arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_inputs_raise_one_signed_drift_incident_naming_the_feature_and_then_recover() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.csv");
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/drift_demo.py"))
        .args(["train", "3000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&train, &out.stdout).unwrap();

    let server = Server::start(dir.path(), &["up", "--no-demo", "--drift-interval", "1s"]);
    let base = server.url();
    let infer = format!("{base}/v2/models/fraud/infer");
    let client = reqwest::Client::new();
    let (hook, received) = start_receiver().await;

    run_ok(
        dir.path(),
        &[
            "model",
            "push",
            fixture("mlp.onnx").to_str().unwrap(),
            "--name",
            "fraud",
            "--profile-data",
            train.to_str().unwrap(),
        ],
        &base,
    );
    run_ok(
        dir.path(),
        &[
            "webhook", "create", &hook, "--event", "drift.*", "--secret", SECRET,
        ],
        &base,
    );
    run_ok(
        dir.path(),
        &[
            "endpoint",
            "set",
            "fraud",
            "--model",
            "fraud",
            "--stable",
            "1",
            "--drift",
            "psi:0.2",
            "--drift-min-samples",
            "200",
        ],
        &base,
    );

    // Live inputs from the training distribution: scored, and nowhere near the threshold.
    send(&infer, 500, 0.0);
    let drift = wait_for_samples(&client, &base, 500).await;
    let psi = drift["scores"]["psi"].as_f64().unwrap();
    assert!(psi < 0.1, "unshifted traffic scored PSI {psi}: {drift}");
    // Several monitor passes over those reports raise nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        received.lock().unwrap().is_empty(),
        "unshifted traffic raised an incident"
    );

    // f0 shifted by three standard deviations: one incident, naming f0, signed.
    send(&infer, 500, 3.0);
    let (headers, event) = wait_for_delivery(&received, "drift.detected").await;
    let body = received
        .lock()
        .unwrap()
        .iter()
        .find(|(h, _)| h.get("x-ferry-delivery") == headers.get("x-ferry-delivery"))
        .map(|(_, b)| b.clone())
        .unwrap();
    assert!(
        signature_is_valid(&headers, &body),
        "the signature does not verify: {headers:?}"
    );
    assert!(headers.get("x-ferry-delivery").is_some());
    let data = &event["data"];
    assert_eq!(data["endpoint"], "fraud", "{event}");
    assert_eq!(data["version"], 1, "{event}");
    assert_eq!(data["metric"], "psi", "{event}");
    assert!(data["score"].as_f64().unwrap() > 0.2, "{event}");
    assert_eq!(data["features"][0]["name"], "f0", "{event}");
    // A forged body does not verify with the same header.
    let mut forged = body.to_vec();
    forged.extend_from_slice(b" ");
    assert!(!signature_is_valid(&headers, &forged));

    // The same incident is on the event log, where `ferry events --type` finds it.
    let log = run_ok(
        dir.path(),
        &["events", "--type", "drift.*", "--count", "1", "-o", "json"],
        &base,
    );
    let logged: Value = serde_json::from_str(log.trim()).unwrap();
    assert_eq!(logged["type"], "drift.detected", "{log}");
    assert_eq!(logged["id"], event["id"], "{log}");

    // More drifted traffic while the incident is open raises no second one.
    let before = drift_analysis(&client, &base).await["samples"]
        .as_u64()
        .unwrap();
    send(&infer, 500, 3.0);
    wait_for_samples(&client, &base, before + 500).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events_of(&received, "drift.detected").len(), 1);

    // Back to the training distribution: the incident closes.
    send(&infer, 500, 0.0);
    let (headers, recovered) = wait_for_delivery(&received, "drift.recovered").await;
    assert_eq!(recovered["data"]["endpoint"], "fraud", "{recovered}");
    assert_eq!(
        recovered["data"]["detected_event"], event["id"],
        "{recovered}"
    );
    assert!(headers.get("x-ferry-signature").is_some());
    assert_eq!(events_of(&received, "drift.detected").len(), 1);
}
