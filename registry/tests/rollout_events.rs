//! Rollout steps reported by the operator (`POST /api/v1/endpoints/{name}/rollout-events`),
//! on SQLite and on PostgreSQL: recorded as `rollout.step` events through the outbox, in order
//! with the policy changes, validated, and only on endpoints that exist.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use ferry_api::client::RegistryClient;
use ferry_api::http::auth::Tokens;
use ferry_api::records::{Event, RolloutStep};
use ferry_registry::Config;
use serde_json::{Value, json};

on_every_backend!(
    a_rollout_step_becomes_the_next_event_with_the_endpoints_model_and_revision,
    invalid_steps_and_unknown_endpoints_are_refused_and_emit_nothing,
    the_client_posts_rollout_steps,
);

async fn seed_endpoint(app: &TestApp) {
    for _ in 0..2 {
        let (status, v) = app.upload("fraud", MLP, None, None).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let (status, body) = app
        .json_request(
            "PUT",
            "/api/v1/endpoints/web",
            json!({"model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.01}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn step_body() -> Value {
    json!({
        "reason": "RolloutStarted",
        "message": "rolling out v2 over v1: step 1/4 at 1%",
        "phase": "Progressing",
        "stable": 1,
        "candidate": 2,
        "step": 1,
        "weight": 1.0,
        "source": "ModelDeployment default/web",
    })
}

async fn events_after(app: &TestApp, after: i64) -> Vec<Event> {
    app.state.store.events_after(after, 10_000).await.unwrap()
}

async fn a_rollout_step_becomes_the_next_event_with_the_endpoints_model_and_revision(
    app: &TestApp,
) {
    seed_endpoint(app).await;
    let before = events_after(app, 0).await;
    let last = before.last().unwrap();
    assert_eq!(last.kind, "endpoint.updated");

    let (status, event) = app
        .json_request("POST", "/api/v1/endpoints/web/rollout-events", step_body())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    assert_eq!(
        event["id"],
        last.id + 1,
        "gapless, right after the policy write"
    );
    assert_eq!(event["type"], "rollout.step");
    assert_eq!(event["subject"], "web");
    let data = &event["data"];
    assert_eq!(data["endpoint"], "web");
    assert_eq!(data["model"], "fraud");
    assert_eq!(data["revision"], 1);
    assert_eq!(data["reason"], "RolloutStarted");
    assert_eq!(data["phase"], "Progressing");
    assert_eq!(data["stable"], 1);
    assert_eq!(data["candidate"], 2);
    assert_eq!(data["step"], 1);
    assert_eq!(data["weight"], 1.0);
    assert_eq!(data["source"], "ModelDeployment default/web");

    // What the route answered is what the log holds.
    let after = events_after(app, last.id).await;
    assert_eq!(after.len(), 1);
    assert_eq!(serde_json::to_value(&after[0]).unwrap(), event);

    // A policy write after it gets the next id: consumers see the step, then its effect.
    let (status, _) = app
        .json_request(
            "PUT",
            "/api/v1/endpoints/web",
            json!({"model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut promoted = step_body();
    promoted["reason"] = json!("Promoted");
    promoted["phase"] = json!("Promoted");
    promoted["stable"] = json!(2);
    promoted["candidate"] = Value::Null;
    promoted["step"] = Value::Null;
    promoted["weight"] = json!(0.0);
    let (status, second) = app
        .json_request("POST", "/api/v1/endpoints/web/rollout-events", promoted)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let kinds: Vec<(i64, String)> = events_after(app, last.id)
        .await
        .into_iter()
        .map(|e| (e.id, e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (last.id + 1, "rollout.step".to_string()),
            (last.id + 2, "endpoint.updated".to_string()),
            (last.id + 3, "rollout.step".to_string()),
        ]
    );
    assert_eq!(second["data"]["revision"], 2);
    assert_eq!(second["data"]["candidate"], Value::Null);
    assert_eq!(
        second["data"].get("analysis"),
        None,
        "no analysis, none shown"
    );

    // A judged step keeps its analysis, every check as sent, in the log and its answer.
    let analysis = json!({
        "stage": "Canary", "verdict": "Failed", "decided_by": "errorRate", "candidate": 2,
        "stable": 1, "window_seconds": 60.0, "checks": [
            {"check": "sampleSize", "value": 240.0, "threshold": 100.0, "passed": true},
            {"check": "errorRate", "value": 0.12, "threshold": 0.01, "passed": false},
            {"check": "drift", "note": "no drift policy"}
        ]
    });
    let mut judged = step_body();
    judged["reason"] = json!("ErrorRateTooHigh");
    judged["phase"] = json!("RolledBack");
    judged["analysis"] = analysis.clone();
    let (status, third) = app
        .json_request("POST", "/api/v1/endpoints/web/rollout-events", judged)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    assert_eq!(third["data"]["analysis"], analysis);
    let logged = events_after(app, last.id).await.pop().unwrap();
    assert_eq!(logged.data["analysis"], analysis);
}

async fn invalid_steps_and_unknown_endpoints_are_refused_and_emit_nothing(app: &TestApp) {
    seed_endpoint(app).await;
    let head = events_after(app, 0).await.last().unwrap().id;

    let (status, problem) = app
        .json_request("POST", "/api/v1/endpoints/nope/rollout-events", step_body())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("nope"),
        "{problem}"
    );

    let mut bad = step_body();
    bad["reason"] = json!("not camel case");
    bad["weight"] = json!(250);
    let (status, problem) = app
        .json_request("POST", "/api/v1/endpoints/web/rollout-events", bad)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("reason"), "{detail}");
    assert!(detail.contains("weight"), "{detail}");

    let mut bad_analysis = step_body();
    bad_analysis["analysis"] = json!({"stage": "Canary", "verdict": "Passed", "candidate": 2,
        "stable": 1, "window_seconds": 60.0, "checks": [{"check": "error rate"}]});
    let (status, problem) = app
        .json_request("POST", "/api/v1/endpoints/web/rollout-events", bad_analysis)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("analysis.checks[0].check"),
        "{problem}"
    );

    let mut unknown_field = step_body();
    unknown_field["colour"] = json!("blue");
    let (status, problem) = app
        .json_request(
            "POST",
            "/api/v1/endpoints/web/rollout-events",
            unknown_field,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    let (status, _, _) = app
        .send(
            Request::post("/api/v1/endpoints/web/rollout-events")
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert!(
        events_after(app, head).await.is_empty(),
        "a refused step must not be recorded"
    );
}

async fn the_client_posts_rollout_steps(app: &TestApp) {
    seed_endpoint(app).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let http = reqwest::Client::new();
    let client = RegistryClient::with_http(&format!("http://{addr}"), None, http).unwrap();
    let step: RolloutStep = serde_json::from_value(step_body()).unwrap();
    let event = client.post_rollout_step("web", &step).await.unwrap();
    assert_eq!(event.kind, "rollout.step");
    assert_eq!(event.data["reason"], "RolloutStarted");
    let missing = client.post_rollout_step("gone", &step).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    server.abort();
}

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_a_rollout_step_needs_the_write_role() {
    for db in [Db::Sqlite, Db::Postgres] {
        let config = Config {
            tokens: Tokens::parse([
                format!("read:{READ}").as_str(),
                format!("write:{WRITE}").as_str(),
            ])
            .unwrap(),
            ..Config::default()
        };
        let Some(app) = TestApp::with_config(db, Blobs::Memory, config).await else {
            continue;
        };
        let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
        let (status, _, _) = app
            .send(
                Request::post("/api/v1/models/fraud/versions")
                    .header("content-type", ctype)
                    .header("authorization", format!("Bearer {WRITE}"))
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _, _) = app
            .send(
                Request::put("/api/v1/endpoints/web")
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {WRITE}"))
                    .body(Body::from(
                        json!({"model": "fraud", "stable": 1}).to_string(),
                    ))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let mut step = step_body();
        step["candidate"] = Value::Null;
        step["step"] = Value::Null;
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(READ), StatusCode::FORBIDDEN),
            (Some(WRITE), StatusCode::CREATED),
        ] {
            let mut request = Request::post("/api/v1/endpoints/web/rollout-events")
                .header("content-type", "application/json");
            if let Some(t) = token {
                request = request.header("authorization", format!("Bearer {t}"));
            }
            let (status, _, body) = app
                .send(request.body(Body::from(step.to_string())).unwrap())
                .await;
            assert_eq!(
                status,
                want,
                "{token:?}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        app.cleanup().await;
    }
}
