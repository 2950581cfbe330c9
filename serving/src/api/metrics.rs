//! Per-endpoint request metrics (the runtime exports queue depth, batch sizes and inference
//! time per model version).

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Latency buckets in seconds, from tens of microseconds to the request timeout.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Drift scores of the last window, by endpoint, version, feature (`*` for the worst) and
/// metric (`psi`, `kl`, `js`).
#[derive(Clone)]
pub struct DriftGauges {
    scores: GaugeVec,
}

impl DriftGauges {
    /// Registers the gauges in `registry`.
    ///
    /// # Errors
    /// When they are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let scores = GaugeVec::new(
            Opts::new(
                "ferry_serving_drift_score",
                "Distance between live inputs (last 5 minutes) and the training profile, by endpoint, version, feature (* = the worst) and metric (psi, kl = KL(live || training), js = Jensen-Shannon distance).",
            ),
            &["endpoint", "version", "feature", "metric"],
        )?;
        registry.register(Box::new(scores.clone()))?;
        Ok(DriftGauges { scores })
    }

    /// Sets the scores of one version.
    pub fn set(&self, endpoint: &str, version: &str, analysis: &ferry_api::drift::DriftAnalysis) {
        let set = |feature: &str, scores: &ferry_api::drift::Scores| {
            for (metric, value) in [("psi", scores.psi), ("kl", scores.kl), ("js", scores.js)] {
                self.scores
                    .with_label_values(&[endpoint, version, feature, metric])
                    .set(value);
            }
        };
        if let Some(overall) = &analysis.scores {
            set("*", overall);
        }
        for (name, feature) in &analysis.features {
            set(name, &feature.scores);
        }
    }
}

/// Requests, latencies and feedback by endpoint (the served name), version and route.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    feedback: IntCounterVec,
    rewards: GaugeVec,
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
                "Inference requests by endpoint, version, route (stable, canary, direct) and outcome (ok, invalid, overloaded, deadline, model_error, …).",
            ),
            &["endpoint", "version", "route", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_serving_request_duration_seconds",
                "Time from receiving an inference request to having its answer, decoding and encoding included.",
            )
            .buckets(BUCKETS.to_vec()),
            &["endpoint", "version", "route"],
        )?;
        let feedback = IntCounterVec::new(
            Opts::new(
                "ferry_serving_feedback_total",
                "Feedback joined to predictions, by endpoint, version and kind (reward, correct, incorrect).",
            ),
            &["endpoint", "version", "kind"],
        )?;
        // A gauge, not a counter: rewards may be negative.
        let rewards = GaugeVec::new(
            Opts::new(
                "ferry_serving_reward_sum",
                "Sum of the rewards received, by endpoint and version (divide by the reward count for the mean).",
            ),
            &["endpoint", "version"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(feedback.clone()))?;
        registry.register(Box::new(rewards.clone()))?;
        Ok(RequestMetrics {
            requests,
            duration,
            feedback,
            rewards,
        })
    }

    /// Records one request.
    pub fn observe(&self, endpoint: &str, version: &str, route: &str, outcome: &str, seconds: f64) {
        self.requests
            .with_label_values(&[endpoint, version, route, outcome])
            .inc();
        if outcome == "ok" {
            self.duration
                .with_label_values(&[endpoint, version, route])
                .observe(seconds);
        }
    }

    /// Records one feedback.
    pub fn feedback(
        &self,
        endpoint: &str,
        version: &str,
        reward: Option<f64>,
        correct: Option<bool>,
    ) {
        if let Some(r) = reward {
            self.feedback
                .with_label_values(&[endpoint, version, "reward"])
                .inc();
            self.rewards.with_label_values(&[endpoint, version]).add(r);
        }
        if let Some(c) = correct {
            let kind = if c { "correct" } else { "incorrect" };
            self.feedback
                .with_label_values(&[endpoint, version, kind])
                .inc();
        }
    }
}

/// The prediction index's health, read when Prometheus scrapes:
/// `ferry_feedback_store_up{store}`, `ferry_feedback_predictions_dropped_total{store}` (not
/// remembered: the store was down or the write queue full, so their feedback will be unknown)
/// and `ferry_feedback_predictions_evicted_total{store}` (dropped for room before they expired).
pub struct FeedbackIndexMetrics {
    index: ferry_feedback::SharedIndex,
    up: prometheus::IntGaugeVec,
    dropped: IntCounterVec,
    evicted: IntCounterVec,
}

impl FeedbackIndexMetrics {
    /// Registers the collector of `index` in `registry`.
    ///
    /// # Errors
    /// When its metrics are already registered.
    pub fn register(
        registry: &Registry,
        index: ferry_feedback::SharedIndex,
    ) -> prometheus::Result<()> {
        let up = prometheus::IntGaugeVec::new(
            Opts::new(
                "ferry_feedback_store_up",
                "1 when the last call to the prediction index (memory or redis) succeeded; while 0, predictions are answered and feedback gets 503.",
            ),
            &["store"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "ferry_feedback_predictions_dropped_total",
                "Predictions the index could not remember (store down or write queue full): feedback on them is unknown.",
            ),
            &["store"],
        )?;
        let evicted = IntCounterVec::new(
            Opts::new(
                "ferry_feedback_predictions_evicted_total",
                "Predictions dropped for room before their time-to-live ended (in-memory index).",
            ),
            &["store"],
        )?;
        registry.register(Box::new(FeedbackIndexMetrics {
            index,
            up,
            dropped,
            evicted,
        }))
    }
}

impl prometheus::core::Collector for FeedbackIndexMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.up.desc();
        descs.extend(self.dropped.desc());
        descs.extend(self.evicted.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let health = self.index.health();
        let labels = [health.store];
        self.up.with_label_values(&labels).set(i64::from(health.up));
        // The counters follow the index's own totals, which only grow.
        let advance = |counter: &IntCounterVec, total: u64| {
            let c = counter.with_label_values(&labels);
            c.inc_by(total.saturating_sub(c.get()));
        };
        advance(&self.dropped, health.dropped);
        advance(&self.evicted, health.evicted);
        let mut families = self.up.collect();
        families.extend(self.dropped.collect());
        families.extend(self.evicted.collect());
        families
    }
}
