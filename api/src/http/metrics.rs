//! Prometheus metrics every Ferry server has: its HTTP requests by method, route template and
//! status, and the exposition of a registry of metrics at `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from sub-millisecond inference to multi-second uploads.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Request counts and latencies by route template, shared by every router in the process.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

impl HttpMetrics {
    /// Registers the HTTP metrics in `registry`.
    ///
    /// # Errors
    /// When metrics of the same names are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ferry_http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
            ),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_http_request_duration_seconds",
                "Time from receiving a request to sending its response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let in_flight = IntGauge::new(
            "ferry_http_requests_in_flight",
            "Requests being handled right now.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(HttpMetrics {
            requests,
            duration,
            in_flight,
        })
    }
}

/// Middleware recording [`HttpMetrics`]. Every label comes from a fixed set, whatever the client
/// sends, so a client cannot grow the metrics: routes by their template
/// (`/api/v1/models/{name}`, never the raw path; `unmatched` for no route), methods by
/// [`method_label`], statuses by the code the server chose.
pub async fn record_http(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    metrics.in_flight.inc();
    let response = next.run(request).await;
    metrics.in_flight.dec();
    let status = response.status().as_u16().to_string();
    metrics
        .requests
        .with_label_values(&[method, &route, &status])
        .inc();
    metrics
        .duration
        .with_label_values(&[method, &route])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The metrics label of a method: the nine standard ones by name, anything a client invents as
/// `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// `GET /metrics`: open, or with `require_token` (and tokens configured) only for requests
/// carrying any valid token (401 otherwise): metric labels name models, endpoints and features.
pub fn route<S: Clone + Send + Sync + 'static>(
    registry: Arc<Registry>,
    tokens: &super::Tokens,
    require_token: bool,
) -> axum::routing::MethodRouter<S> {
    let tokens = (require_token && !tokens.is_open()).then(|| tokens.clone());
    axum::routing::get(move |headers: axum::http::HeaderMap| {
        let registry = registry.clone();
        let tokens = tokens.clone();
        async move {
            if let Some(tokens) = &tokens
                && super::auth::bearer(&headers)
                    .and_then(|presented| tokens.authenticate(presented))
                    .is_none()
            {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"ferry\"")],
                    "/metrics needs a bearer token on this server (--metrics-require-token)\n",
                )
                    .into_response();
            }
            expose(State(registry)).await
        }
    })
}

/// Handler for `GET /metrics`: the Prometheus text exposition of `registry`.
pub async fn expose(State(registry): State<Arc<Registry>>) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "encoding metrics failed");
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        for method in ["GET", "POST", "DELETE", "OPTIONS"] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&m), method);
        }
        for invented in ["FOO", "GETT", &"X".repeat(4096)] {
            let m = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(
                method_label(&m),
                "other",
                "{}",
                &invented[..4.min(invented.len())]
            );
        }
    }
}
