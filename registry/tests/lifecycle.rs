//! The lifecycle monitor on SQLite and on PostgreSQL: perishable models (`max_age_seconds` →
//! `model.stale` once per incident, `model.refreshed` by a newer stable version or a policy that
//! allows the age) and performance decay (`decay` → `performance.degraded` once per incident
//! when the newest labels turn wrong, `performance.recovered`), with the endpoint's conditions
//! as `GET /api/v1/endpoints/{name}` shows them. Reports are what serving replicas post; the
//! clock is passed in, so the windows are exact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use ferry_api::records::Event;
use ferry_api::traffic::{FeedbackCounters, Report, VersionCounters};
use ferry_registry::MetadataStore;
use ferry_registry::lifecycle::evaluate_once;
use serde_json::{Value, json};

on_every_backend!(
    a_stale_version_raises_one_incident_and_a_newer_version_refreshes_it,
    raising_the_max_age_refreshes_and_two_monitors_raise_one_incident,
    labels_turning_wrong_halfway_degrade_the_version_once_and_it_recovers,
    a_recorded_metric_is_the_reference_and_a_new_stable_version_closes_the_incident,
);

// ---------------------------------------------------------------------------------------------
// Helpers

async fn push(app: &TestApp, metadata: Value) -> i64 {
    let (status, v) = app.upload("fraud", MLP, Some(metadata), None).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["version"].as_i64().unwrap()
}

async fn put_endpoint(app: &TestApp, body: Value) {
    let (status, body) = app
        .json_request("PUT", "/api/v1/endpoints/fraud-api", body)
        .await;
    assert!(status.is_success(), "{body}");
}

/// Lifecycle events (model.stale/refreshed, performance.*) after `after`.
async fn lifecycle_events(store: &MetadataStore, after: i64) -> Vec<Event> {
    store
        .events_after(after, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.kind.starts_with("performance.")
                || e.kind == "model.stale"
                || e.kind == "model.refreshed"
        })
        .collect()
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// The endpoint's condition of `kind`, as the API shows it.
async fn condition(app: &TestApp, kind: &str) -> Value {
    let (status, body) = app.get("/api/v1/endpoints/fraud-api").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} condition in {body}"))
}

fn dataset(as_of: DateTime<Utc>) -> Value {
    json!({"data": [{"uri": "s3://lake/fraud/2026-11", "sha256": "a".repeat(64), "as_of": as_of}]})
}

/// A serving replica's report with `labels` feedback labels of which `correct` were right.
fn feedback_report(version: i64, labels: u64, correct: u64) -> Report {
    Report {
        id: None,
        replica: "serving-0".into(),
        interval_seconds: 5.0,
        revision: Some(1),
        versions: [(
            version,
            VersionCounters {
                requests: labels,
                feedback: FeedbackCounters {
                    labels,
                    correct,
                    ..FeedbackCounters::default()
                },
                ..VersionCounters::default()
            },
        )]
        .into(),
        load_error: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Perishable models

async fn a_stale_version_raises_one_incident_and_a_newer_version_refreshes_it(app: &TestApp) {
    let store = &app.state.store;
    let now = Utc::now();
    // Trained on data taken two days ago: with a one-day maximum it is stale at once, although
    // it was pushed a moment ago.
    let old = push(app, dataset(now - TimeDelta::days(2))).await;
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": old, "max_age_seconds": 86_400}),
    )
    .await;
    let start = store.last_event_id().await.unwrap();
    // Before the monitor's first pass the condition already reads the version's age.
    let c = condition(app, "Stale").await;
    assert_eq!(c["status"], "True", "{c}");
    assert_eq!(c["event"], Value::Null, "{c}");

    let events = evaluate_once(store, now).await.unwrap();
    assert_eq!(kinds(&events), ["model.stale"]);
    let stale = &events[0];
    assert_eq!(stale.subject, "fraud-api");
    assert_eq!(stale.data["version"], old);
    assert_eq!(stale.data["age_from"], "data");
    assert_eq!(stale.data["max_age_seconds"], 86_400);
    let age = stale.data["age_seconds"].as_u64().unwrap();
    assert!((2 * 86_400 - 5..=2 * 86_400 + 5).contains(&age), "{age}");
    let c = condition(app, "Stale").await;
    assert_eq!(c["status"], "True", "{c}");
    assert_eq!(c["event"], stale.id);
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("2d old (counted from its training data), maximum 1d"),
        "{c}"
    );

    // Once per incident: later passes (a restart is a later pass: the state is in the
    // database) raise nothing more.
    for minutes in [1, 60] {
        let again = evaluate_once(store, now + TimeDelta::minutes(minutes))
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    // A fresh version (no data time: its age counts from its creation) becomes stable.
    let fresh = push(app, json!({})).await;
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": fresh, "max_age_seconds": 86_400}),
    )
    .await;
    let events = evaluate_once(store, Utc::now()).await.unwrap();
    assert_eq!(kinds(&events), ["model.refreshed"]);
    let refreshed = &events[0].data;
    assert_eq!(refreshed["version"], fresh);
    assert_eq!(refreshed["stale_version"], old);
    assert_eq!(refreshed["reason"], "new_version");
    assert_eq!(refreshed["stale_event"], stale.id);
    // The next pass records the new version as judged, fresh; nothing is emitted.
    assert!(evaluate_once(store, Utc::now()).await.unwrap().is_empty());
    let c = condition(app, "Stale").await;
    assert_eq!(c["status"], "False", "{c}");
    assert_eq!(c["version"], fresh);
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("counted from its creation"),
        "{c}"
    );

    // It goes stale in its turn a day later.
    let events = evaluate_once(
        store,
        Utc::now() + TimeDelta::days(1) + TimeDelta::minutes(1),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&events), ["model.stale"]);
    assert_eq!(events[0].data["version"], fresh);
    assert_eq!(events[0].data["age_from"], "created");

    assert_eq!(
        kinds(&lifecycle_events(store, start).await),
        ["model.stale", "model.refreshed", "model.stale"]
    );
}

