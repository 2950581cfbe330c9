//! The operator's Prometheus metrics, served on `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Counters and histograms of the reconcile loop.
#[derive(Clone)]
pub struct Metrics {
    /// Where they are registered (what `/metrics` encodes).
    pub registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// How long a reconcile took.
    pub reconcile_seconds: Histogram,
    /// Rollout steps decided by the engine, by reason (`RolloutStarted`, `Promoted`, …).
    pub rollout_steps: IntCounterVec,
    /// Failed registry calls, by call.
    pub registry_errors: IntCounterVec,
    /// Kubernetes Events or registry events that could not be recorded.
    pub events_dropped: IntCounter,
}

impl Metrics {
    /// Registers the metrics in a fresh registry.
    ///
    /// # Errors
    /// When a metric is malformed or registered twice (a programming error).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "ferry_operator_reconciles_total",
                "ModelDeployment reconciles by result",
            ),
            &["result"],
        )?;
        let reconcile_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ferry_operator_reconcile_duration_seconds",
                "Time one reconcile took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let rollout_steps = IntCounterVec::new(
            Opts::new(
                "ferry_operator_rollout_steps_total",
                "Rollout steps decided, by reason",
            ),
            &["reason"],
        )?;
        let registry_errors = IntCounterVec::new(
            Opts::new(
                "ferry_operator_registry_errors_total",
                "Registry calls that failed, by call",
            ),
            &["call"],
        )?;
        let events_dropped = IntCounter::new(
            "ferry_operator_events_dropped_total",
            "Kubernetes or registry events that could not be recorded",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_seconds.clone()))?;
        registry.register(Box::new(rollout_steps.clone()))?;
        registry.register(Box::new(registry_errors.clone()))?;
        registry.register(Box::new(events_dropped.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            rollout_steps,
            registry_errors,
            events_dropped,
        })
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}
