//! Prometheus metrics of webhook delivery. No label names a webhook or URL: label values stay
//! few, and URLs (which may carry tokens) stay out of the metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges of webhook delivery.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// Attempts by outcome: `success`, `http_error`, `timeout`, `transport_error`.
    pub attempts: IntCounterVec,
    /// Deliveries that reached a final state, by outcome: `delivered`, `dead`.
    pub deliveries: IntCounterVec,
    /// Deliveries queued by the fan-out.
    pub queued: prometheus::IntCounter,
    /// Time from sending a request to its answer (or failure), by outcome.
    pub duration: HistogramVec,
    /// Deliveries waiting for an attempt, across webhooks.
    pub pending: IntGauge,
    /// Deliveries in the dead-letter lists, across webhooks.
    pub dead_letters: IntGauge,
}

impl WebhookMetrics {
    /// Registers the metrics in `registry`.
    ///
    /// # Errors
    /// When metrics of the same names are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "ferry_webhook_delivery_attempts_total",
                "Webhook delivery attempts by outcome: success (2xx), http_error (other status), timeout, transport_error.",
            ),
            &["outcome"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "ferry_webhook_deliveries_total",
                "Webhook deliveries that reached a final state, by outcome: delivered or dead (moved to the dead-letter list).",
            ),
            &["outcome"],
        )?;
        let queued = prometheus::IntCounter::new(
            "ferry_webhook_deliveries_queued_total",
            "Webhook deliveries queued by matching events against subscriptions.",
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_webhook_attempt_duration_seconds",
                "Time from sending a webhook request to its answer or failure.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["outcome"],
        )?;
        let pending = IntGauge::new(
            "ferry_webhook_pending_deliveries",
            "Webhook deliveries waiting for their first attempt or a retry.",
        )?;
        let dead_letters = IntGauge::new(
            "ferry_webhook_dead_letters",
            "Webhook deliveries in the dead-letter lists (replay them with POST …/dead-letters/{id}/replay).",
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        Ok(WebhookMetrics {
            attempts,
            deliveries,
            queued,
            duration,
            pending,
            dead_letters,
        })
    }
}
