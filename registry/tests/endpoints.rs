//! Endpoints (traffic policies), replica reports and their analysis, over HTTP on SQLite and on
//! PostgreSQL: revisions, conditional writes, events in the same transaction, validation, and
//! the arithmetic rollouts are judged on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::Utc;
use common::*;
use ferry_api::client::RegistryClient;
use ferry_api::http::auth::Tokens;
use ferry_api::records::{CanaryPolicy, EndpointPolicy, EndpointRecord, Event, ShadowPolicy};
use ferry_api::traffic::{
    EndpointAnalysis, LatencyHistogram, Report, ShadowCounters, VersionAnalysis, VersionCounters,
    latency_bounds_us,
};
use ferry_registry::Config;
use serde_json::{Value, json};

on_every_backend!(
    an_endpoint_is_created_read_updated_and_deleted_with_revisions_and_events,
    putting_the_same_policy_again_changes_nothing_and_emits_nothing,
    endpoint_listings_are_newest_first_and_paginated,
    invalid_policies_are_refused_naming_the_field_and_emit_nothing,
    if_match_and_if_none_match_make_writes_conditional,
    concurrent_puts_without_if_match_leave_gapless_revisions_and_one_event_each,
    a_version_an_endpoint_routes_to_cannot_be_archived,
    reports_from_two_replicas_sum_into_the_analysis_of_the_window,
    the_series_sums_each_step_of_the_window_like_the_analysis,
    roles_follow_the_current_policy_and_versions_left_out_are_retired,
    a_report_sent_again_under_its_id_is_counted_once,
    a_change_of_load_error_emits_one_degraded_or_recovered_event,
    bad_reports_and_windows_are_400_and_unknown_endpoints_404,
    old_reports_are_pruned_in_the_background_at_most_once_a_minute,
    a_prune_is_left_to_the_registry_already_pruning,
    a_deleted_endpoint_forgets_its_reports,
    the_client_drives_every_endpoint_route,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Pushes `count` versions of model `fraud`.
async fn seed(app: &TestApp, count: usize) {
    for _ in 0..count {
        let (status, v) = app.upload("fraud", MLP, None, None).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
}

fn policy() -> Value {
    json!({
        "model": "fraud",
        "stable": 1,
        "canary": {"version": 2, "weight": 0.05},
        "shadows": [{"version": 3}],
        "sticky_header": "X-User-Id",
    })
}

async fn put(
    app: &TestApp,
    name: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::put(format!("/api/v1/endpoints/{name}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let (status, headers, body) = app
        .send(request.body(Body::from(body.to_string())).unwrap())
        .await;
    (status, headers, json(&body))
}

async fn delete(app: &TestApp, name: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut request = Request::delete(format!("/api/v1/endpoints/{name}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let (status, _, body) = app.send(request.body(Body::empty()).unwrap()).await;
    (status, json(&body))
}

async fn events_after(app: &TestApp, after: i64) -> Vec<Event> {
    app.state.store.events_after(after, 10_000).await.unwrap()
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

/// `requests` successes of `latency_us` each, and these errors.
fn counters(requests: u64, latency_us: f64, errors: &[(&str, u64)]) -> VersionCounters {
    let mut latency = LatencyHistogram::default();
    for _ in 0..requests {
        latency.record(latency_us);
    }
    VersionCounters {
        requests,
        errors: errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        latency,
        ..VersionCounters::default()
    }
}

fn report(
    replica: &str,
    versions: Vec<(i64, VersionCounters)>,
    load_error: Option<&str>,
) -> Report {
    Report {
        id: None,
        replica: replica.into(),
        interval_seconds: 5.0,
        revision: Some(1),
        versions: versions.into_iter().collect(),
        load_error: load_error.map(String::from),
    }
}

async fn post_report(app: &TestApp, name: &str, body: &Value) -> (StatusCode, Value) {
    app.json_request(
        "POST",
        &format!("/api/v1/endpoints/{name}/reports"),
        body.clone(),
    )
    .await
}

async fn analysis(app: &TestApp, name: &str, window: &str) -> EndpointAnalysis {
    let (status, body) = app
        .get(&format!(
            "/api/v1/endpoints/{name}/analysis?window={window}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= 1e-9 * want.abs().max(1.0))
}

/// Where the histogram's interpolation puts the `rank`-th of `count` observations that all fell
/// in the bucket of `micros`, `seen` observations lying in lower buckets: in milliseconds.
fn interpolated_ms(micros: f64, seen: f64, count: f64, rank: f64) -> f64 {
    let bounds = latency_bounds_us();
    let i = bounds.partition_point(|b| *b < micros);
    let (lower, upper) = (bounds[i - 1], bounds[i]);
    (lower + (rank - seen) / count * (upper - lower)) / 1000.0
}

fn by_version(analysis: &EndpointAnalysis, version: i64) -> &VersionAnalysis {
    analysis
        .versions
        .iter()
        .find(|v| v.version == version)
        .unwrap_or_else(|| panic!("version {version} missing from {analysis:?}"))
}

// ---------------------------------------------------------------------------------------------
// Policies

async fn an_endpoint_is_created_read_updated_and_deleted_with_revisions_and_events(app: &TestApp) {
    seed(app, 3).await;
    let start = app.state.store.last_event_id().await.unwrap();

    let (status, headers, created) = put(app, "fraud-api", &policy(), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(headers["location"], "/api/v1/endpoints/fraud-api");
    assert_eq!(created["name"], "fraud-api");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["model"], "fraud");
    assert_eq!(created["canary"], json!({"version": 2, "weight": 0.05}));
    // Defaults are filled in and the header is stored the way serving looks it up.
    assert_eq!(
        created["shadows"],
        json!([{"version": 3, "sample_rate": 1.0}])
    );
    assert_eq!(created["sticky_header"], "x-user-id");
    // The answer is the shared record type, as serving and the CLI read it.
    let record: EndpointRecord = serde_json::from_value(created.clone()).unwrap();
    assert_eq!(record.policy.stable, 1);

    let (status, headers, body) = app
        .send(
            Request::get("/api/v1/endpoints/fraud-api")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(json(&body), created);

    let promoted =
        json!({"model": "fraud", "stable": 2, "shadows": [{"version": 3, "sample_rate": 0.25}]});
    let (status, headers, updated) = put(app, "fraud-api", &promoted, &[]).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["stable"], 2);
    assert!(updated.get("canary").is_none(), "{updated}");
    assert_eq!(updated["created_at"], created["created_at"]);
    let (_, got) = app.get("/api/v1/endpoints/fraud-api").await;
    assert_eq!(got, updated);

    let (status, body) = delete(app, "fraud-api", &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, problem) = app.get("/api/v1/endpoints/fraud-api").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(detail(&problem).contains("fraud-api"), "{problem}");
    let (status, _) = delete(app, "fraud-api", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // One event per change, in order, about the endpoint, carrying the policy as stored.
    let events = events_after(app, start).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["endpoint.updated", "endpoint.updated", "endpoint.deleted"]
    );
    assert!(events.iter().all(|e| e.subject == "fraud-api"));
    assert_eq!(
        events[0].data,
        json!({
            "endpoint": "fraud-api",
            "revision": 1,
            "created": true,
            "policy": {
                "model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.05},
                "shadows": [{"version": 3, "sample_rate": 1.0}], "sticky_header": "x-user-id"
            }
        })
    );
    assert_eq!(events[1].data["revision"], 2);
    assert_eq!(events[1].data["created"], false);
    assert_eq!(events[1].data["policy"]["shadows"][0]["sample_rate"], 0.25);
    assert_eq!(
        events[2].data,
        json!({"endpoint": "fraud-api", "revision": 2})
    );

    // A new endpoint of the same name starts again at revision 1.
    let (status, _, again) = put(app, "fraud-api", &policy(), &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["revision"], 1);
}

async fn putting_the_same_policy_again_changes_nothing_and_emits_nothing(app: &TestApp) {
    seed(app, 3).await;
    put(app, "e", &policy(), &[]).await;
    let before = app.state.store.last_event_id().await.unwrap();
    // Same policy, spelled differently: defaults written out, header in another case, float
    // noise on the weight.
    let same = json!({
        "model": "fraud", "stable": 1,
        "canary": {"version": 2, "weight": 0.020000000000000004 + 0.03},
        "shadows": [{"version": 3, "sample_rate": 1.0}],
        "sticky_header": "x-USER-id",
    });
    let (status, headers, body) = put(app, "e", &same, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(body["revision"], 1);
    assert_eq!(app.state.store.last_event_id().await.unwrap(), before);
}

async fn endpoint_listings_are_newest_first_and_paginated(app: &TestApp) {
    seed(app, 1).await;
    let one = json!({"model": "fraud", "stable": 1});
    for name in ["a", "b", "c", "d", "e"] {
        put(app, name, &one, &[]).await;
    }
    // Updating does not move an endpoint in the listing.
    put(
        app,
        "b",
        &json!({"model": "fraud", "stable": 1, "sticky_header": "x"}),
        &[],
    )
    .await;
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, page) = app.get("/api/v1/endpoints?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&page), ["e", "d"]);
    let mut seen = names(&page);
    let mut token = page["next_page_token"].as_str().map(String::from);
    while let Some(t) = token {
        let (_, page) = app
            .get(&format!("/api/v1/endpoints?limit=2&page_token={t}"))
            .await;
        seen.extend(names(&page));
        token = page["next_page_token"].as_str().map(String::from);
    }
    assert_eq!(seen, ["e", "d", "c", "b", "a"]);
    let (_, all) = app.get("/api/v1/endpoints").await;
    assert_eq!(names(&all), ["e", "d", "c", "b", "a"]);
    assert!(all.get("next_page_token").is_none());
    assert_eq!(all["items"][3]["sticky_header"], "x");
    for bad in [
        "/api/v1/endpoints?limit=0",
        "/api/v1/endpoints?limit=501",
        "/api/v1/endpoints?page_token=x",
    ] {
        let (status, problem) = app.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
}

async fn invalid_policies_are_refused_naming_the_field_and_emit_nothing(app: &TestApp) {
    seed(app, 4).await;
    let (status, _) = app
        .json_request(
            "PATCH",
            "/api/v1/models/fraud/versions/4",
            json!({"status": "archived"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = app.state.store.last_event_id().await.unwrap();
    let with = |patch: Value| {
        let mut body = policy();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "..bad",
            policy(),
            StatusCode::BAD_REQUEST,
            "invalid endpoint name",
        ),
        (
            "e",
            with(json!({"colour": "red"})),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "e",
            json!({"model": "fraud"}),
            StatusCode::BAD_REQUEST,
            "missing field `stable`",
        ),
        (
            "e",
            with(json!({"stable": "one"})),
            StatusCode::BAD_REQUEST,
            "stable",
        ),
        (
            "e",
            with(json!({"model": "a/b"})),
            StatusCode::BAD_REQUEST,
            "invalid model name",
        ),
        (
            "e",
            with(json!({"stable": 0})),
            StatusCode::BAD_REQUEST,
            "stable: versions are numbered from 1",
        ),
        (
            "e",
            with(json!({"canary": {"version": 2, "weight": 1.5}})),
            StatusCode::BAD_REQUEST,
            "canary.weight must be between 0 and 1",
        ),
        (
            "e",
            with(json!({"canary": {"version": 2, "weight": -0.1}})),
            StatusCode::BAD_REQUEST,
            "canary.weight must be between 0 and 1",
        ),
        (
            "e",
            with(json!({"canary": {"version": 2, "weight": 0.0005}})),
            StatusCode::BAD_REQUEST,
            "canary.weight must be a multiple of 0.001",
        ),
        (
            "e",
            with(json!({"canary": {"version": 1, "weight": 0.1}})),
            StatusCode::BAD_REQUEST,
            "canary.version: version 1 is already the stable version",
        ),
        (
            "e",
            with(json!({"shadows": [{"version": 1}]})),
            StatusCode::BAD_REQUEST,
            "shadows[0].version: version 1 is the stable version",
        ),
        (
            "e",
            with(json!({"shadows": [{"version": 2}]})),
            StatusCode::BAD_REQUEST,
            "shadows[0].version: version 2 is the canary version",
        ),
        (
            "e",
            with(json!({"shadows": [{"version": 3}, {"version": 3}]})),
            StatusCode::BAD_REQUEST,
            "shadows[1].version: version 3 is listed as a shadow more than once",
        ),
        (
            "e",
            with(json!({"shadows": [{"version": 3, "sample_rate": 1.2}]})),
            StatusCode::BAD_REQUEST,
            "shadows[0].sample_rate must be between 0 and 1",
        ),
        (
            "e",
            with(json!({"sticky_header": "x user"})),
            StatusCode::BAD_REQUEST,
            "sticky_header `x user` is not a valid HTTP header name",
        ),
        (
            "e",
            with(json!({"drift": {"metric": "psi", "threshold": 0}})),
            StatusCode::BAD_REQUEST,
            "drift.threshold must be a finite number above 0",
        ),
        (
            "e",
            with(json!({"drift": {"metric": "psi", "threshold": 0.2, "min_samples": 0}})),
            StatusCode::BAD_REQUEST,
            "drift.min_samples must be at least 1",
        ),
        (
            "e",
            with(json!({"drift": {"metric": "psi", "threshold": 0.2, "consecutive_windows": 0}})),
            StatusCode::BAD_REQUEST,
            "drift.consecutive_windows must be at least 1",
        ),
        (
            "e",
            with(json!({"drift": {"metric": "euclid", "threshold": 0.2}})),
            StatusCode::BAD_REQUEST,
            "unknown variant `euclid`",
        ),
        (
            "e",
            with(json!({"model": "nope"})),
            StatusCode::NOT_FOUND,
            "model `nope` does not exist",
        ),
        (
            "e",
            with(json!({"stable": 9})),
            StatusCode::NOT_FOUND,
            "stable: model `fraud` has no version 9",
        ),
        (
            "e",
            with(json!({"canary": {"version": 9, "weight": 0.1}})),
            StatusCode::NOT_FOUND,
            "canary.version: model `fraud` has no version 9",
        ),
        (
            "e",
            with(json!({"shadows": [{"version": 3}, {"version": 9}]})),
            StatusCode::NOT_FOUND,
            "shadows[1].version: model `fraud` has no version 9",
        ),
        (
            "e",
            with(json!({"canary": {"version": 4, "weight": 0.1}})),
            StatusCode::CONFLICT,
            "canary.version: version 4 of `fraud` is archived",
        ),
        (
            "e",
            with(json!({"shadows": [{"version": 4}]})),
            StatusCode::CONFLICT,
            "shadows[0].version: version 4 of `fraud` is archived",
        ),
    ];
    for (name, body, want, says) in cases {
        let (status, headers, problem) = put(app, name, &body, &[]).await;
        assert_eq!(status, want, "{body}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(
            detail(&problem).contains(says),
            "{body}: wanted `{says}` in {problem}"
        );
    }
    // Several problems are reported at once.
    let (_, _, problem) = put(
        app,
        "e",
        &with(json!({"canary": {"version": 2, "weight": 2}, "sticky_header": ""})),
        &[],
    )
    .await;
    assert!(
        detail(&problem).contains("canary.weight") && detail(&problem).contains("sticky_header"),
        "{problem}"
    );
    // Not JSON at all.
    let (status, _, _) = app
        .send(
            Request::put("/api/v1/endpoints/e")
                .body(Body::from(policy().to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was written, and no event escaped a rejected transaction.
    assert_eq!(app.state.store.last_event_id().await.unwrap(), before);
    let (status, _) = app.get("/api/v1/endpoints/e").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn if_match_and_if_none_match_make_writes_conditional(app: &TestApp) {
    seed(app, 3).await;
    let v = |stable: i64| json!({"model": "fraud", "stable": stable});

    // Create-only: the first succeeds, the second finds it existing.
    let (status, _, _) = put(app, "e", &v(1), &[("if-none-match", "*")]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, problem) = put(app, "e", &v(2), &[("if-none-match", "*")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    assert!(detail(&problem).contains("already exists"), "{problem}");

    // If-Match with the current revision applies, quoted or not.
    let (status, headers, _) = put(app, "e", &v(2), &[("if-match", "\"1\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], "\"2\"");
    let (status, _, _) = put(app, "e", &v(3), &[("if-match", "2")]).await;
    assert_eq!(status, StatusCode::OK);

    // A stale one is refused, naming the current revision.
    let before = app.state.store.last_event_id().await.unwrap();
    let (status, _, problem) = put(app, "e", &v(1), &[("if-match", "\"1\"")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(detail(&problem).contains("revision 3"), "{problem}");
    let (status, _) = delete(app, "e", &[("if-match", "\"2\"")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    // If-Match: * needs the endpoint to exist.
    let (status, _, problem) = put(app, "other", &v(1), &[("if-match", "*")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(detail(&problem).contains("does not exist"), "{problem}");
    let (status, _) = delete(app, "other", &[("if-match", "\"1\"")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    // Unreadable tags are the client's mistake.
    let (status, _, problem) = put(app, "e", &v(1), &[("if-match", "yesterday")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&problem).contains("If-Match"), "{problem}");
    assert_eq!(app.state.store.last_event_id().await.unwrap(), before);
    let (_, got) = app.get("/api/v1/endpoints/e").await;
    assert_eq!(
        (got["revision"].as_i64(), got["stable"].as_i64()),
        (Some(3), Some(3))
    );

    let (status, _, _) = put(app, "e", &v(1), &[("if-match", "*")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = delete(app, "e", &[("if-match", "\"4\"")]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

async fn concurrent_puts_without_if_match_leave_gapless_revisions_and_one_event_each(
    app: &TestApp,
) {
    seed(app, 2).await;
    let start = app.state.store.last_event_id().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let router = app.router.clone();
        let body = json!({
            "model": "fraud", "stable": 1,
            "canary": {"version": 2, "weight": f64::from(i + 1) / 1000.0},
        });
        tasks.push(tokio::spawn(async move {
            let response = tower::ServiceExt::oneshot(
                router,
                Request::put("/api/v1/endpoints/busy")
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
            response.status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    let (_, last) = app.get("/api/v1/endpoints/busy").await;
    assert_eq!(last["revision"], 20);
    let events = events_after(app, start).await;
    let revisions: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "endpoint.updated")
        .map(|e| e.data["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions, (1..=20).collect::<Vec<_>>());
    assert_eq!(events.len(), 20);
    // The last writer won, and its event says so.
    assert_eq!(events[19].data["policy"]["canary"], last["canary"]);
}

async fn a_version_an_endpoint_routes_to_cannot_be_archived(app: &TestApp) {
    seed(app, 3).await;
    put(app, "checkout", &policy(), &[]).await;
    put(app, "search", &json!({"model": "fraud", "stable": 1}), &[]).await;
    let archive = |v: i64| async move {
        app.json_request(
            "PATCH",
            &format!("/api/v1/models/fraud/versions/{v}"),
            json!({"status": "archived"}),
        )
        .await
    };
    let (status, problem) = archive(1).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        detail(&problem).contains("endpoints route traffic to it: checkout, search"),
        "{problem}"
    );
    for v in [2, 3] {
        let (status, problem) = archive(v).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(detail(&problem).contains("checkout"), "{problem}");
    }
    // Once no endpoint routes to it, it can go.
    put(
        app,
        "checkout",
        &json!({"model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.5}}),
        &[],
    )
    .await;
    let (status, v3) = archive(3).await;
    assert_eq!(status, StatusCode::OK, "{v3}");
    assert_eq!(v3["status"], "archived");
    delete(app, "checkout", &[]).await;
    let (status, _) = archive(2).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = archive(1).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(detail(&problem).contains("search") && !detail(&problem).contains("checkout"));
}

// ---------------------------------------------------------------------------------------------
// Reports and analysis

async fn the_series_sums_each_step_of_the_window_like_the_analysis(app: &TestApp) {
    seed(app, 2).await;
    let body = json!({"model": "fraud", "stable": 1, "canary": {"version": 2, "weight": 0.5}});
    let (status, _, _) = put(app, "fraud-api", &body, &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    let store = &app.state.store;
    let now = Utc::now();
    let ago = |s: i64| now - chrono::TimeDelta::seconds(s);
    // Two replicas in the step 1–2 minutes ago, one in the newest; none in between.
    for (replica, at, stable, canary) in [("a", 100, 30, 3), ("b", 70, 20, 7), ("a", 10, 60, 0)] {
        let r = report(
            replica,
            vec![
                (1, counters(stable, 1000.0, &[])),
                (2, counters(canary, 1000.0, &[("model_error", 1)])),
            ],
            None,
        );
        store
            .record_report_at("fraud-api", r, ago(at))
            .await
            .unwrap();
    }
    let (status, series) = app
        .get("/api/v1/endpoints/fraud-api/analysis/series?window=3m&step=1m")
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(series["window_seconds"], 180.0);
    assert_eq!(series["step_seconds"], 60.0);
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let of = |point: &Value, version: i64, field: &str| {
        point["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
            .map(|v| v[field].clone())
            .unwrap()
    };
    let stable: Vec<Value> = points.iter().map(|p| of(p, 1, "requests")).collect();
    assert_eq!(stable, [json!(0), json!(50), json!(60)]);
    let canary: Vec<Value> = points.iter().map(|p| of(p, 2, "errors")).collect();
    assert_eq!(canary, [json!(0), json!(2), json!(1)]);
    assert_eq!(of(&points[1], 2, "role"), "canary");
    // 10 answered + 2 failed in 60 s.
    assert_eq!(of(&points[1], 2, "requests_per_second"), json!(0.2));
    assert_eq!(of(&points[1], 2, "error_rate"), json!(2.0 / 12.0));
    assert_eq!(of(&points[0], 1, "latency_p50_ms"), Value::Null);

    for (query, names) in [
        (
            "window=1h&step=5s",
            "step `5s` makes 720 points over 3600 s; at most 360",
        ),
        (
            "window=3m&step=0",
            "step `0` must be between 1 s and the window (180 s)",
        ),
        ("window=2h&step=1m", "is longer than 3600 s"),
    ] {
        let (status, problem) = app
            .get(&format!(
                "/api/v1/endpoints/fraud-api/analysis/series?{query}"
            ))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert!(detail(&problem).contains(names), "{query}: {problem}");
    }
    let (status, _) = app.get("/api/v1/endpoints/nothing/analysis/series").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn reports_from_two_replicas_sum_into_the_analysis_of_the_window(app: &TestApp) {
    seed(app, 5).await;
    let body = json!({
        "model": "fraud", "stable": 1,
        "canary": {"version": 2, "weight": 0.1},
        "shadows": [{"version": 3}, {"version": 5, "sample_rate": 0.5}],
    });
    let (status, _, _) = put(app, "fraud-api", &body, &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    let store = &app.state.store;
    let now = Utc::now();
    let ago = |s: i64| now - chrono::TimeDelta::seconds(s);

    // Ten minutes ago, outside a 5-minute window: must not count.
    let ancient = report(
        "replica-c",
        vec![(1, counters(1000, 50_000.0, &[("model_error", 500)]))],
        Some("ancient trouble"),
    );
    store
        .record_report_at("fraud-api", ancient, ago(600))
        .await
        .unwrap();

    let mut canary_a = counters(10, 5000.0, &[]);
    canary_a.feedback.rewards = 4;
    canary_a.feedback.reward_sum = 3.0;
    canary_a.feedback.labels = 10;
    canary_a.feedback.correct = 7;
    let shadow_a = VersionCounters {
        shadow: Some(ShadowCounters {
            compared: 40,
            agreed: 36,
            classified: 40,
            abs_diff_sum: 0.4,
            rel_diff_sum: 0.8,
            abs_diff_buckets: vec![0, 0, 0, 10, 30],
            dropped: 2,
            ..ShadowCounters::default()
        }),
        ..VersionCounters::default()
    };
    let a1 = report(
        "replica-a",
        vec![
            (1, counters(90, 1000.0, &[("model_error", 2)])),
            (2, canary_a),
            (3, shadow_a),
        ],
        None,
    );
    store
        .record_report_at("fraud-api", a1, ago(240))
        .await
        .unwrap();

    let mut canary_b = counters(12, 5000.0, &[("model_error", 1)]);
    canary_b.feedback.rewards = 6;
    canary_b.feedback.reward_sum = 1.5;
    canary_b.feedback.labels = 10;
    canary_b.feedback.correct = 9;
    let shadow_b = VersionCounters {
        shadow: Some(ShadowCounters {
            compared: 60,
            agreed: 49,
            classified: 50,
            abs_diff_sum: 1.2,
            rel_diff_sum: 0.6,
            abs_diff_buckets: vec![0, 0, 0, 0, 50, 10],
            dropped: 1,
            errors: 1,
            ..ShadowCounters::default()
        }),
        ..VersionCounters::default()
    };
    let b1 = report(
        "replica-b",
        vec![
            (
                1,
                counters(110, 2000.0, &[("deadline", 3), ("model_error", 1)]),
            ),
            (2, canary_b),
            (3, shadow_b),
            // Still routed by a replica that has not caught up with the policy.
            (4, counters(7, 1000.0, &[])),
        ],
        None,
    );
    store
        .record_report_at("fraud-api", b1, ago(200))
        .await
        .unwrap();

    let a2 = report(
        "replica-a",
        vec![(1, counters(100, 1000.0, &[]))],
        Some("cannot load version 5: checksum mismatch"),
    );
    store
        .record_report_at("fraud-api", a2, ago(10))
        .await
        .unwrap();
    // The newest arrives over HTTP, as serving sends it.
    let b2 = report(
        "replica-b",
        vec![(1, counters(100, 2000.0, &[("model_error", 4)]))],
        None,
    );
    let (status, body) = post_report(app, "fraud-api", &serde_json::to_value(&b2).unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let five = analysis(app, "fraud-api", "5m").await;
    assert_eq!(five.endpoint, "fraud-api");
    assert_eq!(five.window_seconds, 300.0);
    assert_eq!(five.replicas, ["replica-a", "replica-b"]);
    assert_eq!(
        five.load_error.as_deref(),
        Some("cannot load version 5: checksum mismatch")
    );
    let roles: Vec<(i64, &str)> = five
        .versions
        .iter()
        .map(|v| (v.version, v.role.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            (1, "stable"),
            (2, "canary"),
            (3, "shadow"),
            (5, "shadow"),
            (4, "retired")
        ]
    );

    // Stable: 90 + 110 + 100 + 100 successes; 2 + 1 + 4 model errors and 3 deadlines.
    let stable = by_version(&five, 1);
    assert_eq!(stable.requests, 400);
    assert_eq!(stable.errors, 10);
    assert_eq!(stable.errors_by_class["model_error"], 7);
    assert_eq!(stable.errors_by_class["deadline"], 3);
    assert!(close(stable.error_rate, 10.0 / 410.0), "{stable:?}");
    // 190 latencies of 1 ms and 210 of 2 ms: the median and p99 (ranks 200 and 396) both lie in
    // the 2 ms bucket, after the 190 below it.
    assert!(
        close(
            stable.latency_p50_ms,
            interpolated_ms(2000.0, 190.0, 210.0, 200.0)
        ),
        "{stable:?}"
    );
    assert!(
        close(
            stable.latency_p99_ms,
            interpolated_ms(2000.0, 190.0, 210.0, 396.0)
        ),
        "{stable:?}"
    );
    assert!(stable.latency_p50_ms.unwrap() > 1.6 && stable.latency_p50_ms.unwrap() < 2.0);

    // Canary: 22 successes at 5 ms, 1 error; rewards 4.5 over 10; 16 of 20 labels right.
    let canary = by_version(&five, 2);
    assert_eq!((canary.requests, canary.errors), (22, 1));
    assert!(close(canary.error_rate, 1.0 / 23.0));
    assert!(close(
        canary.latency_p50_ms,
        interpolated_ms(5000.0, 0.0, 22.0, 11.0)
    ));
    assert!(close(canary.reward_mean, 0.45), "{canary:?}");
    assert_eq!(canary.reward_count, 10);
    assert!(close(canary.accuracy, 0.8));
    assert_eq!(canary.label_count, 20);

    // Shadow: 85 of 90 classified requests agreed; differences summed over 100 compared.
    let shadow = by_version(&five, 3);
    assert_eq!(shadow.requests, 0);
    assert_eq!(shadow.error_rate, None);
    assert!(close(shadow.shadow_agreement, 85.0 / 90.0), "{shadow:?}");
    assert!(close(shadow.shadow_mean_abs_diff, 0.016));
    assert!(close(shadow.shadow_mean_rel_diff, 0.014));
    assert_eq!(shadow.shadow_compared, 100);
    assert_eq!(shadow.shadow_dropped, 3);
    assert_eq!(shadow.shadow_diff_buckets, [0, 0, 0, 10, 80, 10]);

    // In the policy but never reported: present, all zeros.
    let quiet = by_version(&five, 5);
    assert_eq!((quiet.requests, quiet.shadow_compared), (0, 0));
    assert_eq!(quiet.latency_p50_ms, None);
    assert_eq!(by_version(&five, 4).requests, 7);

    // The last minute holds only the two newest reports.
    let minute = analysis(app, "fraud-api", "1m").await;
    assert_eq!(minute.window_seconds, 60.0);
    assert_eq!(minute.replicas, ["replica-a", "replica-b"]);
    let stable = by_version(&minute, 1);
    assert_eq!((stable.requests, stable.errors), (200, 4));
    assert!(close(stable.error_rate, 4.0 / 204.0));
    assert_eq!(by_version(&minute, 2).requests, 0);
    assert!(minute.versions.iter().all(|v| v.version != 4), "{minute:?}");

    // Fifteen minutes reach the old report too; plain seconds work as a window.
    let quarter = analysis(app, "fraud-api", "900").await;
    assert_eq!(quarter.replicas, ["replica-a", "replica-b", "replica-c"]);
    assert_eq!(by_version(&quarter, 1).requests, 1400);
    assert_eq!(by_version(&quarter, 1).errors, 510);
    assert_eq!(
        quarter.load_error.as_deref(),
        Some("cannot load version 5: checksum mismatch")
    );

    // Without a window: five minutes.
    let (_, default) = app.get("/api/v1/endpoints/fraud-api/analysis").await;
    assert_eq!(default["window_seconds"], 300.0);
}

async fn a_report_sent_again_under_its_id_is_counted_once(app: &TestApp) {
    seed(app, 3).await;
    put(app, "e", &policy(), &[]).await;
    let mut r = report("r", vec![(1, counters(5, 1000.0, &[]))], Some("it broke"));
    r.id = Some("0b6d2f6e-3c1a-4e8e-9a53-5d0f8c3f7a10".into());
    let body = serde_json::to_value(&r).unwrap();
    let before = events_after(app, 0).await.len();
    for _ in 0..3 {
        let (status, problem) = post_report(app, "e", &body).await;
        assert!(status.is_success(), "{status} {problem}");
    }
    let a = analysis(app, "e", "5m").await;
    assert_eq!(a.versions.iter().map(|v| v.requests).sum::<u64>(), 5);
    // Its `endpoint.degraded` was emitted once, the first time.
    assert_eq!(events_after(app, 0).await.len(), before + 1);
    // The same id from another replica is not a resend: refused, nothing counted.
    let mut other = r.clone();
    other.replica = "someone-else".into();
    let (status, _) = post_report(app, "e", &serde_json::to_value(&other).unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let a = analysis(app, "e", "5m").await;
    assert_eq!(a.versions.iter().map(|v| v.requests).sum::<u64>(), 5);
}

async fn roles_follow_the_current_policy_and_versions_left_out_are_retired(app: &TestApp) {
    seed(app, 3).await;
    put(app, "e", &policy(), &[]).await;
    let r = report(
        "r",
        vec![
            (1, counters(5, 1000.0, &[])),
            (2, counters(3, 1000.0, &[])),
            (3, VersionCounters::default()),
        ],
        None,
    );
    app.state.store.record_report("e", r).await.unwrap();
    let roles = |a: &EndpointAnalysis| -> Vec<(i64, String, u64)> {
        a.versions
            .iter()
            .map(|v| (v.version, v.role.clone(), v.requests))
            .collect()
    };
    let before = analysis(app, "e", "5m").await;
    assert_eq!(
        roles(&before),
        [
            (1, "stable".to_string(), 5),
            (2, "canary".to_string(), 3),
            (3, "shadow".to_string(), 0)
        ]
    );
    // The canary is promoted and the old stable kept as a shadow: the same counters, new roles.
    put(
        app,
        "e",
        &json!({"model": "fraud", "stable": 2, "shadows": [{"version": 1}]}),
        &[],
    )
    .await;
    let after = analysis(app, "e", "5m").await;
    assert_eq!(
        roles(&after),
        [
            (2, "stable".to_string(), 3),
            (1, "shadow".to_string(), 5),
            (3, "retired".to_string(), 0)
        ]
    );
}

async fn a_change_of_load_error_emits_one_degraded_or_recovered_event(app: &TestApp) {
    seed(app, 1).await;
    put(app, "e", &json!({"model": "fraud", "stable": 1}), &[]).await;
    let start = app.state.store.last_event_id().await.unwrap();
    let send = |replica: &'static str, error: Option<&'static str>| async move {
        let (status, body) = post_report(
            app,
            "e",
            &serde_json::to_value(report(replica, vec![], error)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    };
    send("r1", None).await;
    send("r1", Some("boom")).await;
    send("r1", Some("boom")).await;
    send("r2", Some("boom")).await;
    send("r1", Some("bang")).await;
    send("r1", Some("bang")).await;
    send("r1", Some("   ")).await;
    send("r1", None).await;
    send("r2", Some("boom")).await;
    let events = events_after(app, start).await;
    let seen: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.subject, "e");
            assert_eq!(e.data["endpoint"], "e");
            (e.kind.clone(), e.data["replica"].clone())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("endpoint.degraded".to_string(), json!("r1")),
            ("endpoint.degraded".to_string(), json!("r2")),
            ("endpoint.degraded".to_string(), json!("r1")),
            ("endpoint.recovered".to_string(), json!("r1")),
        ]
    );
    assert_eq!(events[0].data["error"], "boom");
    assert_eq!(events[2].data["error"], "bang");
    assert_eq!(events[3].data["previous_error"], "bang");
}

async fn bad_reports_and_windows_are_400_and_unknown_endpoints_404(app: &TestApp) {
    seed(app, 1).await;
    put(app, "e", &json!({"model": "fraud", "stable": 1}), &[]).await;
    let good =
        serde_json::to_value(report("r", vec![(1, counters(1, 1000.0, &[]))], None)).unwrap();
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let many: serde_json::Map<String, Value> = (1..=65)
        .map(|v| {
            (
                v.to_string(),
                serde_json::to_value(VersionCounters::default()).unwrap(),
            )
        })
        .collect();
    for (body, says) in [
        (with("replica", json!("")), "replica must not be empty"),
        (with("replica", json!("r".repeat(300))), "the limit is 256"),
        (with("interval_seconds", json!(0)), "interval_seconds"),
        (with("interval_seconds", json!(7200)), "interval_seconds"),
        (with("versions", Value::Object(many)), "at most 64 versions"),
        (with("versions", json!({"x": {}})), "versions"),
        (with("versions", json!({"1": {"requests": -1}})), "versions"),
        (json!({"replica": "r"}), "missing field"),
        (json!([1, 2]), "invalid JSON body"),
    ] {
        let (status, problem) = post_report(app, "e", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert!(
            detail(&problem).contains(says),
            "wanted `{says}` in {problem}"
        );
    }
    let (status, problem) = post_report(app, "ghost", &good).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(detail(&problem).contains("ghost"), "{problem}");
    let (status, _) = post_report(app, "..", &good).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/v1/endpoints/ghost/analysis").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for window in ["0", "-1m", "5d", "abc", "2h", "3601"] {
        let (status, problem) = app
            .get(&format!("/api/v1/endpoints/e/analysis?window={window}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{window}: {problem}");
        assert!(detail(&problem).contains("window"), "{problem}");
    }
    // Nothing of the refused reports was counted.
    let a = analysis(app, "e", "1h").await;
    assert!(a.replicas.is_empty(), "{a:?}");
}

async fn old_reports_are_pruned_in_the_background_at_most_once_a_minute(app: &TestApp) {
    seed(app, 1).await;
    put(app, "e", &json!({"model": "fraud", "stable": 1}), &[]).await;
    let store = &app.state.store;
    let now = Utc::now();
    let old = |minutes: i64| {
        store.record_report_at(
            "e",
            report("old", vec![(1, counters(1, 1000.0, &[]))], None),
            now - chrono::TimeDelta::minutes(minutes),
        )
    };
    for minutes in [61, 90, 120] {
        old(minutes).await.unwrap();
    }
    store
        .record_report(
            "e",
            report("new", vec![(1, counters(2, 1000.0, &[]))], None),
        )
        .await
        .unwrap();
    // The store looks further back than the API allows, which lets this test see old reports.
    let three_hours = Duration::from_secs(3 * 3600);
    let everything = store.endpoint_analysis("e", three_hours).await.unwrap();
    assert_eq!(everything.replicas, ["new", "old"]);
    assert_eq!(by_version(&everything, 1).requests, 5);
    assert_eq!(
        store
            .prune_reports(now - chrono::TimeDelta::minutes(100))
            .await
            .unwrap(),
        1
    );

    // The first report over HTTP starts a background prune of everything older than an hour.
    let (status, _) = post_report(
        app,
        "e",
        &serde_json::to_value(report("new", vec![], None)).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = store.endpoint_analysis("e", three_hours).await.unwrap();
        if left.replicas == ["new"] {
            assert_eq!(by_version(&left, 1).requests, 2);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old reports were not pruned: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Within the minute, no second prune starts.
    assert!(!store.prune_reports_soon(Duration::from_secs(3600)));
}

/// Several registries on one PostgreSQL: while one holds the prune's advisory lock, another's
/// prune leaves the reports to it; once it lets go (its connection closes when it dies), the
/// other prunes. (SQLite has one registry per database.)
async fn a_prune_is_left_to_the_registry_already_pruning(app: &TestApp) {
    let Some(url) = app.postgres_url() else {
        return;
    };
    seed(app, 1).await;
    put(app, "e", &json!({"model": "fraud", "stable": 1}), &[]).await;
    let store = &app.state.store;
    let now = Utc::now();
    store
        .record_report_at(
            "e",
            report("old", vec![(1, counters(1, 1000.0, &[]))], None),
            now - chrono::TimeDelta::minutes(90),
        )
        .await
        .unwrap();
    let cutoff = now - chrono::TimeDelta::minutes(60);
    let mut other = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(ferry_registry::store::JobKey::PruneReports as i64)
        .execute(&mut other)
        .await
        .unwrap();
    assert_eq!(store.prune_reports(cutoff).await.unwrap(), 0);
    let three_hours = Duration::from_secs(3 * 3600);
    let left = store.endpoint_analysis("e", three_hours).await.unwrap();
    assert_eq!(left.replicas, ["old"], "pruned beside the lock holder");
    // The holder dies: its session ends, and the lock with it. The server lets go of the lock
    // when the backend has exited, a moment after the client's Terminate: the next prunes
    // (one a second in a registry; here every 50 ms for up to 10 s) take it.
    <sqlx::AnyConnection as sqlx::Connection>::close(other)
        .await
        .unwrap();
    let mut pruned = 0;
    for _ in 0..200 {
        pruned = store.prune_reports(cutoff).await.unwrap();
        if pruned > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pruned, 1, "the prune never ran once the holder was gone");
}

async fn a_deleted_endpoint_forgets_its_reports(app: &TestApp) {
    seed(app, 1).await;
    let one = json!({"model": "fraud", "stable": 1});
    put(app, "e", &one, &[]).await;
    let r = report("r", vec![(1, counters(3, 1000.0, &[]))], Some("broken"));
    app.state.store.record_report("e", r).await.unwrap();
    delete(app, "e", &[]).await;
    let (status, _) = app.get("/api/v1/endpoints/e/analysis").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    put(app, "e", &one, &[]).await;
    let a = analysis(app, "e", "5m").await;
    assert!(a.replicas.is_empty(), "{a:?}");
    assert_eq!(a.load_error, None);
    assert_eq!(by_version(&a, 1).requests, 0);
    // The replica's old error is forgotten too: reporting it again is news.
    let start = app.state.store.last_event_id().await.unwrap();
    let r = report("r", vec![], Some("broken"));
    app.state.store.record_report("e", r).await.unwrap();
    let events = events_after(app, start).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "endpoint.degraded");
}

async fn the_client_drives_every_endpoint_route(app: &TestApp) {
    seed(app, 3).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let client = RegistryClient::new(&format!("http://{addr}"), None).unwrap();

    let mut policy = EndpointPolicy {
        model: "fraud".into(),
        stable: 1,
        canary: Some(CanaryPolicy {
            version: 2,
            weight: 0.1,
        }),
        shadows: vec![ShadowPolicy {
            version: 3,
            sample_rate: 0.5,
        }],
        sticky_header: None,
        drift: None,
        max_age_seconds: None,
        decay: None,
    };
    let created = client.create_endpoint("web", &policy).await.unwrap();
    assert_eq!(created.revision, 1);
    assert_eq!(created.policy, policy);
    let again = client.create_endpoint("web", &policy).await.unwrap_err();
    assert_eq!(again.status(), Some(412));

    policy.canary.as_mut().unwrap().weight = 0.2;
    let updated = client.put_endpoint("web", &policy, Some(1)).await.unwrap();
    assert_eq!(updated.revision, 2);
    let stale = client
        .put_endpoint("web", &policy, Some(1))
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(412));
    assert!(stale.to_string().contains("revision 2"), "{stale}");
    let missing = client
        .put_endpoint(
            "web",
            &EndpointPolicy {
                stable: 9,
                ..policy.clone()
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));

    assert_eq!(client.get_endpoint("web").await.unwrap(), updated);
    let page = client.list_endpoints(10, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0], updated);

    let r = report(
        "client",
        vec![(2, counters(4, 1000.0, &[("deadline", 1)]))],
        None,
    );
    client.post_report("web", &r).await.unwrap();
    let a = client
        .endpoint_analysis("web", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(a.window_seconds, 120.0);
    assert_eq!(a.replicas, ["client"]);
    assert_eq!(by_version(&a, 2).errors, 1);
    assert_eq!(by_version(&a, 2).role, "canary");
    let too_long = client
        .endpoint_analysis("web", Duration::from_secs(7200))
        .await
        .unwrap_err();
    assert_eq!(too_long.status(), Some(400));

    assert_eq!(
        client
            .delete_endpoint("web", Some(1))
            .await
            .unwrap_err()
            .status(),
        Some(412)
    );
    client.delete_endpoint("web", Some(2)).await.unwrap();
    assert_eq!(
        client.get_endpoint("web").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        client.post_report("web", &r).await.unwrap_err().status(),
        Some(404)
    );
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Roles

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_the_read_role_and_writes_the_write_role() {
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
        let policy = json!({"model": "fraud", "stable": 1}).to_string();
        let r = serde_json::to_string(&report("r", vec![], None)).unwrap();
        let call = |method: &str, uri: &str, body: Option<String>, token: Option<&str>| {
            let mut request = Request::builder().method(method).uri(uri);
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            if let Some(t) = token {
                request = request.header("authorization", format!("Bearer {t}"));
            }
            let request = request
                .body(body.map_or_else(Body::empty, Body::from))
                .unwrap();
            let app = &app;
            async move { app.send(request).await.0 }
        };
        let e = "/api/v1/endpoints/e";
        let reports = "/api/v1/endpoints/e/reports";
        let analysis = "/api/v1/endpoints/e/analysis";
        for (method, uri, body, token, want) in [
            (
                "PUT",
                e,
                Some(policy.clone()),
                None,
                StatusCode::UNAUTHORIZED,
            ),
            (
                "PUT",
                e,
                Some(policy.clone()),
                Some(READ),
                StatusCode::FORBIDDEN,
            ),
            (
                "PUT",
                e,
                Some(policy.clone()),
                Some(WRITE),
                StatusCode::CREATED,
            ),
            ("GET", e, None, None, StatusCode::UNAUTHORIZED),
            ("GET", e, None, Some(READ), StatusCode::OK),
            ("GET", "/api/v1/endpoints", None, Some(READ), StatusCode::OK),
            (
                "POST",
                reports,
                Some(r.clone()),
                Some(READ),
                StatusCode::FORBIDDEN,
            ),
            (
                "POST",
                reports,
                Some(r.clone()),
                Some(WRITE),
                StatusCode::ACCEPTED,
            ),
            ("GET", analysis, None, None, StatusCode::UNAUTHORIZED),
            ("GET", analysis, None, Some(READ), StatusCode::OK),
            ("DELETE", e, None, Some(READ), StatusCode::FORBIDDEN),
            ("DELETE", e, None, Some(WRITE), StatusCode::NO_CONTENT),
        ] {
            assert_eq!(
                call(method, uri, body, token).await,
                want,
                "{db:?} {method} {uri} {token:?}"
            );
        }
        app.cleanup().await;
    }
}
