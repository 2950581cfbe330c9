//! Data drift: is what a model sees in production still what it was trained on?
//!
//! - [`profile`]: the training profile stored with a version (per-feature histograms on quantile
//!   bin edges), its validation, and the one binning rule [`bucket`].
//! - [`profiling`]: building a profile from training data, CSV or Parquet, in two streaming
//!   passes.
//! - [`score`]: PSI, KL(live ‖ training) and Jensen–Shannon distance between two histograms.
//! - [`compare`]: a version's live histograms ([`crate::traffic::DriftCounters`], reported by
//!   serving replicas) scored against its profile, per feature and overall.
//!
//! All pure. The registry's drift monitor judges endpoints with these; serving records live
//! histograms with the same types and scores them for its local `/stats`.

pub mod compare;
pub mod profile;
pub mod profiling;
pub mod score;

pub use compare::{
    DriftAnalysis, FeatureDrift, FeatureHistogram, VersionHistograms, analyze_drift,
    feature_histograms,
};
pub use profile::{FeatureProfile, InputProfile, Profile, Summary, bucket};
pub use profiling::{
    Header, ProfileError, ProfileOptions, profile_csv, profile_csv_file, profile_file, profile_rows,
};
pub use score::Scores;
