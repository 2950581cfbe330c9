//! Ferry's model registry.
//!
//! Versions ONNX models together with the git commit and training-data hashes they came from,
//! stores their bytes content-addressed in object storage, and is the control plane the other
//! services follow: aliases, endpoints (traffic policies) with the analysis of what serving
//! reports, and an event outbox every change is recorded in.
//!
//! [`router`] builds the whole HTTP API; the `ferry` binary only binds it to a socket. What the
//! registry shares with the other services (wire types, names, the drift and traffic math, the
//! HTTP plumbing, the client) is the contract crate, `ferry_api`.

use ferry_api::http::auth::Tokens;

pub mod amqp;
pub mod api;
pub mod auth;
pub mod blob_store;
pub mod catalog;
pub mod drift;
pub mod endpoints;
pub mod error;
pub mod feedback_queue;
pub mod gc;
pub mod lifecycle;
pub mod metrics;
pub mod relay;
pub mod store;
pub mod ui;
pub mod upload;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use api::router;
pub use blob_store::BlobStore;
pub use error::{Error, Result};
pub use store::{MetadataStore, ServingLock};
pub use upload::UploadLimits;

/// The registry's background jobs — the drift and lifecycle monitors, webhook delivery and, when configured,
/// the RabbitMQ relay — started together and stopped together: each stops at a safe point
/// (between rounds) when [`Background::shutdown`] is called.
pub struct Background {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Background {
    /// Starts the jobs of `config` on `store`, registering their metrics in `prometheus`. They
    /// are safe to run in several registries on one database.
    ///
    /// # Errors
    /// When metrics cannot be registered, or the webhook client cannot be built.
    pub fn start(
        store: &MetadataStore,
        config: &Config,
        prometheus: &prometheus::Registry,
    ) -> Result<Background> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        drift::spawn_drift_monitor(
            store.clone(),
            config.drift_interval,
            &mut tasks,
            stop.child_token(),
        );
        lifecycle::spawn_lifecycle_monitor(
            store.clone(),
            config.drift_interval,
            &mut tasks,
            stop.child_token(),
        );
        webhooks::spawn_webhooks(
            store.clone(),
            config.webhooks.clone(),
            prometheus,
            &mut tasks,
            stop.child_token(),
        )?;
        if let Some(relay) = config.relay.clone() {
            relay::spawn_relay(
                store.clone(),
                relay,
                prometheus,
                &mut tasks,
                stop.child_token(),
            )?;
        }
        Ok(Background { stop, tasks })
    }

    /// Starts the RabbitMQ feedback consumer with the others (it needs the prediction index the
    /// serving replicas share, so it starts once that is known).
    ///
    /// # Errors
    /// When its metrics cannot be registered.
    pub fn start_feedback_consumer(
        &mut self,
        store: &MetadataStore,
        index: ferry_feedback::SharedIndex,
        log: Option<ferry_feedback::log::PredictionLog>,
        config: feedback_queue::FeedbackQueueConfig,
        prometheus: &prometheus::Registry,
    ) -> Result<()> {
        feedback_queue::spawn_feedback_consumer(
            store.clone(),
            index,
            log,
            config,
            prometheus,
            &mut self.tasks,
            self.stop.child_token(),
        )
    }

    /// Asks every job to stop at its next safe point and waits for them, at most `grace`;
    /// jobs still running then are aborted (safe too: their work is at-least-once).
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                jobs = self.tasks.len(),
                "background jobs did not stop within the grace period; aborting them"
            );
            self.tasks.shutdown().await;
        }
    }
}

