//! Business feedback, joined to the prediction it is about at whichever replica receives it.
//!
//! Serving remembers each prediction it answers under its id (the client's `id`, else the
//! request id it got back) in a [`PredictionIndex`]; feedback posted later takes that entry back
//! out, once, and counts as the answering version's reward and accuracy.
//!
//! - [`local`]: the in-process index, for one replica (`ferry up`'s default).
//! - [`redis`]: the index shared by every replica in Redis, so that feedback joins at any of
//!   them (`--feedback-store redis://…`).
//! - [`join`]: what a feedback body may hold and how a label is judged against the prediction.
//! - [`log`]: the prediction and feedback logs serving and the registry append to object storage.
//! - [`export`]: a training set from the prediction and feedback logs (`ferry feedback export`).

#![warn(missing_docs)]

pub mod export;
pub mod join;
pub mod local;
pub mod log;
pub mod redis;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_api::traffic::Route;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use join::{FEEDBACK_SHAPE, FeedbackBody, Label, MAX_ID_BYTES, check_id, judge};
pub use local::{FeedbackStoreStats, LocalIndex, RecentPredictions};
pub use redis::RedisIndex;

/// What was predicted under one id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The version that answered.
    pub version: i64,
    /// How the request was routed.
    pub route: Route,
    /// The predicted class per row, when the outputs read as classes.
    pub classes: Option<Vec<i64>>,
    /// When the prediction was made.
    pub at: DateTime<Utc>,
}

/// Why feedback could not be joined to a prediction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// No prediction with this id is remembered: never made, evicted for room, or (in Redis)
    /// expired.
    #[error("no recent prediction has this id")]
    Unknown,
    /// The prediction is older than the time-to-live.
    #[error("the prediction with this id is too old for feedback")]
    Expired,
    /// Feedback for this id was already taken; a second one must not count twice.
    #[error("feedback for this prediction was already given")]
    AlreadyGiven,
    /// The shared index cannot be reached now; the feedback may be sent again later.
    #[error("the prediction index is unavailable: {0}")]
    Unavailable(String),
}

/// How an index is doing, for `/readyz` details and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexHealth {
    /// `memory` or `redis`.
    pub store: &'static str,
    /// Whether the last call to the store succeeded (always, in memory).
    pub up: bool,
    /// Why the last call failed, while it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Predictions held, when the index knows it cheaply (in memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    /// Predictions that could not be remembered (the store was down or the write queue full):
    /// their feedback will be unknown.
    pub dropped: u64,
    /// Predictions dropped for room before they expired (in memory).
    pub evicted: u64,
}

/// Where predictions are remembered until their feedback arrives.
pub trait PredictionIndex: Send + Sync + 'static {
    /// Remembers `prediction` under `id` for endpoint `endpoint`. Never blocks and never fails
    /// the prediction: what cannot be written is counted in [`IndexHealth::dropped`].
    fn remember(&self, endpoint: &str, id: &str, prediction: Prediction);

    /// Takes the prediction made under `id` for its feedback; afterwards the id answers
    /// [`JoinError::AlreadyGiven`] until the prediction would have expired.
    fn take<'a>(
        &'a self,
        endpoint: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, JoinError>>;

    /// The prediction made under `id`, left in place: for consumers that record feedback
    /// idempotently first (a queue consumer redelivered after a crash), then [`take`] it.
    ///
    /// [`take`]: PredictionIndex::take
    fn peek<'a>(
        &'a self,
        endpoint: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, JoinError>>;

    /// How the index is doing.
    fn health(&self) -> IndexHealth;
}

/// A shared index, as services hold it.
pub type SharedIndex = Arc<dyn PredictionIndex>;
