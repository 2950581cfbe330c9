//! Drift monitoring on SQLite and on PostgreSQL: a profile built from a CSV and uploaded with a
//! version, live histograms reported by (simulated) serving replicas, the analysis that scores
//! them, and the monitor that raises one `drift.detected` per incident, re-arms after
//! `drift.recovered`, and keeps its state across a restart and between replicas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use ferry_api::drift::{Profile, ProfileOptions, profile_csv_file};
use ferry_api::records::Event;
use ferry_api::traffic::{DriftCounters, EndpointAnalysis, Report, VersionCounters};
use ferry_registry::MetadataStore;
use ferry_registry::drift::{evaluate_once, spawn_drift_monitor};
use serde_json::{Value, json};

on_every_backend!(
    a_drifting_feature_raises_one_incident_that_survives_a_restart_and_re_arms,
    two_registry_replicas_judging_the_same_window_raise_one_incident,
    the_analysis_scores_the_drift_of_versions_with_a_profile,
    an_upload_with_a_malformed_profile_is_a_400_naming_the_field,
    the_background_monitor_judges_reports_posted_over_http,
    a_window_by_count_judges_low_traffic_that_windows_by_time_never_would,
);

const INTERVAL: Duration = Duration::from_secs(60);
const FEATURES: [&str; 4] = ["age", "income", "clicks", "score"];
/// The feature the shifted traffic moves.
const INCOME: usize = 1;

// ---------------------------------------------------------------------------------------------
// Data

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One row: age uniform in [18, 80), income roughly normal around 50 (sd ≈ 5.8), clicks an
    /// integer 0–10, score uniform in [0, 1).
    fn row(&mut self) -> [f64; 4] {
        let age = 18.0 + 62.0 * self.uniform();
        let income = 30.0 + 10.0 * (0..4).map(|_| self.uniform()).sum::<f64>();
        let clicks = (11.0 * self.uniform()).floor();
        [age, income, clicks, self.uniform()]
    }
}

/// Writes `rows` training rows with a header.
fn training_csv(path: &Path, rows: usize) {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut csv = FEATURES.join(",");
    csv.push('\n');
    for _ in 0..rows {
        let r = rng.row();
        csv.push_str(&format!("{},{},{},{}\n", r[0], r[1], r[2], r[3]));
    }
    std::fs::write(path, csv).unwrap();
}

/// The profile of input `input` built by the registry's builder from a generated CSV.
fn build_profile(dir: &Path) -> Profile {
    let path = dir.join("train.csv");
    training_csv(&path, 5000);
    let input = profile_csv_file(&path, "input", &ProfileOptions::default()).unwrap();
    let names: Vec<&str> = input.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, FEATURES);
    Profile::new(vec![input])
}

/// Live histograms of `rows` requests rows, as serving records them; `shift` is added to the
/// income column.
fn live(profile: &Profile, rows: usize, seed: u64, shift: f64) -> DriftCounters {
    let mut rng = Rng(seed);
    let mut values: Vec<f32> = Vec::with_capacity(rows * 4);
    for _ in 0..rows {
        let mut r = rng.row();
        r[INCOME] += shift;
        values.extend(r.iter().map(|v| *v as f32));
    }
    let mut drift = DriftCounters::default();
    let recorded = drift.record_rows(profile.input("input").unwrap(), &values, 4);
    assert_eq!(recorded, rows as u64);
    drift
}

