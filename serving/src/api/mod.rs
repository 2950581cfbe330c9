//! The Open Inference Protocol v2 routes.

mod auth;
mod extract;
mod feedback;
mod grpc;
mod infer;
mod metrics;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use extract::Path;
use tower::ServiceBuilder;

pub use metrics::{DriftGauges, FeedbackIndexMetrics, RequestMetrics};

use crate::ServingState;
use crate::error::ServingError;
use crate::oip;
use crate::repository::ServedModel;
use crate::served::ServedVersion;

/// The `/v2` routes. Health routes are open; the others need a token when tokens are configured.
pub fn routes(state: ServingState) -> Router {
    let limit = state.config.max_request_bytes;
    let guarded = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/infer", post(infer::infer))
        .route("/v2/models/{name}/feedback", post(feedback::feedback))
        .route("/v2/models/{name}/stats", get(stats::stats))
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
            post(infer::version_infer),
        )
        .route("/v2/repository/index", post(repository_index))
        // One `route_layer` for both: each `Router::layer`/`route_layer` boxes every route again,
        // and a request pays for each boxing (bench/README.md, "Where the rest goes").
        .route_layer(
            ServiceBuilder::new()
                .layer(auth::RequireTokenLayer::new(state.tokens.clone()))
                .layer(DefaultBodyLimit::max(limit)),
        );
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .merge(guarded)
        .merge(grpc::routes())
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

pub(crate) fn find_model(
    state: &ServingState,
    name: &str,
) -> Result<Arc<ServedModel>, ServingError> {
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
        ferry_api::names::printable(name).trim_matches('`')
    )))
}

pub(crate) fn find_version(
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
    Ok(axum::Json(metadata_document(state, name, version)?).into_response())
}

/// The model metadata of `name` (at `version`), whichever protocol asks.
pub(crate) fn metadata_document(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
) -> Result<oip::ModelMetadata, ServingError> {
    let model = find_model(state, name)?;
    let served = find_version(&model, version)?;
    let versions: Vec<String> = model.versions.keys().cloned().collect();
    Ok(oip::model_metadata(
        name,
        &versions,
        served.model.signature(),
    ))
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
    Ok(axum::Json(config_document(state, name, version)?).into_response())
}

/// The Triton configuration of `name` (at `version`), whichever protocol asks.
pub(crate) fn config_document(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
) -> Result<oip::TritonConfig, ServingError> {
    let model = find_model(state, name)?;
    let served = find_version(&model, version)?;
    let runtime = &served.model;
    let max_batch = if runtime.is_batching() {
        runtime.max_batch_size()
    } else {
        0
    };
    Ok(oip::triton_config(
        name,
        runtime.signature(),
        max_batch,
        runtime.options().max_queue_delay,
    ))
}

async fn repository_index(State(state): State<ServingState>) -> Response {
    axum::Json(repository_entries(&state)).into_response()
}

/// Every served model version (`READY`) and every model that failed to load (`UNAVAILABLE`),
/// by name, whichever protocol asks.
pub(crate) fn repository_entries(state: &ServingState) -> Vec<oip::RepositoryEntry> {
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
    entries
}
