//! Liveness, readiness, and who the caller is.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use ferry_api::http::auth::Principal;

/// Liveness: the process answers.
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the database and the object store answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.store.ping().await;
    let blobs = state.blobs.ping().await;
    let status = if database.is_ok() && blobs.is_ok() {
        StatusCode::OK
    } else {
        if let Err(e) = &database {
            tracing::warn!(error = %e, "readiness: database unavailable");
        }
        if let Err(e) = &blobs {
            tracing::warn!(error = %e, "readiness: object store unavailable");
        }
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "checks": {
            "database": if database.is_ok() { "ok" } else { "unavailable" },
            "object_store": if blobs.is_ok() { "ok" } else { "unavailable" },
        }
    });
    // Details, not a check: with the index down the registry still serves everything else, and
    // feedback posted to it answers 503 with Retry-After.
    if let Some(index) = &state.predictions {
        body["feedback_store"] = json!(index.health());
    }
    (status, axum::Json(body)).into_response()
}

/// `GET /api/v1/whoami`: the caller's role (`admin` when the server runs without tokens, then
/// `open` is true) and its token's label, so that a client (the web UI) shows only what the
/// role may do. The server still checks every call.
pub async fn whoami(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let open = state.config.tokens.is_open();
    axum::Json(json!({
        "role": principal.role,
        "open": open,
        "token": if open { None } else { Some(principal.label) },
    }))
    .into_response()
}