fn report(replica: &str, versions: Vec<(i64, u64, DriftCounters)>) -> Report {
    Report {
        id: None,
        replica: replica.into(),
        interval_seconds: 5.0,
        revision: Some(1),
        versions: versions
            .into_iter()
            .map(|(v, requests, drift)| {
                (
                    v,
                    VersionCounters {
                        requests,
                        drift: Some(drift),
                        ..VersionCounters::default()
                    },
                )
            })
            .collect(),
        load_error: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn upload_with_profile(app: &TestApp, profile: &Profile) {
    let (status, v) = app
        .upload(
            "fraud",
            MLP,
            Some(json!({ "profile": Value::Object(profile.to_metadata()) })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["has_profile"], true);
}

async fn put_endpoint(app: &TestApp, name: &str, body: Value) {
    let (status, body) = app
        .json_request("PUT", &format!("/api/v1/endpoints/{name}"), body)
        .await;
    assert!(status.is_success(), "{body}");
}

async fn drift_events(store: &MetadataStore, after: i64) -> Vec<Event> {
    store
        .events_after(after, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("drift."))
        .collect()
}

/// A clock for windows: window `k` ends at `base + k` intervals, its reports arrive half an
/// interval before. Starts 20 minutes ago, so every window is in the past and inside the
/// report retention.
struct Clock(DateTime<Utc>);

impl Clock {
    fn new() -> Self {
        Clock(Utc::now() - TimeDelta::minutes(20))
    }

    fn end(&self, k: i64) -> DateTime<Utc> {
        self.0 + TimeDelta::seconds(60 * k)
    }

    fn report_at(&self, k: i64) -> DateTime<Utc> {
        self.end(k) - TimeDelta::seconds(30)
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

async fn a_drifting_feature_raises_one_incident_that_survives_a_restart_and_re_arms(app: &TestApp) {
    let profile = build_profile(app.dir.path());
    upload_with_profile(app, &profile).await;
    put_endpoint(
        app,
        "fraud-api",
        json!({
            "model": "fraud", "stable": 1,
            "drift": {"metric": "psi", "threshold": 0.2, "min_samples": 500, "consecutive_windows": 2},
        }),
    )
    .await;
    let store = &app.state.store;
    let start = store.last_event_id().await.unwrap();
    let clock = Clock::new();
    let window = |store: MetadataStore, k: i64, drift: DriftCounters| {
        let clock = &clock;
        async move {
            let r = report("serving-0", vec![(1, 1000, drift)]);
            store
                .record_report_at("fraud-api", r, clock.report_at(k))
                .await
                .unwrap();
            evaluate_once(&store, INTERVAL, clock.end(k)).await.unwrap()
        }
    };
    let same = |seed| live(&profile, 2000, seed, 0.0);
    let shifted = |seed, rows| live(&profile, rows, seed, 25.0);

    // In distribution: nothing, and nothing written for a healthy version.
    assert!(window(store.clone(), 1, same(11)).await.is_empty());
    assert!(
        store
            .drift_states(Some("fraud-api"))
            .await
            .unwrap()
            .is_empty()
    );
    // Shifted but below min_samples: not judged.
    assert!(window(store.clone(), 2, shifted(12, 100)).await.is_empty());
    assert!(
        store
            .drift_states(Some("fraud-api"))
            .await
            .unwrap()
            .is_empty()
    );
    // The first shifted window counts; the policy wants two in a row.
    assert!(window(store.clone(), 3, shifted(13, 2000)).await.is_empty());
    let states = store.drift_states(Some("fraud-api")).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].version, states[0].consecutive), (1, 1));
    assert_eq!(states[0].incident_event, None);
    assert!(states[0].last_score.unwrap() > 0.2);

    // The second raises exactly one incident, naming the shifted feature first.
    let emitted = window(store.clone(), 4, shifted(14, 2000)).await;
    assert_eq!(emitted.len(), 1, "{emitted:?}");
    let events = drift_events(store, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let detected = &events[0];
    assert_eq!(detected.kind, "drift.detected");
    assert_eq!(detected.subject, "fraud-api");
    let d = &detected.data;
    assert_eq!(d["endpoint"], "fraud-api");
    assert_eq!(d["model"], "fraud");
    assert_eq!(d["version"], 1);
    assert_eq!(d["role"], "stable");
    assert_eq!(d["metric"], "psi");
    assert_eq!(d["threshold"], 0.2);
    assert_eq!(d["window_seconds"], 60.0);
    assert_eq!(d["samples"], 2000);
    assert!(d["score"].as_f64().unwrap() > 1.0, "{d}");
    let features = d["features"].as_array().unwrap();
    assert_eq!(features.len(), 4);
    assert_eq!(features[0]["name"], "income", "{d}");
    assert_eq!(d["score"], features[0]["score"]);
    for calm in &features[1..] {
        assert!(calm["score"].as_f64().unwrap() < 0.1, "{d}");
    }

    // Judging again at the same moment is not due; more shifted windows stay one incident.
    assert!(
        evaluate_once(store, INTERVAL, clock.end(4))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(window(store.clone(), 5, shifted(15, 2000)).await.is_empty());

    // A restart: a new store on the same database neither fires again nor forgets.
    let restarted = store.reopen(4).await.unwrap();
    let states = restarted.drift_states(Some("fraud-api")).await.unwrap();
    assert_eq!(states[0].incident_event, Some(detected.id));
    assert_eq!(states[0].consecutive, 3);
    assert!(
        window(restarted.clone(), 6, shifted(16, 2000))
            .await
            .is_empty()
    );
    assert_eq!(drift_events(&restarted, start).await.len(), 1);

    // Back in distribution: the incident closes, pointing at the event that opened it.
    let emitted = window(restarted.clone(), 7, same(17)).await;
    assert_eq!(emitted.len(), 1, "{emitted:?}");
    let recovered = &emitted[0];
    assert_eq!(recovered.kind, "drift.recovered");
    assert_eq!(recovered.data["detected_event"], detected.id);
    assert_eq!(recovered.data["version"], 1);
    assert!(recovered.data["score"].as_f64().unwrap() <= 0.2);
    let states = restarted.drift_states(Some("fraud-api")).await.unwrap();
    assert_eq!((states[0].consecutive, states[0].incident_event), (0, None));

    // Re-armed: a new breach of two windows raises a second incident.
    assert!(
        window(restarted.clone(), 8, shifted(18, 2000))
            .await
            .is_empty()
    );
    let emitted = window(restarted.clone(), 9, shifted(19, 2000)).await;
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].kind, "drift.detected");
    let kinds: Vec<String> = drift_events(store, start)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["drift.detected", "drift.recovered", "drift.detected"]
    );
    restarted.close().await;
}

async fn two_registry_replicas_judging_the_same_window_raise_one_incident(app: &TestApp) {
    let profile = build_profile(app.dir.path());
    upload_with_profile(app, &profile).await;
    upload_with_profile(app, &profile).await;
    put_endpoint(
        app,
        "fraud-api",
        json!({
            "model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.1},
            "drift": {"metric": "js", "threshold": 0.3, "min_samples": 500},
        }),
    )
    .await;
    let a = app.state.store.clone();
    let b = a.reopen(4).await.unwrap();
    let start = a.last_event_id().await.unwrap();
    let clock = Clock::new();

    // Only the canary's traffic drifted. Both replicas judge the same window at once.
    let r = report(
        "serving-0",
        vec![
            (1, 2000, live(&profile, 2000, 21, 0.0)),
            (2, 2000, live(&profile, 2000, 22, 25.0)),
        ],
    );
    a.record_report_at("fraud-api", r, clock.report_at(1))
        .await
        .unwrap();
    let (from_a, from_b) = tokio::join!(
        evaluate_once(&a, INTERVAL, clock.end(1)),
        evaluate_once(&b, INTERVAL, clock.end(1)),
    );
    assert_eq!(from_a.unwrap().len() + from_b.unwrap().len(), 1);
    let events = drift_events(&a, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].data["version"], 2);
    assert_eq!(events[0].data["role"], "canary");
    assert_eq!(events[0].data["metric"], "js");
    assert_eq!(events[0].data["features"][0]["name"], "income");

    // The recovery, judged by both a little apart, is also written once.
    let r = report(
        "serving-0",
        vec![
            (1, 2000, live(&profile, 2000, 23, 0.0)),
            (2, 2000, live(&profile, 2000, 24, 0.0)),
        ],
    );
    a.record_report_at("fraud-api", r, clock.report_at(2))
        .await
        .unwrap();
    let (from_a, from_b) = tokio::join!(
        evaluate_once(&a, INTERVAL, clock.end(2)),
        evaluate_once(&b, INTERVAL, clock.end(2) + TimeDelta::seconds(1)),
    );
    assert_eq!(from_a.unwrap().len() + from_b.unwrap().len(), 1);
    let kinds: Vec<String> = drift_events(&a, start)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["drift.detected", "drift.recovered"]);

    // A deleted endpoint takes its monitoring state with it.
    assert_eq!(a.drift_states(Some("fraud-api")).await.unwrap().len(), 1);
    let (status, _) = app
        .json_request("DELETE", "/api/v1/endpoints/fraud-api", Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(a.drift_states(None).await.unwrap().is_empty());
    b.close().await;
}

