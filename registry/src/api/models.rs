//! Handlers for models, versions and aliases.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::extract::{Json, PageQuery, Path, Query};
use super::multipart::MultipartBody;
use crate::AppState;
use crate::error::{Error, Result};
use crate::store::Inserted;
use crate::upload::UploadSession;
use ferry_api::names::{self, VersionRef};
use ferry_api::records::{AliasRecord, ModelRecord, Page, VersionRecord, VersionStatus};

pub async fn list_models(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ModelRecord>>> {
    let page = state
        .store
        .list_models(q.limit()?, q.page_token.as_deref())
        .await?;
    Ok(axum::Json(page))
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ModelRecord>> {
    names::validate("model", &name)?;
    Ok(axum::Json(state.store.get_model(&name).await?))
}

pub async fn list_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<VersionRecord>>> {
    names::validate("model", &name)?;
    let page = state
        .store
        .list_versions(&name, q.limit()?, q.page_token.as_deref())
        .await?;
    Ok(axum::Json(page))
}

pub async fn get_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<VersionRecord>> {
    names::validate("model", &name)?;
    let version = VersionRef::parse(&version)?;
    Ok(axum::Json(state.store.get_version(&name, &version).await?))
}

/// Body of `PATCH …/versions/{v}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionPatch {
    status: VersionStatus,
}

pub async fn update_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Json(patch): Json<VersionPatch>,
) -> Result<axum::Json<VersionRecord>> {
    names::validate("model", &name)?;
    let number = state
        .store
        .resolve(&name, &VersionRef::parse(&version)?)
        .await?;
    let record = state.store.set_status(&name, number, patch.status).await?;
    Ok(axum::Json(record))
}

pub async fn get_profile(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<serde_json::Value>> {
    names::validate("model", &name)?;
    let version = VersionRef::parse(&version)?;
    Ok(axum::Json(state.store.get_profile(&name, &version).await?))
}

pub async fn get_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<axum::Json<AliasRecord>> {
    names::validate("model", &name)?;
    names::validate_alias(&alias)?;
    let version = state
        .store
        .resolve(&name, &VersionRef::Alias(alias.clone()))
        .await?;
    Ok(axum::Json(AliasRecord {
        name,
        alias,
        version,
        previous: None,
    }))
}

/// Body of `PUT …/aliases/{alias}`: a version number, or another alias (`"@staging"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    version: VersionRef,
}

pub async fn set_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    Json(target): Json<AliasTarget>,
) -> Result<axum::Json<AliasRecord>> {
    names::validate("model", &name)?;
    names::validate_alias(&alias)?;
    // Re-parse so numbers get the same checks as in URLs (0 and negatives are refused).
    let target = VersionRef::parse(&match target.version {
        VersionRef::Alias(text) => text,
        VersionRef::Number(n) => n.to_string(),
    })?;
    let version = state.store.resolve(&name, &target).await?;
    Ok(axum::Json(
        state.store.set_alias(&name, &alias, version).await?,
    ))
}

pub async fn delete_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode> {
    names::validate("model", &name)?;
    names::validate_alias(&alias)?;
    state.store.delete_alias(&name, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/models/{name}/versions`: multipart with parts `model` (the ONNX bytes) and
/// `metadata` (JSON), in either order.
pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    multipart: Result<MultipartBody>,
) -> Response {
    let outcome = receive(&state, name, &headers, multipart).await;
    let label = match &outcome {
        Ok(Inserted::Created(_)) => "created",
        Ok(Inserted::Replayed(_)) => "replayed",
        Err(e) if e.status().is_client_error() => "rejected",
        Err(_) => "failed",
    };
    state.metrics.uploads.with_label_values(&[label]).inc();
    match outcome {
        Ok(Inserted::Created(record)) => {
            tracing::info!(model = %record.name, version = record.version, sha256 = %record.sha256, size = record.size, "version created");
            version_created(record, false)
        }
        Ok(Inserted::Replayed(record)) => version_created(record, true),
        Err(e) => e.into_response(),
    }
}

fn version_created(record: VersionRecord, replayed: bool) -> Response {
    let location = format!("/api/v1/models/{}/versions/{}", record.name, record.version);
    let mut response = (StatusCode::CREATED, axum::Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn receive(
    state: &AppState,
    name: String,
    headers: &HeaderMap,
    multipart: Result<MultipartBody>,
) -> Result<Inserted> {
    names::validate("model", &name)?;
    // Held until the version is recorded or refused.
    let _receiving = state.uploads.clone().try_acquire_owned().map_err(|_| {
        Error::TooManyRequests(format!(
            "{} uploads are in progress, this registry's limit (--max-concurrent-uploads); \
             retry shortly",
            state.config.upload.max_concurrent
        ))
    })?;
    let mut multipart = multipart?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::BadRequest("Idempotency-Key must be printable ASCII".into()))?
                .to_string(),
        ),
        None => None,
    };
    let mut session = UploadSession::new(
        state.store.clone(),
        state.blobs.clone(),
        state.config.upload.clone(),
        name,
        key,
    )?;
    while let Some(part) = multipart.next_part().await? {
        match part.name.as_deref() {
            Some("metadata") => {
                let limit = session.max_metadata_bytes();
                let mut bytes = Vec::new();
                while let Some(chunk) = multipart.next_chunk().await? {
                    if bytes.len() + chunk.len() > limit {
                        return Err(Error::PayloadTooLarge(format!(
                            "the `metadata` part is larger than {limit} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                session.set_metadata(bytes).await?;
            }
            Some("model") => {
                let counter = state.metrics.upload_bytes.clone();
                let stream = multipart
                    .part_data()
                    .map(move |chunk| chunk.inspect(|bytes| counter.inc_by(bytes.len() as u64)));
                session.receive_model(stream).await?;
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "unexpected multipart part {}; an upload has a `model` part (the .onnx bytes) and a `metadata` part (JSON)",
                    other.map_or_else(|| "without a name".to_string(), names::printable)
                )));
            }
        }
    }
    session.finish().await
}
