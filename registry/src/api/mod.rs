//! The registry's HTTP API (`/api/v1`), health endpoints and metrics, in one router.

mod artifact;
mod endpoints;
mod events;
pub mod extract;
mod features;
mod models;
pub mod multipart;
mod system;
mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

use crate::AppState;
use crate::auth::require_token;
use crate::error::Error;

/// Largest JSON body any route accepts.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The registry's routes, without the process-wide layers ([`ferry_api::http::layers::common`]), so that
/// `ferry up` can merge them with serving's routes under one set of layers.
pub fn routes(state: AppState) -> Router {
    let config = state.config.clone();
    // Quick JSON routes get a deadline; a stuck database answers 503 instead of hanging.
    let quick = Router::new()
        .route("/api/v1/whoami", get(system::whoami))
        .route("/api/v1/models", get(models::list_models))
        .route("/api/v1/models/{name}", get(models::get_model))
        .route("/api/v1/models/{name}/versions", get(models::list_versions))
        .route(
            "/api/v1/models/{name}/versions/{version}",
            get(models::get_version).patch(models::update_version),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/profile",
            get(models::get_profile),
        )
        .route(
            "/api/v1/models/{name}/aliases/{alias}",
            get(models::get_alias)
                .put(models::set_alias)
                .delete(models::delete_alias),
        )
        .route("/api/v1/endpoints", get(endpoints::list_endpoints))
        .route(
            "/api/v1/endpoints/{name}",
            get(endpoints::get_endpoint)
                .put(endpoints::put_endpoint)
                .delete(endpoints::delete_endpoint),
        )
        .route(
            "/api/v1/endpoints/{name}/reports",
            axum::routing::post(endpoints::post_report),
        )
        .route(
            "/api/v1/endpoints/{name}/feedback",
            axum::routing::post(endpoints::post_feedback),
        )
        .route(
            "/api/v1/endpoints/{name}/rollout-events",
            axum::routing::post(endpoints::post_rollout_event),
        )
        .route(
            "/api/v1/endpoints/{name}/analysis",
            get(endpoints::get_analysis),
        )
        .route(
            "/api/v1/endpoints/{name}/analysis/series",
            get(endpoints::get_analysis_series),
        )
        .route(
            "/api/v1/endpoints/{name}/histograms",
            get(endpoints::get_histograms),
        )
        .merge(webhooks::routes())
        .merge(features::routes())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ));
    // Streaming routes bound themselves: uploads by an idle timeout, downloads by the client's
    // pace, long-polls by `max_event_wait`.
    let streaming = Router::new()
        .route(
            "/api/v1/models/{name}/versions",
            axum::routing::post(models::upload).layer(DefaultBodyLimit::max(
                usize::try_from(
                    config
                        .upload
                        .max_model_bytes
                        .saturating_add(config.upload.max_metadata_bytes as u64)
                        .saturating_add(64 * 1024),
                )
                .unwrap_or(usize::MAX),
            )),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/artifact",
            get(artifact::download),
        )
        .route("/api/v1/events", get(events::poll))
        .route("/api/v1/events/stream", get(events::stream));
    let api = quick
        .merge(streaming)
        .route_layer(from_fn_with_state(
            state.config.tokens.clone(),
            require_token,
        ))
        .with_state(state.clone());
    let system = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .with_state(state.clone())
        .route(
            "/metrics",
            ferry_api::http::metrics::route(
                state.prometheus.clone(),
                &state.config.tokens,
                state.config.metrics_require_token,
            ),
        );
    let open = state.config.tokens.is_open();
    api.merge(system).merge(crate::ui::routes(open))
}

/// The registry as a complete service: [`routes`] wrapped in the common layers, with a
/// problem-document 404 for unknown paths.
pub fn router(state: AppState) -> Router {
    let metrics = state.http_metrics.clone();
    ferry_api::http::layers::common(routes(state).fallback(not_found), metrics)
}

/// The 404 for paths no route matches.
pub async fn not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!(
        "no route for {}",
        ferry_api::names::printable(uri.path())
    ))
}
