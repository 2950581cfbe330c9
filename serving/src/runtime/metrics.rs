//! Prometheus instruments for the runtime, labelled by model and version.
//!
//! The runtime records into `prometheus` types directly rather than into a stats struct of its
//! own: they are lock-free atomics already, `/metrics` exports exactly what was observed without
//! a second copy or a custom collector, and tests read the same numbers operators will see.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Rows per run: powers of two up to the largest batch sizes anyone configures.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Seconds, from a tiny MLP's microseconds to a large model's seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const LABELS: &[&str] = &["model", "version"];

/// The runtime's metric families, shared by every loaded model of a process.
#[derive(Clone, Debug)]
pub struct RuntimeMetrics {
    queue_depth: IntGaugeVec,
    batch_size: HistogramVec,
    inference_seconds: HistogramVec,
    queue_seconds: HistogramVec,
    dropped: IntCounterVec,
}

impl RuntimeMetrics {
    /// Creates the families and registers them in `registry`.
    ///
    /// # Errors
    /// When metrics of the same names are already registered there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.batch_size.clone()))?;
        registry.register(Box::new(metrics.inference_seconds.clone()))?;
        registry.register(Box::new(metrics.queue_seconds.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        Ok(metrics)
    }

    /// Creates the families without registering them anywhere (tests, benchmarks, tools).
    ///
    /// # Errors
    /// Never in practice: the names and buckets are constants that `prometheus` accepts.
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(RuntimeMetrics {
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "ferry_serving_queue_depth",
                    "Requests admitted to a model and not yet answered (queued or running).",
                ),
                LABELS,
            )?,
            batch_size: HistogramVec::new(
                HistogramOpts::new(
                    "ferry_serving_batch_size",
                    "Rows per ONNX Runtime run; above 1 when dynamic batching merged requests.",
                )
                .buckets(BATCH_BUCKETS.to_vec()),
                LABELS,
            )?,
            inference_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ferry_serving_inference_seconds",
                    "Time of one ONNX Runtime run, including stacking and splitting its batch.",
                )
                .buckets(SECONDS_BUCKETS.to_vec()),
                LABELS,
            )?,
            queue_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ferry_serving_queue_seconds",
                    "Time a request waited between admission and the start of its run.",
                )
                .buckets(SECONDS_BUCKETS.to_vec()),
                LABELS,
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "ferry_serving_requests_dropped_total",
                    "Requests never run: overloaded (queue full), deadline (expired before \
                     their run), cancelled (caller went away while queued).",
                ),
                &["model", "version", "reason"],
            )?,
        })
    }

    /// The instruments of one model version.
    #[must_use]
    pub fn model(&self, model: &str, version: &str) -> ModelMetrics {
        // Label arity matches the families' declarations above, so these lookups cannot fail.
        let labels = [model, version];
        let dropped = |reason: &str| self.dropped.with_label_values(&[model, version, reason]);
        ModelMetrics {
            model: model.to_owned(),
            version: version.to_owned(),
            queue_depth: self.queue_depth.with_label_values(&labels),
            batch_size: self.batch_size.with_label_values(&labels),
            inference_seconds: self.inference_seconds.with_label_values(&labels),
            queue_seconds: self.queue_seconds.with_label_values(&labels),
            overloaded: dropped("overloaded"),
            expired: dropped("deadline"),
            cancelled: dropped("cancelled"),
        }
    }

    /// Removes a version's series, once it is unloaded, so label sets do not pile up over
    /// deployments.
    pub fn forget(&self, model: &str, version: &str) {
        // A series that was never created is not an error worth reporting.
        let labels = [model, version];
        let _ = self.queue_depth.remove_label_values(&labels);
        let _ = self.batch_size.remove_label_values(&labels);
        let _ = self.inference_seconds.remove_label_values(&labels);
        let _ = self.queue_seconds.remove_label_values(&labels);
        for reason in ["overloaded", "deadline", "cancelled"] {
            let _ = self.dropped.remove_label_values(&[model, version, reason]);
        }
    }
}

/// The instruments of one model version, and its name for logs and thread names.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    model: String,
    version: String,
    pub(crate) queue_depth: IntGauge,
    pub(crate) batch_size: Histogram,
    pub(crate) inference_seconds: Histogram,
    pub(crate) queue_seconds: Histogram,
    pub(crate) overloaded: IntCounter,
    pub(crate) expired: IntCounter,
    pub(crate) cancelled: IntCounter,
}

impl ModelMetrics {
    /// Instruments registered nowhere, for tests and tools that only read them back.
    ///
    /// # Errors
    /// Never in practice (see [`RuntimeMetrics::unregistered`]).
    pub fn detached(model: &str, version: &str) -> prometheus::Result<Self> {
        Ok(RuntimeMetrics::unregistered()?.model(model, version))
    }

    /// The model name these instruments are labelled with.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The version label.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Requests admitted and not yet answered.
    #[must_use]
    pub fn queue_depth(&self) -> &IntGauge {
        &self.queue_depth
    }

    /// Rows per run: its count is the number of runs, its sum the number of rows run.
    #[must_use]
    pub fn batch_size(&self) -> &Histogram {
        &self.batch_size
    }

    /// Seconds per run.
    #[must_use]
    pub fn inference_seconds(&self) -> &Histogram {
        &self.inference_seconds
    }

    /// Seconds each request waited before its run started.
    #[must_use]
    pub fn queue_seconds(&self) -> &Histogram {
        &self.queue_seconds
    }

    /// Requests refused because the queue was full.
    #[must_use]
    pub fn overloaded(&self) -> &IntCounter {
        &self.overloaded
    }

    /// Requests not run because their deadline had passed.
    #[must_use]
    pub fn expired(&self) -> &IntCounter {
        &self.expired
    }

    /// Requests not run because their caller had gone.
    #[must_use]
    pub fn cancelled(&self) -> &IntCounter {
        &self.cancelled
    }
}
