//! Handlers for feature views: register a definition, read one version or the newest, list.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::extract::{Json, PageQuery, Path, Query};
use crate::AppState;
use crate::error::Result;
use ferry_api::features::{FeatureViewRecord, FeatureViewSpec, MaterializationBody};
use ferry_api::records::Event;
use ferry_api::records::Page;
use ferry_api::skew::ServedRows;

/// The feature view routes, to be merged into the API's quick (JSON, deadline-bound) routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/feature-views", get(list_views))
        .route("/api/v1/feature-views/{name}", get(get_view).put(put_view))
        .route(
            "/api/v1/feature-views/{name}/versions/{version}",
            get(get_version),
        )
        .route(
            "/api/v1/feature-views/{name}/versions/{version}/materializations",
            post(record_materialization),
        )
        .route(
            ferry_api::http::auth::SERVED_FEATURES_ROUTE,
            post(record_served),
        )
}

/// `PUT`: 201 with the new version, or 200 with the version that already has this definition.
pub async fn put_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(spec): Json<FeatureViewSpec>,
) -> Result<Response> {
    let (record, created) = state.store.register_feature_view(&name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(record)).into_response())
}

/// `POST`: records a materialization into the online store; 201 with its
/// `feature_view.materialized` event.
pub async fn record_materialization(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
    Json(body): Json<MaterializationBody>,
) -> Result<(StatusCode, axum::Json<Event>)> {
    let event = state
        .store
        .record_materialization(&name, version, body)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(event)))
}

/// `POST`: rows serving read online, compared with the offline sample (the skew check); 200
/// with how many were compared.
pub async fn record_served(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
    Json(rows): Json<ServedRows>,
) -> Result<axum::Json<serde_json::Value>> {
    let compared = state
        .store
        .record_served_features(&name, version, rows)
        .await?;
    Ok(axum::Json(serde_json::json!({ "compared": compared })))
}

/// The newest version.
pub async fn get_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<FeatureViewRecord>> {
    Ok(axum::Json(state.store.get_feature_view(&name, None).await?))
}

/// One version.
pub async fn get_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
) -> Result<axum::Json<FeatureViewRecord>> {
    Ok(axum::Json(
        state.store.get_feature_view(&name, Some(version)).await?,
    ))
}

/// The newest version of every view, by name.
pub async fn list_views(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<FeatureViewRecord>>> {
    Ok(axum::Json(
        state
            .store
            .list_feature_views(q.limit()?, q.page_token.as_deref())
            .await?,
    ))
}
