//! The layers every Ferry HTTP service wraps its routes in: request ids, tracing spans with
//! them, panic isolation, request metrics, and redaction of credentials from logs.

use std::iter::once;

use axum::Router;
use axum::http::{HeaderName, Request, Response, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::metrics::{HttpMetrics, RecordHttpLayer};

/// The request-id header: taken from the client when present, generated otherwise, and echoed
/// on the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `router` in the common layers. Apply it once, to the outermost router of a process.
///
/// The layers go on as one `ServiceBuilder` stack, not one `Router::layer` each: every
/// `Router::layer` boxes each route again, and a request then clones each boxed service and
/// boxes each future (bench/README.md counts them); one stack costs one of each.
pub fn common<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    metrics: HttpMetrics,
) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new(once(
                header::AUTHORIZATION,
            )))
            .layer(SetRequestIdLayer::new(
                REQUEST_ID,
                super::request_id::FastUuid,
            ))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &Request<_>| {
                        let id = request
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request_id = %id,
                            principal = tracing::field::Empty,
                        )
                    })
                    .on_request(())
                    .on_response(
                        |response: &Response<_>, latency: std::time::Duration, _span: &Span| {
                            // Successes at debug: an inference server answers thousands a
                            // second, and a log line each would cost more than the inference.
                            // Failures stay visible.
                            let status = response.status().as_u16();
                            let latency_ms = latency.as_secs_f64() * 1000.0;
                            if status >= 500 {
                                tracing::warn!(status, latency_ms, "answered");
                            } else if status >= 400 {
                                tracing::info!(status, latency_ms, "answered");
                            } else {
                                tracing::debug!(status, latency_ms, "answered");
                            }
                        },
                    )
                    // A 5xx is logged once, above; what is left is a body that failed
                    // mid-stream.
                    .on_failure(
                        |failure: ServerErrorsFailureClass,
                         latency: std::time::Duration,
                         _span: &Span| {
                            if let ServerErrorsFailureClass::Error(error) = failure {
                                let latency_ms = latency.as_secs_f64() * 1000.0;
                                tracing::warn!(%error, latency_ms, "the response failed mid-stream");
                            }
                        },
                    ),
            )
            // A panic in a handler becomes a 500 for that request instead of a dropped
            // connection.
            .layer(CatchPanicLayer::custom(panic_response))
            // Innermost, so that it sees the route the router matched (`MatchedPath`).
            .layer(RecordHttpLayer::new(metrics)),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<axum::body::Body> {
    tracing::error!("a request handler panicked");
    let body = r#"{"type":"https://ferry.dev/problems/internal","title":"Internal Server Error","status":500,"detail":"internal server error; the cause is in the server's log under this request's id"}"#;
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/problem+json"),
    );
    response
}
