//! The registry's own counters (request metrics and their exposition are
//! [`ferry_api::http::metrics`]).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
