//! The Open Inference Protocol v2 routes.

mod auth;
mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use metrics::RequestMetrics;

use crate::error::ServingError;
use crate::oip;
use crate::repository::{ServedModel, ServedVersion};
use crate::{ServingState, repository};

/// Bodies larger than this are decoded (and responses encoded) on a blocking thread: a few
/// hundred KiB of JSON take long enough to stall other requests on a reactor thread.
const INLINE_JSON_LIMIT: usize = 256 * 1024;

/// The `/v2` routes. Health routes are open; the others need a token when tokens are configured.
pub fn routes(state: ServingState) -> Router {
    let limit = state.config.max_request_bytes;
    let guarded = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/config",
            get(version_config),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(version_infer),
        )
        .route("/v2/repository/index", post(repository_index))
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(from_fn_with_state(
            state.tokens.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .merge(guarded)
        .with_state(state)
}

async fn server_metadata() -> Response {
    axum::Json(oip::server_metadata(env!("CARGO_PKG_VERSION"))).into_response()
}

async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready once the models to serve at start are loaded and warmed up.
async fn ready(State(state): State<ServingState>) -> StatusCode {
    if state.ready.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn find_model(state: &ServingState, name: &str) -> Result<Arc<ServedModel>, ServingError> {
    if let Some(model) = state.repository.get(name) {
        return Ok(model);
    }
    if let Some(reason) = state.repository.failure(name) {
        return Err(ServingError::NotReady(format!(
            "model `{name}` is not loaded: {reason}"
        )));
    }
    if !state.ready.load(Ordering::Acquire) {
        return Err(ServingError::NotReady(format!(
            "model `{name}` is not loaded yet; the server is starting"
        )));
    }
    Err(ServingError::NotFound(format!(
        "no model named `{}` is served here",
        ferry_registry::names::printable(name).trim_matches('`')
    )))
}

fn find_version(
    model: &ServedModel,
    version: Option<&str>,
) -> Result<Arc<ServedVersion>, ServingError> {
    model.version(version).cloned().ok_or_else(|| {
        ServingError::NotFound(format!(
            "version `{}` of model `{}` is not served here; served: {}",
            version.unwrap_or_default(),
            model.name,
            model
                .versions
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

async fn model_metadata(
    State(state): State<ServingState>,
    Path(name): Path<String>,
) -> Result<Response, ServingError> {
    metadata(&state, &name, None)
}

async fn version_metadata(
    State(state): State<ServingState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ServingError> {
    metadata(&state, &name, Some(&version))
}

fn metadata(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
) -> Result<Response, ServingError> {
    let model = find_model(state, name)?;
    let served = find_version(&model, version)?;
    let versions: Vec<String> = model.versions.keys().cloned().collect();
    Ok(axum::Json(oip::model_metadata(
        name,
        &versions,
        served.model.signature(),
    ))
    .into_response())
}

async fn model_ready(
    State(state): State<ServingState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ServingError> {
    let model = find_model(&state, &name)?;
    find_version(&model, None)?;
    Ok(StatusCode::OK)
}

async fn version_ready(
    State(state): State<ServingState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ServingError> {
    let model = find_model(&state, &name)?;
    find_version(&model, Some(&version))?;
    Ok(StatusCode::OK)
}

async fn model_config(
    State(state): State<ServingState>,
    Path(name): Path<String>,
) -> Result<Response, ServingError> {
    config(&state, &name, None)
}

async fn version_config(
    State(state): State<ServingState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ServingError> {
    config(&state, &name, Some(&version))
}

fn config(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
) -> Result<Response, ServingError> {
    let model = find_model(state, name)?;
    let served = find_version(&model, version)?;
    let runtime = &served.model;
    let max_batch = if runtime.is_batching() {
        runtime.max_batch_size()
    } else {
        0
    };
    Ok(axum::Json(oip::triton_config(
        name,
        runtime.signature(),
        max_batch,
        runtime.options().max_queue_delay,
    ))
    .into_response())
}

async fn repository_index(State(state): State<ServingState>) -> Response {
    let snapshot = state.repository.snapshot();
    let mut entries: Vec<oip::RepositoryEntry> = Vec::new();
    let mut names: Vec<&String> = snapshot.keys().collect();
    names.sort();
    for name in names {
        let model = &snapshot[name];
        for version in model.versions.keys() {
            entries.push(oip::RepositoryEntry {
                name: name.clone(),
                version: version.clone(),
                state: "READY".into(),
                reason: model.last_error.clone().unwrap_or_default(),
            });
        }
    }
    let mut failed: Vec<(String, String)> = state.repository.failures().into_iter().collect();
    failed.sort();
    for (name, reason) in failed {
        if !snapshot.contains_key(&name) {
            entries.push(oip::RepositoryEntry {
                name,
                version: String::new(),
                state: "UNAVAILABLE".into(),
                reason,
            });
        }
    }
    axum::Json(entries).into_response()
}

async fn infer(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(&state, &name, None, body).await
}

async fn version_infer(
    State(state): State<ServingState>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(&state, &name, Some(&version), body).await
}

async fn run_infer(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let served = match find_model(state, name).and_then(|m| find_version(&m, version)) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let result = predict(state, name, &served, body, started).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.class(),
    };
    state.metrics.observe(
        name,
        &served.version,
        outcome,
        started.elapsed().as_secs_f64(),
    );
    match result {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn predict(
    state: &ServingState,
    name: &str,
    served: &repository::ServedVersion,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<Vec<u8>, ServingError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServingError::PayloadTooLarge(format!(
                "the request body is larger than {} bytes",
                state.config.max_request_bytes
            ))
        } else {
            ServingError::BadRequest(format!("cannot read the request body: {}", e.body_text()))
        }
    })?;
    let model = served.model.clone();
    let decoded = if body.len() <= INLINE_JSON_LIMIT {
        oip::decode_infer_request(&body, model.signature())
    } else {
        let signature = model.signature().clone();
        tokio::task::spawn_blocking(move || oip::decode_infer_request(&body, &signature))
            .await
            .map_err(|e| ServingError::BadRequest(format!("decoding failed: {e}")))?
    }
    .map_err(|e| ServingError::BadRequest(e.to_string()))?;
    let deadline = started + state.config.request_timeout;
    let outputs = model
        .infer(decoded.inputs, decoded.outputs, deadline)
        .await?;
    let id = decoded.id;
    let version = served.version.clone();
    let big = outputs.iter().map(|t| t.data().len()).sum::<usize>() > INLINE_JSON_LIMIT / 8;
    if big {
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            oip::encode_infer_response(&name, &version, id.as_deref(), &outputs)
        })
        .await
        .map_err(|e| ServingError::BadRequest(format!("encoding failed: {e}")))
    } else {
        Ok(oip::encode_infer_response(
            name,
            &version,
            id.as_deref(),
            &outputs,
        ))
    }
}
