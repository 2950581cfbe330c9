//! Data drift: is what a model sees in production still what it was trained on?
//!
//! - [`profile`]: the training profile stored with a version (per-feature histograms on quantile
//!   bin edges), its validation, the one binning rule [`bucket`], and a streaming CSV builder.
//! - [`score`]: PSI, KL(live ‖ training) and Jensen–Shannon distance between two histograms.
//! - [`analyze`]: a version's live histograms ([`crate::analysis::DriftCounters`], reported by
//!   serving replicas) scored against its profile, per feature and overall.
//! - [`monitor`]: the background judge that raises `drift.detected` once per incident and
//!   `drift.recovered` when the score comes back, re-arming detection.
//!
//! Everything but the monitor's shell is pure and shared with serving, which records live
//! histograms with the same types and scores them for its local `/stats`.

pub mod analyze;
pub mod monitor;
pub mod profile;
pub mod score;

pub use analyze::{DriftAnalysis, FeatureDrift, analyze_drift};
pub use monitor::{DriftStateRecord, evaluate_once, spawn_drift_monitor};
pub use profile::{
    CsvOptions, FeatureProfile, Header, InputProfile, Profile, ProfileError, Summary, bucket,
    profile_csv, profile_csv_file, profile_rows,
};
pub use score::Scores;
