//! Handlers for endpoints (traffic policies), replica reports and their analysis.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{Json, PageQuery, Path, Query};
use crate::AppState;
use crate::endpoints::{Preconditions, etag};
use crate::error::{Error, Result};
use crate::store::EndpointWrite;
use ferry_api::drift::VersionHistograms;
use ferry_api::records::{EndpointPolicy, EndpointRecord, Event, Page, RolloutStep};
use ferry_api::traffic::{AnalysisSeries, parse_step, parse_window};
use ferry_api::traffic::{EndpointAnalysis, Report};

// The same paging limits as the model listings.

pub async fn list_endpoints(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<EndpointRecord>>> {
    let page = state
        .store
        .list_endpoints(q.limit()?, q.page_token.as_deref())
        .await?;
    Ok(axum::Json(page))
}

pub async fn get_endpoint(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response> {
    let record =
        crate::lifecycle::describe_endpoint(&state.store, &name, chrono::Utc::now()).await?;
    Ok(with_etag(StatusCode::OK, record))
}

/// `PUT`: 201 when it created the endpoint, 200 otherwise (also when nothing changed).
pub async fn put_endpoint(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(policy): Json<EndpointPolicy>,
) -> Result<Response> {
    let preconditions = preconditions(&headers)?;
    let written = state
        .store
        .put_endpoint(&name, policy, &preconditions)
        .await?;
    let status = match &written {
        EndpointWrite::Created(r) | EndpointWrite::Updated(r) => {
            tracing::info!(endpoint = %r.name, revision = r.revision, "endpoint policy changed");
            if matches!(written, EndpointWrite::Created(_)) {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            }
        }
        EndpointWrite::Unchanged(_) => StatusCode::OK,
    };
    let mut response = with_etag(status, written.into_record());
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/api/v1/endpoints/{name}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn delete_endpoint(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let preconditions = preconditions(&headers)?;
    let deleted = state.store.delete_endpoint(&name, &preconditions).await?;
    tracing::info!(endpoint = %deleted.name, revision = deleted.revision, "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/reports`: 202, the report is stored (and counted in analyses from now on).
pub async fn post_report(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(report): Json<Report>,
) -> Result<StatusCode> {
    let events = state.store.record_report(&name, report).await?;
    for event in &events {
        tracing::warn!(endpoint = %name, event = %event.kind, data = %event.data, "replica load state changed");
    }
    // Opportunistic: at most once a minute, on a background task.
    let _started = state
        .store
        .prune_reports_soon(state.config.report_retention);
    Ok(StatusCode::ACCEPTED)
}

/// `POST …/feedback`: 200 with what the feedback joined (see [`crate::endpoints::feedback`]).
pub async fn post_feedback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(feedback): Json<ferry_feedback::FeedbackBody>,
) -> Result<axum::Json<crate::endpoints::feedback::Joined>> {
    let joined = crate::endpoints::feedback::record(
        &state.store,
        state.predictions.as_ref(),
        state.feedback_log.as_ref(),
        &name,
        feedback,
    )
    .await?;
    Ok(axum::Json(joined))
}

/// `POST …/rollout-events`: 201 with the `rollout.step` event as recorded.
pub async fn post_rollout_event(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(step): Json<RolloutStep>,
) -> Result<(StatusCode, axum::Json<Event>)> {
    let event = state.store.record_rollout_step(&name, step).await?;
    tracing::info!(endpoint = %name, event = event.id, data = %event.data, "rollout step recorded");
    Ok((StatusCode::CREATED, axum::Json(event)))
}

/// `?window=` of the analysis.
#[derive(Debug, Deserialize)]
pub struct AnalysisQuery {
    window: Option<String>,
}

pub async fn get_analysis(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<AnalysisQuery>,
) -> Result<axum::Json<EndpointAnalysis>> {
    let window = parse_window(q.window.as_deref(), state.config.report_retention)?;
    Ok(axum::Json(
        state.store.endpoint_analysis(&name, window).await?,
    ))
}

/// `?window=&step=` of the series.
#[derive(Debug, Deserialize)]
pub struct SeriesQuery {
    window: Option<String>,
    step: Option<String>,
}

pub async fn get_analysis_series(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<axum::Json<AnalysisSeries>> {
    let window = parse_window(q.window.as_deref(), state.config.report_retention)?;
    let step = parse_step(q.step.as_deref(), window)?;
    Ok(axum::Json(
        state
            .store
            .endpoint_analysis_series(&name, window, step)
            .await?,
    ))
}

/// `?version=&window=` of the histograms.
#[derive(Debug, Deserialize)]
pub struct HistogramsQuery {
    version: Option<i64>,
    window: Option<String>,
}

pub async fn get_histograms(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HistogramsQuery>,
) -> Result<axum::Json<VersionHistograms>> {
    let window = parse_window(q.window.as_deref(), state.config.report_retention)?;
    Ok(axum::Json(
        state
            .store
            .endpoint_histograms(&name, q.version, window)
            .await?,
    ))
}

fn preconditions(headers: &HeaderMap) -> Result<Preconditions> {
    let text = |name: header::HeaderName| -> Result<Option<&str>> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| Error::BadRequest(format!("{name} must be printable ASCII")))
            })
            .transpose()
    };
    Preconditions::parse(text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?)
}

fn with_etag(status: StatusCode, record: EndpointRecord) -> Response {
    let tag = etag(record.revision);
    let mut response = (status, axum::Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}
