//! Test harness: the registry router over a real database (SQLite file, or a fresh PostgreSQL
//! database) and a real blob store, driven with `tower::ServiceExt::oneshot`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use ferry_api::http::metrics::HttpMetrics;
use ferry_registry::{AppState, BlobStore, Config, MetadataStore};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const MLP: &[u8] = include_bytes!("../../../tests/fixtures/mlp.onnx");
pub const TWO_INPUTS: &[u8] = include_bytes!("../../../tests/fixtures/two_inputs.onnx");
pub const INT64: &[u8] = include_bytes!("../../../tests/fixtures/int64.onnx");
pub const FIXED: &[u8] = include_bytes!("../../../tests/fixtures/fixed_shape.onnx");
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
pub const DATA_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Which blob store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    Local,
    Memory,
    S3,
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

pub use ferry_api::testing::in_ci;

/// The PostgreSQL server used for tests: `FERRY_TEST_POSTGRES_URL`, by default the local one.
fn postgres_admin_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// S3 settings from `FERRY_TEST_S3_ENDPOINT` / `FERRY_TEST_S3_BUCKET` (set by scripts/test.sh).
pub fn s3_settings() -> Option<(String, String)> {
    let endpoint = std::env::var("FERRY_TEST_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("FERRY_TEST_S3_BUCKET").ok()?;
    Some((endpoint, bucket))
}

pub fn s3_options(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("aws_endpoint".into(), endpoint.to_string()),
        ("aws_allow_http".into(), "true".into()),
        ("aws_region".into(), "us-east-1".into()),
        (
            "aws_access_key_id".into(),
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "ferrytest".into()),
        ),
        (
            "aws_secret_access_key".into(),
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "ferrytestsecret".into()),
        ),
    ]
}

/// Skips (returns None) when a backend is absent outside CI; fails inside CI.
fn unavailable(what: &str, why: &str) -> Option<TestApp> {
    if in_ci() {
        panic!("{what} is required when CI=true but is unavailable: {why}");
    }
    skipped(&format!(
        "{what} unavailable ({why}); scripts/test.sh starts it"
    ));
    None
}

impl TestApp {
    /// The URL of this app's PostgreSQL database; `None` on SQLite.
    #[allow(dead_code)]
    pub fn postgres_url(&self) -> Option<String> {
        let (admin, name) = self.pg.as_ref()?;
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(&format!("/{name}"));
        Some(url.to_string())
    }

    pub async fn new(db: Db, blobs: Blobs) -> Option<Self> {
        Self::with_config(db, blobs, Config::default()).await
    }

    pub async fn with_config(db: Db, blobs: Blobs, config: Config) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("ferry.db").display()),
                None,
            ),
            Db::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
                let created = async {
                    sqlx::any::install_default_drivers();
                    let mut conn =
                        <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await?;
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                }
                .await;
                if let Err(e) = created {
                    return unavailable("PostgreSQL", &e.to_string());
                }
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                (url.to_string(), Some((admin, name)))
            }
        };
        let store = MetadataStore::connect(&url, 8).await.unwrap();
        store.migrate().await.unwrap();
        let blob_store = match blobs {
            Blobs::Local => {
                BlobStore::open(dir.path().join("blobs").to_str().unwrap(), &[]).unwrap()
            }
            Blobs::Memory => BlobStore::in_memory(),
            Blobs::S3 => {
                let Some((endpoint, bucket)) = s3_settings() else {
                    return unavailable("the S3 server", "FERRY_TEST_S3_ENDPOINT is not set");
                };
                let prefix = uuid::Uuid::new_v4().simple().to_string();
                BlobStore::open(&format!("s3://{bucket}/{prefix}"), &s3_options(&endpoint)).unwrap()
            }
        };
        let prometheus = Arc::new(prometheus::Registry::new());
        let http = HttpMetrics::register(&prometheus).unwrap();
        let state = AppState::new(store, blob_store, config, prometheus, http).unwrap();
        let router = client_router(state.clone());
        Some(TestApp {
            router,
            state,
            dir,
            pg,
        })
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(Request::get(uri).body(Body::empty()).unwrap())
            .await;
        (status, json(&body))
    }

    pub async fn json_request(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        (status, json(&body))
    }

    /// Uploads `model` with optional metadata and idempotency key.
    pub async fn upload(
        &self,
        name: &str,
        model: &[u8],
        metadata: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut parts: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(m) = &metadata {
            parts.push(("metadata", m.to_string().into_bytes()));
        }
        parts.push(("model", model.to_vec()));
        let (status, _, body) = self.upload_parts(name, &parts, key).await;
        (status, json(&body))
    }

    pub async fn upload_parts(
        &self,
        name: &str,
        parts: &[(&str, Vec<u8>)],
        key: Option<&str>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let (content_type, body) = multipart(parts);
        let mut request = Request::post(format!("/api/v1/models/{name}/versions"))
            .header("content-type", content_type);
        if let Some(k) = key {
            request = request.header("idempotency-key", k);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// Every object in the blob store, by key.
    pub async fn objects(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .state
            .blobs
            .list(self.state.blobs.root())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Files on disk under the local blob folder, including staging files object_store hides.
    pub fn files_on_disk(&self) -> Vec<String> {
        let root = self.dir.path().join("blobs");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// Drops the PostgreSQL database of this test.
    pub async fn cleanup(self) {
        self.state.store.close().await;
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

/// The registry's router as Ferry's own client calls it: every request carries
/// `x-ferry-client`, without which an open registry refuses a write sent as a form (that rule
/// is tested in tests/security.rs and `ferry_api::http::open_mode`).
pub fn client_router(state: AppState) -> Router {
    ferry_registry::router(state).layer(axum::middleware::map_request(
        |mut request: Request<Body>| async move {
            request.headers_mut().insert(
                ferry_api::CLIENT_HEADER,
                axum::http::HeaderValue::from_static("test"),
            );
            request
        },
    ))
}

pub fn json(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

pub const BOUNDARY: &str = "ferry-test-boundary-7d1e";

/// A multipart/form-data body with these named parts.
pub fn multipart(parts: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let (disposition, ctype) = if *name == "model" {
            (
                format!("form-data; name=\"{name}\"; filename=\"model.onnx\""),
                "application/octet-stream",
            )
        } else {
            (format!("form-data; name=\"{name}\""), "application/json")
        };
        body.extend_from_slice(
            format!("Content-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

pub fn lineage() -> Value {
    serde_json::json!({
        "git_commit": COMMIT,
        "git_repo": "https://example.com/ml/fraud.git",
        "data": [{"uri": "s3://datasets/fraud/train.parquet", "sha256": DATA_SHA}],
        "params": {"lr": 0.01, "optimizer": "adam"},
        "metrics": {"auc": 0.93},
        "tags": {"team": "risk"},
        "description": "first"
    })
}

/// Generates one `#[tokio::test]` per backend for an `async fn(TestApp)` check.
#[macro_export]
macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(app) = $crate::common::TestApp::new($crate::common::Db::Sqlite, $crate::common::Blobs::Local).await {
                        super::$check(&app).await;
                        app.cleanup().await;
                    }
                }
            )*
        }
        mod postgres_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(app) = $crate::common::TestApp::new($crate::common::Db::Postgres, $crate::common::Blobs::Memory).await {
                        super::$check(&app).await;
                        app.cleanup().await;
                    }
                }
            )*
        }
    };
}

pub use ferry_api::testing::skipped;