async fn the_analysis_scores_the_drift_of_versions_with_a_profile(app: &TestApp) {
    let profile = build_profile(app.dir.path());
    upload_with_profile(app, &profile).await;
    let (status, _) = app.upload("fraud", MLP, None, None).await;
    assert_eq!(status, StatusCode::CREATED);
    put_endpoint(
        app,
        "fraud-api",
        json!({"model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.5}}),
    )
    .await;
    // The profile is served as it was built.
    let (status, stored) = app.get("/api/v1/models/fraud/versions/1/profile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Profile::from_metadata(&stored).unwrap(), profile);

    // Two replicas report over HTTP; version 1's inputs moved in income.
    for (replica, seed) in [("serving-0", 31), ("serving-1", 32)] {
        let body = serde_json::to_value(report(
            replica,
            vec![(1, 1000, live(&profile, 1000, seed, 25.0))],
        ))
        .unwrap();
        let (status, problem) = app
            .json_request("POST", "/api/v1/endpoints/fraud-api/reports", body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{problem}");
    }
    let (status, body) = app
        .get("/api/v1/endpoints/fraud-api/analysis?window=5m")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let drift = &body["versions"][0]["drift"];
    assert_eq!(drift["samples"], 2000, "{body}");
    assert_eq!(drift["worst_feature"], "income");
    let income = &drift["features"]["income"];
    let income_psi = income["scores"]["psi"].clone();
    assert_eq!(income["input"], "input");
    assert_eq!(income["samples"], 2000);
    assert!(income["scores"]["psi"].as_f64().unwrap() > 1.0, "{drift}");
    assert!(income["scores"]["js"].as_f64().unwrap() > 0.5, "{drift}");
    assert_eq!(drift["scores"]["psi"], income["scores"]["psi"]);
    for calm in ["age", "clicks", "score"] {
        assert!(
            drift["features"][calm]["scores"]["psi"].as_f64().unwrap() < 0.1,
            "{calm}: {drift}"
        );
    }
    // The version without a profile has no drift section at all.
    assert_eq!(body["versions"][1]["version"], 2);
    assert!(body["versions"][1].get("drift").is_none(), "{body}");
    // And the typed analysis reads it back.
    let analysis: EndpointAnalysis = serde_json::from_value(body).unwrap();
    let typed = analysis.versions[0].drift.as_ref().unwrap();
    assert_eq!(typed.worst_feature.as_deref(), Some("income"));

    // The histograms behind those scores: the stable version by default, training beside live
    // on the profile's buckets, worst first; the live counts are the two reports summed.
    let (status, body) = app
        .get("/api/v1/endpoints/fraud-api/histograms?window=5m")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    let features = body["features"].as_array().unwrap();
    assert_eq!(features.len(), 4);
    assert_eq!(features[0]["feature"], "income");
    assert_eq!(features[0]["scores"]["psi"], income_psi);
    let trained = &profile.inputs[0].features[1];
    assert_eq!(trained.name, "income");
    assert_eq!(features[0]["edges"], json!(trained.edges));
    assert_eq!(features[0]["training"], json!(trained.counts));
    let live_income = live(&profile, 1000, 31, 25.0).inputs["input"][1]
        .iter()
        .zip(&live(&profile, 1000, 32, 25.0).inputs["input"][1])
        .map(|(a, b)| a + b)
        .collect::<Vec<u64>>();
    assert_eq!(features[0]["live"], json!(live_income));
    // The canary has no profile; a version not on the endpoint is not found either.
    for version in [2, 7] {
        let (status, problem) = app
            .get(&format!(
                "/api/v1/endpoints/fraud-api/histograms?version={version}"
            ))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("version {version} of endpoint fraud-api")),
            "{problem}"
        );
    }
}

async fn an_upload_with_a_malformed_profile_is_a_400_naming_the_field(app: &TestApp) {
    let mut profile = build_profile(app.dir.path()).to_metadata();
    profile["inputs"][0]["features"][2]["edges"][1] = json!(-5.0);
    let (status, problem) = app
        .upload("fraud", MLP, Some(json!({ "profile": profile })), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("`profile.inputs[0].features[2].edges` must be strictly increasing"),
        "{detail}"
    );
    let (status, problem) = app
        .upload(
            "fraud",
            MLP,
            Some(
                json!({ "profile": {"format": 1, "inputs": [{"input": "x", "features": [
                {"name": "a", "column": 0, "edges": [0.0], "counts": [1, 2],
                 "summary": {"count": 2, "mean": 0.0, "std": 0.0, "min": 0.0, "max": "big"}}]}]} }),
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`profile.inputs[0].features[0].summary.max` is not valid"),
        "{problem}"
    );
    // Without a profile an upload is as before.
    let (status, v) = app.upload("fraud", MLP, None, None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(v["has_profile"], false);
}

async fn the_background_monitor_judges_reports_posted_over_http(app: &TestApp) {
    let profile = build_profile(app.dir.path());
    upload_with_profile(app, &profile).await;
    put_endpoint(
        app,
        "fraud-api",
        json!({"model": "fraud", "stable": 1, "drift": {"metric": "kl", "threshold": 0.5}}),
    )
    .await;
    let store = app.state.store.clone();
    let start = store.last_event_id().await.unwrap();
    let body = serde_json::to_value(report(
        "serving-0",
        vec![(1, 1000, live(&profile, 1000, 41, 25.0))],
    ))
    .unwrap();
    let (status, problem) = app
        .json_request("POST", "/api/v1/endpoints/fraud-api/reports", body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{problem}");
    // Windows are [start, end) at millisecond precision: a report stored in the very millisecond
    // a pass starts belongs to the next window (nothing is lost in production; here the first
    // pass must see it, and once CI's timing put both in one millisecond).
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The first evaluation runs at once and judges the last interval, this report included.
    let mut tasks = tokio::task::JoinSet::new();
    let stop = tokio_util::sync::CancellationToken::new();
    spawn_drift_monitor(store.clone(), INTERVAL, &mut tasks, stop.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = drift_events(&store, start).await;
        if !events.is_empty() || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), tasks.join_next())
        .await
        .expect("the monitor stops when asked")
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "drift.detected");
    assert_eq!(events[0].data["metric"], "kl");
    assert_eq!(events[0].data["features"][0]["name"], "income");
}

async fn a_window_by_count_judges_low_traffic_that_windows_by_time_never_would(app: &TestApp) {
    let profile = build_profile(app.dir.path());
    upload_with_profile(app, &profile).await;
    // Two endpoints on the same version and the same trickle of shifted traffic: 150 rows per
    // interval, below min_samples 400. By time, no window is ever judged; by count (the newest
    // 600 rows), the third interval's evaluation reaches 450 rows and raises the incident.
    for (name, window) in [("by-time", Value::Null), ("by-count", json!(600))] {
        put_endpoint(
            app,
            name,
            json!({
                "model": "fraud", "stable": 1,
                "drift": {"metric": "psi", "threshold": 0.2, "min_samples": 400,
                          "consecutive_windows": 1, "window_samples": window},
            }),
        )
        .await;
    }
    let store = &app.state.store;
    let start = store.last_event_id().await.unwrap();
    let clock = Clock::new();
    let mut emitted = Vec::new();
    for k in 1..=4 {
        for name in ["by-time", "by-count"] {
            let r = report(
                "serving-0",
                vec![(1, 150, live(&profile, 150, 40 + k as u64, 25.0))],
            );
            store
                .record_report_at(name, r, clock.report_at(k))
                .await
                .unwrap();
        }
        let events = evaluate_once(store, INTERVAL, clock.end(k)).await.unwrap();
        emitted.push(events.len());
    }
    let events = drift_events(store, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let d = &events[0].data;
    assert_eq!(events[0].subject, "by-count");
    assert_eq!(events[0].kind, "drift.detected");
    assert_eq!(d["features"][0]["name"], "income", "{d}");
    assert!(d["samples"].as_u64().unwrap() >= 400, "{d}");
    // The window reaches back to the oldest report it used: more than one interval.
    assert!(d["window_seconds"].as_f64().unwrap() > 60.0, "{d}");
    assert_eq!(emitted, [0, 0, 1, 0]);
    assert!(
        store
            .drift_states(Some("by-time"))
            .await
            .unwrap()
            .is_empty(),
        "the time windows were judged"
    );
}
