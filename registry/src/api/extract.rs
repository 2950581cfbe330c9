//! Extractors whose rejections are problem documents that say what was wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// `axum::extract::Query`, rejecting with a 400 problem that quotes the parse error.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| {
                Error::BadRequest(format!("invalid query string: {}", e.body_text()))
            })
    }
}

/// `axum::extract::Path`, rejecting with a 400 problem.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| {
                Error::BadRequest(format!("invalid path: {}", e.body_text()))
            })
    }
}

/// `axum::Json`, rejecting with 400 (bad JSON), 415 (wrong content type) or 413 (too large).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| Json(j.0))
            .map_err(|e: JsonRejection| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    Error::PayloadTooLarge(format!("the JSON body is too large: {}", e.body_text()))
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType(
                    "expected a JSON body with `Content-Type: application/json`".into(),
                ),
                _ => Error::BadRequest(format!("invalid JSON body: {}", e.body_text())),
            })
    }
}

/// Items per page of a listing when `limit` is not given, and the most a page holds.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// `?limit=&page_token=` of every newest-first listing.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    limit: Option<u32>,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
}

impl PageQuery {
    /// The page size asked for, checked.
    ///
    /// # Errors
    /// [`Error::BadRequest`] outside 1 to 500.
    pub fn limit(&self) -> Result<u32, Error> {
        page_limit(self.limit)
    }
}

/// A listing's page size, [`DEFAULT_PAGE`] when not given.
///
/// # Errors
/// [`Error::BadRequest`] outside 1 to [`MAX_PAGE`].
pub fn page_limit(limit: Option<u32>) -> Result<u32, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Error::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}, got {n}"
        ))),
    }
}
