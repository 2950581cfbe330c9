//! Extractors whose rejections are OIP errors (`{"error": "…"}`) that say what was wrong, like
//! every other answer of this API, instead of axum's plain-text bodies.

use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ServingError;

/// `axum::extract::Path`, rejecting with a 400 in the OIP error shape (a model name of invalid
/// UTF-8, say).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ServingError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| {
                ServingError::BadRequest(format!("invalid path: {}", e.body_text()))
            })
    }
}
