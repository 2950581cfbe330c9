//! Traffic: what serving replicas count per version, and what those counts say.
//!
//! - [`counters`]: the counters a replica keeps and reports ([`VersionCounters`], [`Report`]):
//!   requests, errors, a latency histogram, shadow comparisons, feedback and drift histograms,
//!   all merging by addition so reports sum in any order.
//! - [`summary`]: summing counters (one replica's window, or every replica's reports) into the
//!   per-version numbers an endpoint is judged on ([`EndpointAnalysis`]). Serving's `/stats` and
//!   the registry's `/analysis` both use [`summary::summarize`].
//! - [`policy`]: an endpoint's traffic policy validated, and the role of each version in it.
//! - [`report`]: a report validated, and an analysis window parsed.
//! - [`series`]: the analysis step by step over a window (the web UI's charts).

pub mod counters;
pub mod policy;
pub mod report;
pub mod series;
pub mod summary;

pub use counters::{
    DriftCounters, DriftValue, EndpointAnalysis, FeedbackCounters, LatencyHistogram, Report,
    ShadowCounters, VersionAnalysis, VersionCounters, diff_bucket, latency_bounds_us,
};
pub use policy::{
    MAX_SHADOWS, Route, TrafficRole, VersionUse, referenced_versions, validate_policy,
};
pub use report::{
    MAX_INTERVAL_SECONDS, MAX_LOAD_ERROR_BYTES, MAX_REPLICA_CHARS, MAX_REPORT_ID_CHARS,
    MAX_REPORT_VERSIONS, parse_window, validate_report,
};
pub use series::{AnalysisSeries, SeriesPoint, VersionPoint, analysis_series, parse_step};
pub use summary::{ReceivedReport, summarize, summarize_reports};
