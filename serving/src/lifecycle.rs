//! Serving as a whole, started and stopped: [`Serving::start`] loads ONNX Runtime, registers the
//! metrics and builds the state the routes use; [`Serving::follow`] starts the follower and the
//! reporter on the handle's tasks; [`Serving::shutdown`] stops them at a safe point — the
//! follower between changes, the reporter after one last report, so the counts of a replica's
//! last seconds are not lost — and waits for them. The `ferry` binary composes this with the
//! registry's and binds the routes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use ferry_api::http::Tokens;
use ferry_api::storage::StoreRoot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::ArtifactCache;
use crate::catalog::SharedCatalog;
use crate::follow::{Follower, Loader, Selection};
use crate::repository::ModelRepository;
use crate::runtime::RuntimeMetrics;
use crate::{ServingConfig, ServingState, api, report};
use ferry_feedback::log::PredictionLog;

/// What a serving process starts with.
pub struct ServingOptions {
    /// The ONNX Runtime library, when not found the usual way.
    pub onnxruntime: Option<PathBuf>,
    /// Timeouts, limits and runtime options.
    pub config: ServingConfig,
    /// Where answered predictions are appended, when enabled.
    pub prediction_log: Option<StoreRoot>,
    /// Log request bodies too.
    pub log_inputs: bool,
    /// Tokens clients present; none means open (loopback only, checked by the caller).
    pub tokens: Tokens,
    /// This replica's name in reports and the prediction log.
    pub replica: String,
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// Metrics of the same names are registered already.
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// `--feedback-store` is not a Redis URL.
    #[error("feedback store: {0}")]
    FeedbackStore(String),
    /// `--feature-store` is not a Redis URL.
    #[error("feature store: {0}")]
    FeatureStore(String),
}

/// Serving, started.
pub struct Serving {
    /// What the routes use.
    pub state: ServingState,
    /// Loads versions into the state's repository.
    pub loader: Loader,
    replica: String,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    /// Sends the skew check's rows once [`Serving::follow`] gives the catalog.
    sample_sender: Option<crate::features::SampleSender>,
}