async fn raising_the_max_age_refreshes_and_two_monitors_raise_one_incident(app: &TestApp) {
    let store = &app.state.store;
    let v = push(app, dataset(Utc::now() - TimeDelta::hours(3))).await;
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": v, "max_age_seconds": 3600}),
    )
    .await;
    let start = store.last_event_id().await.unwrap();
    // Two registry replicas judge at the same moment: one incident.
    let now = Utc::now();
    let (a, b) = tokio::join!(evaluate_once(store, now), evaluate_once(store, now));
    let mut both = a.unwrap();
    both.extend(b.unwrap());
    assert_eq!(kinds(&both), ["model.stale"]);

    // A policy that allows the age closes it.
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": v, "max_age_seconds": 86_400}),
    )
    .await;
    let events = evaluate_once(store, Utc::now()).await.unwrap();
    assert_eq!(kinds(&events), ["model.refreshed"]);
    assert_eq!(events[0].data["reason"], "policy");
    assert_eq!(events[0].data["stale_event"], both[0].id);

    // Stale again under a tighter policy; removing the policy closes the incident and forgets
    // the state.
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": v, "max_age_seconds": 60}),
    )
    .await;
    assert_eq!(
        kinds(&evaluate_once(store, Utc::now()).await.unwrap()),
        ["model.stale"]
    );
    put_endpoint(app, json!({"model": "fraud", "stable": v})).await;
    let events = evaluate_once(store, Utc::now()).await.unwrap();
    assert_eq!(kinds(&events), ["model.refreshed"]);
    assert_eq!(events[0].data["reason"], "policy");
    assert!(evaluate_once(store, Utc::now()).await.unwrap().is_empty());
    assert!(
        store
            .lifecycle_states(Some("fraud-api"))
            .await
            .unwrap()
            .is_empty()
    );
    let (_, body) = app.get("/api/v1/endpoints/fraud-api").await;
    assert!(body.get("conditions").is_none(), "{body}");
    assert_eq!(
        kinds(&lifecycle_events(store, start).await),
        [
            "model.stale",
            "model.refreshed",
            "model.stale",
            "model.refreshed"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Performance decay

async fn labels_turning_wrong_halfway_degrade_the_version_once_and_it_recovers(app: &TestApp) {
    let store = &app.state.store;
    let v = push(app, json!({})).await;
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": v,
               "decay": {"metric": "accuracy", "max_drop": 0.1, "window": 100}}),
    )
    .await;
    let start = store.last_event_id().await.unwrap();
    let t0 = Utc::now() - TimeDelta::minutes(30);
    let at = |minute: i64| t0 + TimeDelta::minutes(minute);
    let report = |minute: i64, labels: u64, correct: u64| {
        let store = store.clone();
        async move {
            store
                .record_report_at("fraud-api", feedback_report(v, labels, correct), at(minute))
                .await
                .unwrap();
        }
    };

    // Too few labels: no verdict, and the condition says how many there are.
    report(0, 60, 57).await;
    assert!(evaluate_once(store, at(1)).await.unwrap().is_empty());
    let c = condition(app, "PerformanceDegraded").await;
    assert_eq!(c["status"], "Unknown", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("no verdict: 60 of the 100 labels"),
        "{c}"
    );

    // The first full window (60 + 40 labels, 92% right) becomes the reference.
    report(2, 40, 35).await;
    assert!(evaluate_once(store, at(3)).await.unwrap().is_empty());
    let c = condition(app, "PerformanceDegraded").await;
    assert_eq!(c["status"], "False", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("reference of 0.920 (first_window)"),
        "{c}"
    );

    // Halfway, the labels turn wrong: the newest 100 labels are 40% right.
    report(4, 50, 20).await;
    report(5, 50, 20).await;
    let events = evaluate_once(store, at(6)).await.unwrap();
    assert_eq!(kinds(&events), ["performance.degraded"]);
    let d = &events[0].data;
    assert_eq!(d["version"], v);
    assert_eq!(d["metric"], "accuracy");
    assert_eq!(d["value"], 0.4);
    assert_eq!(d["reference"], 0.92);
    assert_eq!(d["reference_source"], "first_window");
    assert_eq!(d["samples"], 100);
    assert_eq!(d["correct"], 40);
    assert_eq!(d["max_drop"], 0.1);
    assert!((d["drop"].as_f64().unwrap() - 0.52).abs() < 1e-9, "{d}");
    let degraded_id = events[0].id;
    assert_eq!(
        condition(app, "PerformanceDegraded").await["status"],
        "True"
    );

    // Once per incident.
    report(7, 100, 45).await;
    assert!(evaluate_once(store, at(8)).await.unwrap().is_empty());

    // Right answers again: recovered, pointing at the incident.
    report(9, 100, 90).await;
    let events = evaluate_once(store, at(10)).await.unwrap();
    assert_eq!(kinds(&events), ["performance.recovered"]);
    let r = &events[0].data;
    assert_eq!(r["reason"], "recovered");
    assert_eq!(r["value"], 0.9);
    assert_eq!(r["samples"], 100);
    assert_eq!(r["degraded_event"], degraded_id);
    assert_eq!(
        kinds(&lifecycle_events(store, start).await),
        ["performance.degraded", "performance.recovered"]
    );
}

