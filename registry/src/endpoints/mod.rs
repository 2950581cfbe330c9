//! Endpoints: the traffic policy serving follows, and the per-version counters serving replicas
//! report back.
//!
//! This module is the pure core: validating a policy or a report, evaluating `If-Match` /
//! `If-None-Match`, parsing a window and summing reports into an analysis. It knows nothing of
//! HTTP or SQL; the store (`store/endpoints.rs`, `store/reports.rs`) runs these inside its
//! transactions and the API (`api/endpoints.rs`) only extracts and maps.

mod analyze;
mod policy;
mod preconditions;
mod report;
mod rollout;

pub use analyze::{ReceivedReport, TrafficRole, analyze, analyze_with_profiles};
pub use policy::{MAX_SHADOWS, VersionUse, referenced_versions, validate_policy};
pub use preconditions::{Preconditions, Tags, etag};
pub use report::{
    MAX_INTERVAL_SECONDS, MAX_LOAD_ERROR_BYTES, MAX_REPLICA_CHARS, MAX_REPORT_VERSIONS,
    parse_window, validate_report,
};
pub use rollout::{MAX_ROLLOUT_MESSAGE_CHARS, MAX_ROLLOUT_REASON_CHARS, validate_rollout_step};
