//! Settings that change behaviour: upload limits, lineage policy, tokens; and the system routes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use ferry_api::http::auth::Tokens;
use ferry_registry::Config;
use serde_json::json;

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens() -> Tokens {
    Tokens::parse([
        format!("read:{READ}").as_str(),
        format!("write:{WRITE}").as_str(),
        format!("admin:{ADMIN}").as_str(),
    ])
    .unwrap()
}

async fn app_with(config: Config) -> TestApp {
    TestApp::with_config(Db::Sqlite, Blobs::Local, config)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_over_the_size_limit_is_413_and_leaves_nothing_behind() {
    let mut config = Config::default();
    config.upload.max_model_bytes = 100_000;
    let app = app_with(config).await;
    let (status, problem) = app.upload("big", MLP, None, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("100000"));
    let (status, _) = app.get("/api/v1/models/big").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.files_on_disk().is_empty(), "{:?}", app.files_on_disk());
    // A smaller model still goes through.
    let (status, _) = app.upload("small", TWO_INPUTS, None, None).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_oversized_metadata_part_is_413() {
    let mut config = Config::default();
    config.upload.max_metadata_bytes = 1024;
    let app = app_with(config).await;
    let big = json!({"description": "x".repeat(5000)});
    let (status, _) = app.upload("m", MLP, Some(big), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_client_that_stalls_mid_upload_is_dropped_after_the_idle_timeout() {
    let mut config = Config::default();
    config.upload.idle_timeout = Duration::from_millis(300);
    let app = app_with(config).await;
    let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
    let head = bytes::Bytes::copy_from_slice(&body[..body.len() / 2]);
    let tail = bytes::Bytes::copy_from_slice(&body[body.len() / 2..]);
    let stream = futures::stream::unfold(0, move |step| {
        let (head, tail) = (head.clone(), tail.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(head), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Some((Ok(tail), 2))
                }
                _ => None,
            }
        }
    });
    let (status, _, body) = app
        .send(
            Request::post("/api/v1/models/slow/versions")
                .header("content-type", ctype)
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.files_on_disk().is_empty(), "{:?}", app.files_on_disk());
}

/// A body whose bytes are sent as `chunks` says: the first at once, then one every `every`.
fn trickle(
    chunks: Vec<bytes::Bytes>,
    every: Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(
        (chunks.into_iter(), true),
        move |(mut rest, first)| async move {
            let next = rest.next()?;
            if !first {
                tokio::time::sleep(every).await;
            }
            Some((Ok(next), (rest, false)))
        },
    )
}

#[tokio::test]
async fn an_upload_slower_than_the_minimum_rate_is_dropped_and_leaves_nothing() {
    let mut config = Config::default();
    config.upload.min_rate = 1024 * 1024;
    config.upload.min_rate_after = Duration::from_millis(500);
    let app = app_with(config).await;
    let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
    // 64-byte chunks every 50 ms: never idle for long, far below 1 MiB/s.
    let chunks: Vec<bytes::Bytes> = body.chunks(64).map(bytes::Bytes::copy_from_slice).collect();
    let (status, _, answer) = app
        .send(
            Request::post("/api/v1/models/trickle/versions")
                .header("content-type", ctype)
                .body(Body::from_stream(trickle(
                    chunks,
                    Duration::from_millis(50),
                )))
                .unwrap(),
        )
        .await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{answer}");
    assert!(answer.contains("below this registry's minimum"), "{answer}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.files_on_disk().is_empty(), "{:?}", app.files_on_disk());
    let (status, _) = app.get("/api/v1/models/trickle").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_concurrency_cap_get_a_429_and_a_finished_one_frees_its_place() {
    let mut config = Config::default();
    config.upload.max_concurrent = 1;
    let app = app_with(config).await;
    let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
    let head = bytes::Bytes::copy_from_slice(&body[..body.len() / 2]);
    let tail = bytes::Bytes::copy_from_slice(&body[body.len() / 2..]);
    // The first upload sends half, then waits for the test to let it finish.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let slow = futures::stream::unfold(
        (Some(head), Some(tail), Some(released)),
        |state| async move {
            match state {
                (Some(head), tail, released) => {
                    Some((Ok::<_, std::io::Error>(head), (None, tail, released)))
                }
                (None, Some(tail), Some(released)) => {
                    let _ = released.await;
                    Some((Ok(tail), (None, None, None)))
                }
                _ => None,
            }
        },
    );
    let router = app.router.clone();
    let first = tokio::spawn(tower::ServiceExt::oneshot(
        router,
        Request::post("/api/v1/models/first/versions")
            .header("content-type", ctype.clone())
            .body(Body::from_stream(slow))
            .unwrap(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.state.uploads.available_permits() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first upload never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, headers, answer) = app
        .send(
            Request::post("/api/v1/models/second/versions")
                .header("content-type", ctype.clone())
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(answer.contains("--max-concurrent-uploads"), "{answer}");
    assert_eq!(headers["retry-after"], "1");
    release.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let (status, v) = app.upload("second", MLP, None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn require_lineage_refuses_versions_without_commit_and_data_naming_what_is_missing() {
    let mut config = Config::default();
    config.upload.require_lineage = true;
    let app = app_with(config).await;
    let (status, problem) = app.upload("m", MLP, None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("git_commit") && detail.contains("data"),
        "{detail}"
    );
    let (status, problem) = app
        .upload("m", MLP, Some(json!({"git_commit": COMMIT})), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!problem["detail"].as_str().unwrap().contains("git_commit"));
    let (status, _) = app.upload("m", MLP, Some(lineage()), None).await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.files_on_disk().len(), 1, "{:?}", app.files_on_disk());
}

async fn status_with(
    app: &TestApp,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> StatusCode {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    app.send(request).await.0
}

#[tokio::test]
async fn tokens_gate_reads_and_writes_by_role() {
    let config = Config {
        tokens: tokens(),
        ..Config::default()
    };
    let app = app_with(config).await;
    // Seed through the store: uploads need a token too.
    let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
    let (status, _, _) = app
        .send(
            Request::post("/api/v1/models/m/versions")
                .header("content-type", ctype.clone())
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = app
        .send(
            Request::post("/api/v1/models/m/versions")
                .header("content-type", ctype.clone())
                .header("authorization", format!("Bearer {READ}"))
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = app
        .send(
            Request::post("/api/v1/models/m/versions")
                .header("content-type", ctype)
                .header("authorization", format!("Bearer {WRITE}"))
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let alias = Some(json!({"version": 1}));
    let cases: Vec<(&str, &str, Option<serde_json::Value>, [StatusCode; 5])> = vec![
        // method, uri, body, [none, wrong, read, write, admin]
        (
            "GET",
            "/api/v1/models",
            None,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
            ],
        ),
        (
            "GET",
            "/api/v1/models/m/versions/1/artifact",
            None,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
            ],
        ),
        (
            "GET",
            "/api/v1/events",
            None,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
            ],
        ),
        (
            "PUT",
            "/api/v1/models/m/aliases/prod",
            alias.clone(),
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::OK,
                StatusCode::OK,
            ],
        ),
        (
            "PATCH",
            "/api/v1/models/m/versions/1",
            Some(json!({"status": "active"})),
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::OK,
                StatusCode::OK,
            ],
        ),
        ("GET", "/healthz", None, [StatusCode::OK; 5]),
        ("GET", "/readyz", None, [StatusCode::OK; 5]),
        ("GET", "/metrics", None, [StatusCode::OK; 5]),
    ];
    for (method, uri, body, expected) in cases {
        for (token, want) in [
            None,
            Some("not-a-valid-token-at-all"),
            Some(READ),
            Some(WRITE),
            Some(ADMIN),
        ]
        .into_iter()
        .zip(expected)
        {
            let got = status_with(&app, method, uri, token, body.clone()).await;
            assert_eq!(got, want, "{method} {uri} with {token:?}");
        }
    }
    // The 401 says how to authenticate, and the 403 which role is needed.
    let (status, headers, body) = app
        .send(Request::get("/api/v1/models").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(json(&body)["status"], 401);
    let (_, _, body) = app
        .send(
            Request::delete("/api/v1/models/m/aliases/prod")
                .header("authorization", format!("Bearer {READ}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        json(&body)["detail"]
            .as_str()
            .unwrap()
            .contains("`write` role")
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = app_with(Config::default()).await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["database"], "ok");
    app.upload("m", MLP, None, None).await;
    let (status, headers, body) = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains(r#"ferry_http_requests_total{method="POST",route="/api/v1/models/{name}/versions",status="201"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferry_registry_uploads_total{outcome="created"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("ferry_http_request_duration_seconds_bucket"),
        "{text}"
    );
    // Responses carry a request id, echoed when the client sends one.
    let (_, headers, _) = app
        .send(
            Request::get("/healthz")
                .header("x-request-id", "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(headers["x-request-id"], "abc-123");
    let (_, headers, _) = app
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(headers["x-request-id"].len(), 36);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = app_with(Config::default()).await;
    app.state.store.close().await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["database"], "unavailable");
    // A 5xx never leaks the cause to the client.
    let (status, problem) = app.get("/api/v1/models").await;
    assert!(status.is_server_error());
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("pool"),
        "{problem}"
    );
}