impl Serving {
    /// Loads ONNX Runtime, registers serving's metrics in `prometheus` and builds its state.
    /// Nothing is served yet: install models with [`Serving::loader`], or [`Serving::follow`]
    /// a catalog.
    ///
    /// # Errors
    /// [`StartError`].
    pub fn start(
        options: ServingOptions,
        prometheus: &prometheus::Registry,
    ) -> Result<Serving, StartError> {
        let library = crate::runtime::library::load(options.onnxruntime.as_deref())?;
        tracing::info!(path = %library.path().display(), "ONNX Runtime loaded");
        let runtime_metrics = RuntimeMetrics::register(prometheus)?;
        let request_metrics = api::RequestMetrics::register(prometheus)?;
        let prediction_log = match options.prediction_log {
            Some(store) => {
                tracing::info!(store = %store.display, inputs = options.log_inputs, "logging predictions");
                Some(PredictionLog::start(
                    store,
                    options.replica.clone(),
                    options.log_inputs,
                    prometheus,
                    "ferry_serving",
                )?)
            }
            None => None,
        };
        let config = Arc::new(options.config);
        let repository = Arc::new(ModelRepository::new());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let predictions: ferry_feedback::SharedIndex = match &config.feedback_store {
            Some(url) => {
                let (index, writer) = ferry_feedback::RedisIndex::connect(url, config.feedback_ttl)
                    .map_err(|e| StartError::FeedbackStore(e.to_string()))?;
                tracing::info!(
                    store = index.display(),
                    "predictions are indexed for feedback in Redis, shared by every replica"
                );
                tasks.spawn(writer.run(stop.child_token()));
                Arc::new(index)
            }
            None => Arc::new(ferry_feedback::LocalIndex::new(
                config.feedback_capacity,
                crate::served::PREDICTION_MAX_BYTES,
                config.feedback_ttl,
            )),
        };
        api::FeedbackIndexMetrics::register(prometheus, predictions.clone())?;
        // With a feature store, rows read for sampled entities go to the registry's skew check.
        let (features, sample_sender) = match &config.feature_store {
            Some(url) => {
                let store = ferry_features::OnlineStore::connect(url)
                    .map_err(|e| StartError::FeatureStore(e.to_string()))?;
                tracing::info!(
                    store = store.display(),
                    "versions trained with a feature view read features for named entities from this online store"
                );
                let (online, sender) = crate::features::OnlineFeatures::new(store, prometheus)?;
                (Some(Arc::new(online)), Some(sender))
            }
            None => (None, None),
        };
        // In KiB; never less than one body of the largest size accepted.
        let budget_kib = config.max_buffered_bytes.max(config.max_request_bytes) / 1024;
        let state = ServingState {
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget_kib.max(1))),
            repository: repository.clone(),
            config: config.clone(),
            metrics: request_metrics,
            ready: Arc::new(AtomicBool::new(false)),
            tokens: options.tokens,
            prediction_log,
            drift_gauges: api::DriftGauges::register(prometheus)?,
            predictions,
            features,
        };
        let loader = Loader {
            runtime: library,
            repository,
            metrics: runtime_metrics,
            config,
        };
        Ok(Serving {
            state,
            loader,
            replica: options.replica,
            stop,
            tasks,
            sample_sender,
        })
    }

    /// Follows `catalog` for `selection` (the process becomes ready once it is served), and
    /// reports this replica's counters to it.
    pub fn follow(&mut self, catalog: SharedCatalog, cache: ArtifactCache, selection: Selection) {
        let follower = Follower::new(
            catalog.clone(),
            cache,
            self.loader.clone(),
            selection,
            self.state.ready.clone(),
        );
        self.tasks.spawn(follower.run(self.stop.child_token()));
        if let Some(sender) = self.sample_sender.take() {
            self.tasks.spawn(sender.run(
                catalog.clone(),
                self.state.config.report_interval,
                self.stop.child_token(),
            ));
        }
        self.tasks.spawn(report::run(
            catalog,
            self.state.repository.clone(),
            self.replica.clone(),
            self.state.config.report_interval,
            Some(self.state.drift_gauges.clone()),
            self.stop.child_token(),
        ));
    }

    /// Marks the process ready with nothing to follow (models from files only).
    pub fn ready_without_following(&self) {
        self.state.ready.store(true, Ordering::Release);
    }

    /// The `/v2` routes.
    pub fn routes(&self) -> Router {
        crate::routes(self.state.clone())
    }

    /// `/healthz` (the process answers) and `/readyz` (the models to serve at start are loaded
    /// and warmed up, and it is not shutting down), for a process that runs serving alone.
    ///
    /// `/readyz` answers JSON details: `{"ready": bool, "feedback_store": {"store", "up",
    /// "error"?, …}}`. A feedback store that is down does not make the process unready:
    /// predictions are still answered (feedback gets 503 until it is back).
    pub fn health_routes(&self) -> Router {
        let ready = self.state.ready.clone();
        let predictions = self.state.predictions.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let (ready, predictions) = (ready.clone(), predictions.clone());
                    async move {
                        let ready = ready.load(Ordering::Acquire);
                        let status = if ready {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        let details = serde_json::json!({
                            "ready": ready,
                            "feedback_store": predictions.health(),
                        });
                        (status, axum::Json(details))
                    }
                }),
            )
    }

    /// Stops the follower and the reporter at a safe point (the reporter sends its last
    /// counters first) and waits for them, at most `grace`; what is still running then is
    /// aborted.
    pub async fn shutdown(mut self, grace: Duration) {
        self.state.ready.store(false, Ordering::Release);
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                "serving's tasks did not stop within the grace period; aborting them"
            );
            self.tasks.shutdown().await;
        }
    }
}
