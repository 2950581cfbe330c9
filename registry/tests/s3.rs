//! The registry against a real S3-compatible server (s3s-fs, started by scripts/test.sh; it
//! checks SigV4 signatures), on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;

async fn s3_app(db: Db) -> Option<TestApp> {
    TestApp::new(db, Blobs::S3).await
}

#[tokio::test]
async fn models_round_trip_through_s3_on_sqlite() {
    if let Some(app) = s3_app(Db::Sqlite).await {
        round_trip(&app).await;
        app.cleanup().await;
    }
}

#[tokio::test]
async fn models_round_trip_through_s3_on_postgres() {
    if let Some(app) = s3_app(Db::Postgres).await {
        round_trip(&app).await;
        app.cleanup().await;
    }
}

async fn round_trip(app: &TestApp) {
    // Staged path (no declared hash), then the direct path (declared hash), then a dedup.
    let (status, v1) = app.upload("s3m", MLP, Some(lineage()), None).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    let declared = json!({"sha256": v1["sha256"]});
    let (status, v2) = app.upload("s3m", TWO_INPUTS, None, Some("k")).await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    let (status, v3) = app.upload("s3m", MLP, Some(declared), None).await;
    assert_eq!(status, StatusCode::CREATED, "{v3}");
    assert_eq!(v3["sha256"], v1["sha256"]);
    let objects = app.objects().await;
    assert_eq!(
        objects.len(),
        2,
        "one object per distinct content, no staging leftovers: {objects:?}"
    );
    assert!(
        objects.iter().all(|k| k.contains("/blobs/sha256/")),
        "{objects:?}"
    );
    for (v, bytes) in [(1, MLP), (2, TWO_INPUTS), (3, MLP)] {
        let (status, _, body) = app
            .send(
                Request::get(format!("/api/v1/models/s3m/versions/{v}/artifact"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], bytes);
    }
    let (status, _, body) = app
        .send(
            Request::get("/api/v1/models/s3m/versions/1/artifact")
                .header("range", "bytes=10-19")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], &MLP[10..20]);
    // A rejected upload leaves nothing in the bucket.
    let (status, _) = app.upload("s3m", b"not onnx at all", None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.objects().await.len(), 2);
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_model_larger_than_one_part_uploads_in_parts() {
    // 12 MiB crosses the 5 MiB part size twice: a real multipart upload on S3.
    let Some(app) = s3_app(Db::Sqlite).await else {
        return;
    };
    let model = large_model(12 * 1024 * 1024);
    let (status, v) = app.upload("big", &model, None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, _, body) = app
        .send(
            Request::get("/api/v1/models/big/versions/1/artifact")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body[..] == model[..], "the downloaded bytes differ");
    app.cleanup().await;
}

/// A valid ONNX model (Identity on `x`) carrying an initializer of `weights` bytes.
fn large_model(weights: usize) -> Vec<u8> {
    let _ = weights;
    let mut out = Vec::new();
    onnx_bytes::write_identity_model(&mut out, weights);
    out
}

#[path = "../../tests/support/onnx_bytes.rs"]
mod onnx_bytes;
