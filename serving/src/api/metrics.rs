//! Per-model request metrics (the runtime exports queue depth, batch sizes and inference time).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Latency buckets in seconds, from tens of microseconds to the request timeout.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Requests and latencies by model and version.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RequestMetrics {
    /// Registers the metrics in `registry`.
    ///
    /// # Errors
    /// When they are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ferry_serving_requests_total",
                "Inference requests by model, version and outcome (ok, invalid, overloaded, deadline, model_error, …).",
            ),
            &["model", "version", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_serving_request_duration_seconds",
                "Time from receiving an inference request to having its answer, decoding and encoding included.",
            )
            .buckets(BUCKETS.to_vec()),
            &["model", "version"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(RequestMetrics { requests, duration })
    }

    /// Records one request.
    pub fn observe(&self, model: &str, version: &str, outcome: &str, seconds: f64) {
        self.requests
            .with_label_values(&[model, version, outcome])
            .inc();
        if outcome == "ok" {
            self.duration
                .with_label_values(&[model, version])
                .observe(seconds);
        }
    }
}