async fn a_recorded_metric_is_the_reference_and_a_new_stable_version_closes_the_incident(
    app: &TestApp,
) {
    let store = &app.state.store;
    let v1 = push(app, json!({"metrics": {"accuracy": 0.95}})).await;
    let v2 = push(app, json!({})).await;
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": v1,
               "decay": {"metric": "accuracy", "max_drop": 0.05, "window": 100}}),
    )
    .await;
    let start = store.last_event_id().await.unwrap();
    let t0 = Utc::now() - TimeDelta::minutes(30);
    // 91% against the recorded 95%: within 0.05.
    store
        .record_report_at("fraud-api", feedback_report(v1, 100, 91), t0)
        .await
        .unwrap();
    assert!(
        evaluate_once(store, t0 + TimeDelta::minutes(1))
            .await
            .unwrap()
            .is_empty()
    );
    let c = condition(app, "PerformanceDegraded").await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("reference of 0.950 (lineage)"),
        "{c}"
    );
    // 89%: past it.
    store
        .record_report_at(
            "fraud-api",
            feedback_report(v1, 100, 89),
            t0 + TimeDelta::minutes(2),
        )
        .await
        .unwrap();
    let events = evaluate_once(store, t0 + TimeDelta::minutes(3))
        .await
        .unwrap();
    assert_eq!(kinds(&events), ["performance.degraded"]);
    assert_eq!(events[0].data["reference_source"], "lineage");

    // Version 2 replaces it: the incident closes; version 2 starts with no verdict.
    put_endpoint(
        app,
        json!({"model": "fraud", "stable": v2,
               "decay": {"metric": "accuracy", "max_drop": 0.05, "window": 100}}),
    )
    .await;
    let events = evaluate_once(store, t0 + TimeDelta::minutes(4))
        .await
        .unwrap();
    assert_eq!(kinds(&events), ["performance.recovered"]);
    assert_eq!(events[0].data["reason"], "replaced");
    assert_eq!(events[0].data["version"], v1);
    assert!(
        evaluate_once(store, t0 + TimeDelta::minutes(5))
            .await
            .unwrap()
            .is_empty()
    );
    let c = condition(app, "PerformanceDegraded").await;
    assert_eq!(
        (c["status"].as_str(), c["version"].as_i64()),
        (Some("Unknown"), Some(v2))
    );
    assert_eq!(
        kinds(&lifecycle_events(store, start).await),
        ["performance.degraded", "performance.recovered"]
    );
}
