//! The drift monitor: the background judge that raises `drift.detected` once per incident and
//! `drift.recovered` when the score comes back, re-arming detection. The drift math it judges
//! with (profiles, scores, the comparison of live histograms with a profile) is the contract's
//! ([`ferry_api::drift`]), shared with serving.

pub mod monitor;

pub use monitor::{DriftStateRecord, evaluate_once, spawn_drift_monitor};
