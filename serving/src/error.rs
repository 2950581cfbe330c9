//! Serving's errors and their one mapping to HTTP. Open Inference Protocol routes answer
//! `{"error": "…"}`, as the protocol says.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::runtime::RuntimeError;

/// Everything a serving request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The request is malformed or does not fit the model's signature.
    #[error("{0}")]
    BadRequest(String),
    /// No such model, version or endpoint is served here.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what was already recorded (a second feedback).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client did not send its body within the request timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// The model exists but is not loaded (yet).
    #[error("{0}")]
    NotReady(String),
    /// A store the request needs (the shared prediction index) cannot be reached now; retry
    /// after the given time.
    #[error("{message}")]
    Unavailable {
        /// What is down.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// Missing or invalid bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The token's role does not allow this route.
    #[error("{0}")]
    Forbidden(String),
    /// The runtime refused or failed the request.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ServingError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ServingError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServingError::NotFound(_) => StatusCode::NOT_FOUND,
            ServingError::Conflict(_) => StatusCode::CONFLICT,
            ServingError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServingError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ServingError::NotReady(_) | ServingError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServingError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServingError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServingError::Runtime(e) => match e {
                RuntimeError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
                RuntimeError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                RuntimeError::InvalidInput { .. } | RuntimeError::UnknownOutput { .. } => {
                    StatusCode::BAD_REQUEST
                }
                RuntimeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// A short label for metrics: `ok` is never an error, so these are the failure classes.
    pub fn class(&self) -> &'static str {
        match self {
            ServingError::BadRequest(_) | ServingError::PayloadTooLarge(_) => "invalid",
            ServingError::RequestTimeout(_) => "slow_client",
            ServingError::NotFound(_) => "not_found",
            ServingError::Conflict(_) => "conflict",
            ServingError::NotReady(_) => "not_ready",
            ServingError::Unavailable { .. } => "unavailable",
            ServingError::Unauthorized => "unauthorized",
            ServingError::Forbidden(_) => "forbidden",
            ServingError::Runtime(e) => match e {
                RuntimeError::Overloaded { .. } => "overloaded",
                RuntimeError::DeadlineExceeded => "deadline",
                RuntimeError::InvalidInput { .. } | RuntimeError::UnknownOutput { .. } => "invalid",
                RuntimeError::ShuttingDown => "not_ready",
                _ => "model_error",
            },
        }
    }
}

impl ServingError {
    /// The gRPC status code this error answers with over `inference.GRPCInferenceService`: the
    /// same meaning as [`ServingError::status`] (429 → `RESOURCE_EXHAUSTED`, 504 →
    /// `DEADLINE_EXCEEDED`, 400 → `INVALID_ARGUMENT`…).
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            ServingError::BadRequest(_) => GrpcCode::InvalidArgument,
            ServingError::NotFound(_) => GrpcCode::NotFound,
            ServingError::Conflict(_) => GrpcCode::AlreadyExists,
            ServingError::PayloadTooLarge(_) => GrpcCode::ResourceExhausted,
            ServingError::RequestTimeout(_) => GrpcCode::DeadlineExceeded,
            ServingError::NotReady(_) | ServingError::Unavailable { .. } => GrpcCode::Unavailable,
            ServingError::Unauthorized => GrpcCode::Unauthenticated,
            ServingError::Forbidden(_) => GrpcCode::PermissionDenied,
            ServingError::Runtime(e) => match e {
                RuntimeError::Overloaded { .. } => GrpcCode::ResourceExhausted,
                RuntimeError::DeadlineExceeded => GrpcCode::DeadlineExceeded,
                RuntimeError::InvalidInput { .. } | RuntimeError::UnknownOutput { .. } => {
                    GrpcCode::InvalidArgument
                }
                RuntimeError::ShuttingDown => GrpcCode::Unavailable,
                _ => GrpcCode::Internal,
            },
        }
    }

    /// The message a client gets: the error itself, except for failures inside the runtime,
    /// whose messages can carry ONNX Runtime's source paths (the full cause is logged here).
    pub fn public_message(&self) -> String {
        if self.status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "inference failed");
            "inference failed inside the model runtime for this request; the cause is in the \
             server's log under this request's x-request-id"
                .to_string()
        } else {
            self.to_string()
        }
    }

    /// How long the client should wait before retrying, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ServingError::Runtime(RuntimeError::Overloaded { retry_after })
            | ServingError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The gRPC status codes serving answers with (their numbers are the protocol's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    /// Success.
    Ok = 0,
    /// The request is malformed or does not fit the model.
    InvalidArgument = 3,
    /// The deadline passed (the server's request timeout, or the client's `grpc-timeout`).
    DeadlineExceeded = 4,
    /// No such model or version.
    NotFound = 5,
    /// Already recorded.
    AlreadyExists = 6,
    /// The token's role does not allow the call.
    PermissionDenied = 7,
    /// Load shedding or a request too large.
    ResourceExhausted = 8,
    /// A method Ferry does not implement.
    Unimplemented = 12,
    /// A failure inside the runtime.
    Internal = 13,
    /// Not ready, shutting down, or a dependency away: retry.
    Unavailable = 14,
    /// Missing or invalid bearer token.
    Unauthenticated = 16,
}

impl IntoResponse for ServingError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let body = serde_json::json!({ "error": message }).to_string();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry_after) = self.retry_after() {
            let secs = retry_after_seconds(retry_after);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(self, ServingError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ferry\""),
            );
        }
        response
    }
}

/// `Retry-After` takes whole seconds: round up, at least 1.
pub(crate) fn retry_after_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.as_secs() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2100)), 3);
    }

    #[test]
    fn runtime_errors_map_to_the_statuses_clients_expect() {
        let cases = [
            (
                RuntimeError::Overloaded {
                    retry_after: Duration::from_secs(1),
                },
                429,
            ),
            (RuntimeError::DeadlineExceeded, 504),
            (RuntimeError::UnknownOutput { output: "x".into() }, 400),
            (RuntimeError::ShuttingDown, 503),
            (
                RuntimeError::Inference {
                    reason: "/onnxruntime_src/x.cc: boom".into(),
                },
                500,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ServingError::Runtime(e).status().as_u16(), status);
        }
    }
}
