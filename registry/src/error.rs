//! The registry's one error type and its one mapping to HTTP (`application/problem+json`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use ferry_api::http::auth::Role;

/// Everything that can go wrong in the registry, from bad input to a storage outage.
///
/// 4xx variants carry a message meant for the user: it says exactly what was wrong with the
/// input. 5xx variants carry the cause for the logs only; the response body stays generic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad name, bad JSON, missing part…).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials that match no token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Valid credentials whose role is too weak for the operation.
    #[error("this operation needs the `{needed}` role; the token has `{has}`")]
    Forbidden {
        /// Role the route requires.
        needed: Role,
        /// Role of the presented token.
        has: Role,
    },
    /// A server without tokens refuses a request a web page could have sent (foreign `Host` or
    /// `Origin`, a form-posted write): see `ferry_api::http::open_mode`.
    #[error("{0}")]
    OpenModeRefused(String),
    /// Too many requests of this kind are in progress (uploads); retry shortly.
    #[error("{0}")]
    TooManyRequests(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (reused idempotency key, archived version…).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named a revision that is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The body (or a part of it) is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body has a content type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but its content is unacceptable (not ONNX, lineage missing…).
    #[error("{0}")]
    Unprocessable(String),
    /// The client stopped sending within the idle timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// A range that lies outside the artifact.
    #[error("the requested range is outside the artifact of {size} bytes")]
    RangeNotSatisfiable {
        /// Size of the artifact in bytes.
        size: u64,
    },
    /// A transient conflict inside the database (serialization failure, deadlock): retry.
    #[error("the database asked to retry a conflicting transaction")]
    Retryable(#[source] sqlx::Error),
    /// A transient condition a retry resolves, e.g. a concurrent `ferry registry gc` collected
    /// the blob an upload was about to record (the message is for the log).
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The object store failed.
    #[error("object store error")]
    ObjectStore(#[source] object_store::Error),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    /// The one place sqlx errors are classified: unique violations are conflicts, serialization
    /// failures and deadlocks are retryable, everything else is a server error.
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return Error::Conflict(
                    "a concurrent change conflicted with this one; retry the request".into(),
                );
            }
            // 40001 serialization_failure, 40P01 deadlock_detected (PostgreSQL);
            // SQLITE_BUSY (5) / SQLITE_LOCKED (6) when another process holds the lock too long.
            if matches!(
                db.code().as_deref(),
                Some("40001" | "40P01" | "5" | "6" | "261" | "517")
            ) {
                return Error::Retryable(err);
            }
        }
        if matches!(err, sqlx::Error::PoolTimedOut) {
            return Error::Retryable(err);
        }
        Error::Database(err)
    }
}

impl From<ferry_api::ValidationError> for Error {
    /// The contract's validation errors keep their message: 400 for malformed input, 422 for
    /// input a rule refuses.
    fn from(err: ferry_api::ValidationError) -> Self {
        match err {
            ferry_api::ValidationError::BadRequest(m) => Error::BadRequest(m),
            ferry_api::ValidationError::Unprocessable(m) => Error::Unprocessable(m),
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(err: object_store::Error) -> Self {
        Error::ObjectStore(err)
    }
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } | Error::OpenModeRefused(_) => StatusCode::FORBIDDEN,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            // The object store is a dependency outside this process (S3, a disk): when it fails,
            // the registry is unavailable, not broken, and a retry later is the right reaction.
            Error::Retryable(_) | Error::Unavailable(_) | Error::ObjectStore(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, stable slug for the `type` member of the problem document.
    fn slug(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad-request",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden { .. } | Error::OpenModeRefused(_) => "forbidden",
            Error::TooManyRequests(_) => "too-many-requests",
            Error::NotFound(_) => "not-found",
            Error::Conflict(_) => "conflict",
            Error::PreconditionFailed(_) => "precondition-failed",
            Error::PayloadTooLarge(_) => "payload-too-large",
            Error::UnsupportedMediaType(_) => "unsupported-media-type",
            Error::Unprocessable(_) => "unprocessable",
            Error::RequestTimeout(_) => "request-timeout",
            Error::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            Error::Retryable(_) | Error::Unavailable(_) => "retry",
            Error::ObjectStore(_) => "object-store-unavailable",
            Error::Database(_) | Error::Internal(_) => "internal",
        }
    }
}

/// RFC 9457 problem details: what every non-OIP error body looks like.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status.is_server_error() {
            // Log the whole cause chain; the client learns only that it was our fault.
            let mut chain = format!("{self}");
            let mut source = std::error::Error::source(&self);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            if matches!(self, Error::Retryable(_) | Error::Unavailable(_)) {
                // Load shed or a dependency briefly away: expected under overload, and one
                // error line per refused request would drown the log when it matters most.
                tracing::warn!(error = %chain, status = status.as_u16(), "request refused for now");
            } else {
                tracing::error!(error = %chain, status = status.as_u16(), "request failed");
            }
            match self {
                Error::Retryable(_) | Error::Unavailable(_) => {
                    "the server is busy; retry the request shortly".to_string()
                }
                Error::ObjectStore(_) => "the object store holding the models failed or did not \
                    answer; retry shortly (the cause is in the server's log under this request's id)"
                    .to_string(),
                _ => "internal server error; the cause is in the server's log under this request's id"
                    .to_string(),
            }
        } else {
            self.to_string()
        };
        let problem = Problem {
            kind: format!("https://ferry.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Error::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ferry\""),
                );
            }
            Error::Retryable(_) | Error::Unavailable(_) | Error::TooManyRequests(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::ObjectStore(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Error::RangeNotSatisfiable { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    async fn problem(error: Error) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn an_object_store_outage_is_a_503_with_retry_after_that_hides_the_cause() {
        let outage = Error::ObjectStore(object_store::Error::Generic {
            store: "S3",
            source: "error sending request for url (http://10.0.0.7:9000/models?secret=abc)".into(),
        });
        let (status, headers, body) = problem(outage).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "5");
        assert_eq!(
            body["type"],
            "https://ferry.dev/problems/object-store-unavailable"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("object store"), "{detail}");
        assert!(
            !detail.contains("10.0.0.7") && !detail.contains("secret"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn our_own_failures_stay_500_without_retry_after() {
        let (status, headers, body) = problem(Error::Internal("bug".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(headers.get(header::RETRY_AFTER).is_none());
        assert!(!body["detail"].as_str().unwrap().contains("bug"));
    }
}
