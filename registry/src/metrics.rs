//! Prometheus metrics: HTTP requests of every Ferry router, and the registry's own counters.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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

/// Middleware recording [`HttpMetrics`]. Routes are labelled by their template (`/api/v1/models/{name}`),
/// never by the raw path, so label cardinality stays bounded.
pub async fn record_http(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
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
        .with_label_values(&[&method, &route, &status])
        .inc();
    metrics
        .duration
        .with_label_values(&[&method, &route])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The registry's own metrics.
#[derive(Clone)]
pub struct RegistryMetrics {
    /// Uploads by outcome (`created`, `replayed`, `rejected`, `failed`).
    pub uploads: IntCounterVec,
    /// Bytes of model data received.
    pub upload_bytes: IntCounter,
    /// Bytes of artifacts sent.
    pub download_bytes: IntCounter,
    /// Id of the newest event this process committed.
    pub last_event_id: IntGauge,
}

impl RegistryMetrics {
    /// Registers the registry metrics in `registry`.
    ///
    /// # Errors
    /// When metrics of the same names are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let uploads = IntCounterVec::new(
            Opts::new(
                "ferry_registry_uploads_total",
                "Model uploads by outcome: created, replayed (idempotent retry), rejected (4xx), failed (5xx).",
            ),
            &["outcome"],
        )?;
        let upload_bytes = IntCounter::new(
            "ferry_registry_upload_bytes_total",
            "Bytes of model data received in uploads.",
        )?;
        let download_bytes = IntCounter::new(
            "ferry_registry_download_bytes_total",
            "Bytes of model artifacts sent.",
        )?;
        let last_event_id = IntGauge::new(
            "ferry_registry_last_event_id",
            "Id of the newest event committed by this process.",
        )?;
        registry.register(Box::new(uploads.clone()))?;
        registry.register(Box::new(upload_bytes.clone()))?;
        registry.register(Box::new(download_bytes.clone()))?;
        registry.register(Box::new(last_event_id.clone()))?;
        Ok(RegistryMetrics {
            uploads,
            upload_bytes,
            download_bytes,
            last_event_id,
        })
    }
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
