//! Ferry serving: runs ONNX models and answers predictions over the Open Inference Protocol v2
//! (KServe V2 / Triton REST), so existing clients work unchanged.
//!
//! - [`runtime`]: ONNX Runtime sessions on worker threads, dynamic batching, admission control;
//! - [`oip`]: the protocol's JSON, decoded straight into tensors and checked against the model's
//!   signature before anything reaches ONNX Runtime;
//! - [`repository`]: the table of served models, swapped atomically;
//! - [`follow`]: keeps that table in step with the registry (or files, for development), read
//!   through a [`catalog`];
//! - [`infer`]: the inference service every prediction goes through (plan, decode, run,
//!   bookkeeping), whatever protocol brought it;
//! - [`traffic`]: the pure split, shadow comparison, feedback join and per-version counters;
//! - [`api`]: the HTTP routes, thin handlers over [`infer`]. [`routes`] builds them; the `ferry`
//!   binary binds them.

#![warn(missing_docs)]

pub mod api;
pub mod cache;
pub mod catalog;
pub mod drift;
pub mod error;
pub mod features;
pub mod follow;
pub mod infer;
pub mod lifecycle;
pub mod oip;
pub mod report;
pub mod repository;
pub mod runtime;
pub mod served;
pub mod shadow;
pub mod traffic;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use api::routes;
pub use error::ServingError;

use crate::runtime::RuntimeOptions;

/// Settings of the serving half, validated once at start.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// How long a request may take, queueing included, before it is answered 504.
    pub request_timeout: Duration,
    /// Largest request body accepted (413 past it).
    pub max_request_bytes: usize,
    /// Bytes of inference request bodies held at once, all requests together: a body that does
    /// not fit is answered 503 with `Retry-After` before (or as soon as) it would pass the
    /// budget, so memory is bounded by this, not by connections × `max_request_bytes`.
    pub max_buffered_bytes: usize,
    /// Runtime options for every model without its own.
    pub runtime: RuntimeOptions,
    /// Runtime options per model name.
    pub model_options: HashMap<String, RuntimeOptions>,
    /// Predictions remembered per served name for joining feedback, in memory.
    pub feedback_capacity: usize,
    /// The shared prediction index (`redis://…`), so that feedback joins at any replica; none
    /// keeps predictions in this process's memory.
    pub feedback_store: Option<String>,
    /// How long after a prediction its feedback is accepted.
    pub feedback_ttl: Duration,
    /// The online feature store (`redis://…`) versions trained with a feature view read their
    /// features from when a request names entities; none: requests send the features.
    pub feature_store: Option<String>,
    /// Longest a model download may take; past it the load fails and is retried later.
    pub load_timeout: Duration,
    /// How often this replica pushes its per-version counters (requests, latency, feedback,
    /// drift histograms) to the registry.
    pub report_interval: Duration,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            request_timeout: Duration::from_secs(10),
            max_request_bytes: 64 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            runtime: RuntimeOptions::default(),
            model_options: HashMap::new(),
            feedback_capacity: served::PREDICTION_CAPACITY,
            feedback_ttl: served::PREDICTION_TTL,
            feedback_store: None,
            feature_store: None,
            load_timeout: Duration::from_secs(600),
            report_interval: report::REPORT_INTERVAL,
        }
    }
}

impl ServingConfig {
    /// The runtime options for the model `name`.
    pub fn options_for(&self, name: &str) -> RuntimeOptions {
        self.model_options
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.runtime.clone())
    }

    /// The runtime options for a shadow of endpoint `name`: one worker with one thread and a
    /// short queue, so that a shadow cannot take the CPUs from the versions that answer.
    pub fn shadow_options(&self, name: &str) -> RuntimeOptions {
        RuntimeOptions {
            workers: 1,
            intra_op_threads: Some(1),
            inter_op_threads: 1,
            intra_op_spinning: false,
            queue_capacity: 64,
            low_priority: true,
            ..self.options_for(name)
        }
    }
}

/// Everything a serving handler needs; cheap to clone.
#[derive(Clone)]
pub struct ServingState {
    /// The served models.
    pub repository: Arc<ModelRepository>,
    /// Settings.
    pub config: Arc<ServingConfig>,
    /// Per-model request metrics.
    pub metrics: api::RequestMetrics,
    /// Set once the initial models are loaded (`/v2/health/ready`).
    pub ready: Arc<AtomicBool>,
    /// Bearer tokens (shared with the registry); none means open.
    pub tokens: ferry_api::http::Tokens,
    /// Where answered predictions are appended, when enabled.
    pub prediction_log: Option<ferry_feedback::log::PredictionLog>,
    /// Drift scores for Prometheus (updated by the reporter).
    pub drift_gauges: api::DriftGauges,
    /// Where predictions are remembered until their feedback arrives.
    pub predictions: ferry_feedback::SharedIndex,
    /// Request bodies being held, in KiB (`ServingConfig::max_buffered_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The online feature store, when configured.
    pub features: Option<Arc<features::OnlineFeatures>>,
}

pub use repository::ModelRepository;
