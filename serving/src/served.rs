//! What serving holds for each served name: its loaded versions ([`ServedVersion`]) and what is
//! counted about it across versions and policies ([`Traffic`]). The repository's table and the
//! shadows both use these; neither depends on the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::runtime::LoadedModel;
use crate::traffic::EndpointStats;

/// One loaded version of a model.
#[derive(Clone)]
pub struct ServedVersion {
    /// The version's number: the registry's, or 1 for a model served from a file.
    pub number: i64,
    /// The same as the label clients see (`model_version`, `/versions/{v}`).
    pub version: String,
    /// The running model.
    pub model: LoadedModel,
    /// SHA-256 of the ONNX bytes, when known.
    pub sha256: Option<String>,
    /// When it finished loading.
    pub loaded_at: DateTime<Utc>,
    /// Its training profile, when one was pushed with it: live inputs are binned on its edges.
    pub profile: Option<Arc<ferry_api::drift::Profile>>,
    /// When its lineage names a feature view: how requests name entities instead of sending the
    /// features.
    pub features: Option<Arc<crate::features::FeatureInput>>,
}

/// How many recent predictions each served name remembers for feedback in memory, by default.
pub const PREDICTION_CAPACITY: usize = 100_000;
/// What the predictions each served name remembers in memory may cost at most, in bytes.
pub const PREDICTION_MAX_BYTES: usize = 128 * 1024 * 1024;
/// How long a prediction can receive feedback, by default.
pub const PREDICTION_TTL: Duration = Duration::from_secs(3600);
/// Resolution and reach of the per-version counters behind `/stats?window=`.
pub const STATS_SLOT: Duration = Duration::from_secs(1);
/// See [`STATS_SLOT`].
pub const STATS_HORIZON: Duration = Duration::from_secs(15 * 60);

/// What is counted about a served name, kept across policy changes and version swaps.
pub struct Traffic {
    /// Per-version counters.
    pub stats: Arc<EndpointStats>,
    /// Counts live inputs into the drift histograms, started on first use (it needs the runtime).
    drift: std::sync::OnceLock<crate::drift::DriftRecorder>,
}

impl Traffic {
    /// Fresh counters for `name`.
    pub fn new(name: &str) -> Self {
        Traffic {
            stats: Arc::new(EndpointStats::new(
                name,
                STATS_SLOT,
                STATS_HORIZON,
                Instant::now(),
            )),
            drift: std::sync::OnceLock::new(),
        }
    }

    /// The drift recorder of this served name (started on first use).
    pub fn drift(&self) -> &crate::drift::DriftRecorder {
        self.drift
            .get_or_init(|| crate::drift::DriftRecorder::start(self.stats.clone()))
    }
}
