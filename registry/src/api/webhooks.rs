//! Handlers for webhooks, their deliveries and dead letters. Every route needs the `admin` role:
//! a webhook decides where the registry sends its events.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::{Json, PageQuery, Path, Query, page_limit};
use crate::AppState;
use crate::auth::RequireAdmin;
use crate::error::Result;
use crate::webhooks::display_url;
use ferry_api::records::Page;
use ferry_api::webhooks::{DeliveryRecord, DeliveryStatus, NewWebhook, WebhookRecord};

/// The webhook routes, to be merged into the API's quick (JSON, deadline-bound) routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/api/v1/webhooks/{id}",
            get(get_webhook).delete(delete_webhook),
        )
        .route("/api/v1/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/api/v1/webhooks/{id}/dead-letters", get(list_dead_letters))
        .route(
            "/api/v1/webhooks/{id}/dead-letters/{delivery}/replay",
            post(replay_dead_letter),
        )
}

/// `?status=&limit=&page_token=` of the delivery listing.
#[derive(Debug, Deserialize)]
pub struct DeliveryQuery {
    status: Option<DeliveryStatus>,
    limit: Option<u32>,
    page_token: Option<String>,
}

/// `POST`: 201 with the webhook and its secret — the only answer that ever shows the secret.
pub async fn create_webhook(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Json(new): Json<NewWebhook>,
) -> Result<Response> {
    if !state.config.webhooks.allow_private
        && let Some(refused) = url::Url::parse(new.url.trim())
            .ok()
            .and_then(|u| crate::webhooks::destination::refused_literal(&u))
    {
        return Err(crate::error::Error::BadRequest(refused));
    }
    let created = state.store.create_webhook(new).await?;
    tracing::info!(
        webhook = %created.webhook.id,
        url = %display_url(&created.webhook.url),
        events = ?created.webhook.events,
        "webhook created"
    );
    let location = format!("/api/v1/webhooks/{}", created.webhook.id);
    let mut response = (StatusCode::CREATED, axum::Json(created)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    // The body carries a secret: no cache may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/v1/webhooks`: newest first, without secrets.
pub async fn list_webhooks(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<WebhookRecord>>> {
    let limit = q.limit()?;
    Ok(axum::Json(
        state
            .store
            .list_webhooks(limit, q.page_token.as_deref())
            .await?,
    ))
}

/// `GET /api/v1/webhooks/{id}`: without its secret.
pub async fn get_webhook(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookRecord>> {
    Ok(axum::Json(state.store.get_webhook(&id).await?))
}

/// `DELETE`: 204; its pending deliveries are dropped.
pub async fn delete_webhook(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let deleted = state.store.delete_webhook(&id).await?;
    tracing::info!(webhook = %deleted.id, url = %display_url(&deleted.url), "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/deliveries?status=pending|delivered|dead`: newest event first.
pub async fn list_deliveries(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Result<axum::Json<Page<DeliveryRecord>>> {
    let limit = page_limit(q.limit)?;
    Ok(axum::Json(
        state
            .store
            .list_deliveries(&id, q.status, limit, q.page_token.as_deref())
            .await?,
    ))
}

/// `GET …/dead-letters`: the deliveries whose every attempt failed.
pub async fn list_dead_letters(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<DeliveryRecord>>> {
    let limit = q.limit()?;
    Ok(axum::Json(
        state
            .store
            .list_deliveries(
                &id,
                Some(DeliveryStatus::Dead),
                limit,
                q.page_token.as_deref(),
            )
            .await?,
    ))
}

/// `POST …/replay`: 202, the delivery is pending again and the sender picks it up.
pub async fn replay_dead_letter(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<DeliveryRecord>)> {
    let replayed = state.store.replay_dead_letter(&id, &delivery).await?;
    tracing::info!(webhook = %id, delivery = %replayed.id, event = replayed.event_id, "dead letter replayed");
    Ok((StatusCode::ACCEPTED, axum::Json(replayed)))
}