/// Settings of a running registry, validated once at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limits on uploads.
    pub upload: UploadLimits,
    /// Bearer tokens; none configured means an open server (loopback only).
    pub tokens: Tokens,
    /// Longest a JSON request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Longest `wait` a long-poll of the event log may ask for.
    pub max_event_wait: Duration,
    /// `/metrics` only for requests with a valid token (when tokens are configured).
    pub metrics_require_token: bool,
    /// Event waiters (SSE streams and long-polls with a `wait`) open at once; one more is a 503
    /// with `Retry-After`.
    pub max_event_waiters: usize,
    /// How long serving replicas' endpoint reports are kept; also the longest analysis window.
    pub report_retention: Duration,
    /// How often the drift monitor (`drift::spawn_drift_monitor`) judges endpoints, and the
    /// length of the window it judges; also how often the lifecycle monitor
    /// (`lifecycle::spawn_lifecycle_monitor`) judges maximum ages and decay.
    pub drift_interval: Duration,
    /// Webhook delivery (`webhooks::spawn_webhooks`).
    pub webhooks: webhooks::WebhookConfig,
    /// The RabbitMQ relay of every event (`relay::spawn_relay`), when `--amqp-url` is given.
    pub relay: Option<relay::RelayConfig>,
    /// The RabbitMQ feedback consumer, when `--feedback-queue` is given.
    pub feedback_queue: Option<feedback_queue::FeedbackQueueConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upload: UploadLimits::default(),
            tokens: Tokens::default(),
            request_timeout: Duration::from_secs(30),
            max_event_wait: Duration::from_secs(60),
            max_event_waiters: 1024,
            metrics_require_token: false,
            report_retention: Duration::from_secs(3600),
            drift_interval: drift::monitor::DEFAULT_INTERVAL,
            webhooks: webhooks::WebhookConfig::default(),
            relay: None,
            feedback_queue: None,
        }
    }
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Models, versions, aliases, events.
    pub store: MetadataStore,
    /// Model bytes.
    pub blobs: BlobStore,
    /// Settings.
    pub config: Arc<Config>,
    /// The Prometheus registry `/metrics` exposes.
    pub prometheus: Arc<prometheus::Registry>,
    /// Request metrics shared with the other routers of the process.
    pub http_metrics: ferry_api::http::HttpMetrics,
    /// Registry counters.
    pub metrics: metrics::RegistryMetrics,
    /// The prediction index serving replicas share, for feedback posted to the registry (none:
    /// such feedback gets 503 naming the flag).
    pub predictions: Option<ferry_feedback::SharedIndex>,
    /// Where accepted feedback is logged for training sets (`--prediction-log`), if anywhere.
    pub feedback_log: Option<ferry_feedback::log::PredictionLog>,
    /// One permit per open event waiter (`Config::max_event_waiters`).
    pub event_waiters: Arc<tokio::sync::Semaphore>,
    /// One permit per upload being received (`UploadLimits::max_concurrent`).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Builds the state, registering the registry's metrics in `prometheus`.
    ///
    /// # Errors
    /// When metrics cannot be registered (a second registry in the same Prometheus registry).
    pub fn new(
        store: MetadataStore,
        blobs: BlobStore,
        config: Config,
        prometheus: Arc<prometheus::Registry>,
        http_metrics: ferry_api::http::HttpMetrics,
    ) -> prometheus::Result<Self> {
        let metrics = metrics::RegistryMetrics::register(&prometheus)?;
        let event_waiters = Arc::new(tokio::sync::Semaphore::new(config.max_event_waiters));
        let uploads = Arc::new(tokio::sync::Semaphore::new(config.upload.max_concurrent));
        Ok(AppState {
            event_waiters,
            uploads,
            store,
            blobs,
            config: Arc::new(config),
            prometheus,
            http_metrics,
            metrics,
            predictions: None,
            feedback_log: None,
        })
    }

    /// Joins feedback posted to the registry through `index`.
    #[must_use]
    pub fn with_predictions(mut self, index: ferry_feedback::SharedIndex) -> Self {
        self.predictions = Some(index);
        self
    }

    /// Logs the feedback posted to the registry (HTTP or the queue) to `log`.
    #[must_use]
    pub fn with_feedback_log(mut self, log: ferry_feedback::log::PredictionLog) -> Self {
        self.feedback_log = Some(log);
        self
    }
}
