//! Business feedback posted to the registry (`POST /api/v1/endpoints/{name}/feedback`): joined
//! through the prediction index the serving replicas share, and stored at once as a report of
//! the pseudo-replica [`FEEDBACK_REPLICA`], so it counts in the analysis like the feedback every
//! replica reports, and is durable before it is acknowledged.

use std::collections::BTreeMap;

use ferry_api::traffic::{Report, VersionCounters};
use ferry_feedback::{FeedbackBody, JoinError, SharedIndex, judge};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::MetadataStore;

/// The replica name the registry's own feedback is reported under.
pub const FEEDBACK_REPLICA: &str = "registry-feedback";

/// What a feedback joined.
#[derive(Debug, Clone, Serialize)]
pub struct Joined {
    /// The prediction's id.
    pub id: String,
    /// The version that answered it.
    pub model_version: String,
    /// `stable` or `canary`.
    pub route: &'static str,
    /// Whether the label matched the prediction; `null` without a label or classes.
    pub correct: Option<bool>,
}

/// Joins `feedback` to its prediction of endpoint `name` and records it.
///
/// # Errors
/// 400 for an invalid body, 404 for an unknown endpoint or prediction, 409 for a second
/// feedback, 503 when the index is down or this registry has none.
pub async fn record(
    store: &MetadataStore,
    index: Option<&SharedIndex>,
    name: &str,
    feedback: FeedbackBody,
) -> Result<Joined> {
    feedback.validate()?;
    let Some(index) = index else {
        return Err(Error::Unavailable(
            "this registry has no prediction index: start it with --feedback-store redis://… \
             (the Redis the serving replicas share), or post feedback to a serving replica"
                .into(),
        ));
    };
    // An unknown endpoint is a 404 before anything is taken from the index.
    store.get_endpoint(name).await?;
    let entry = index.take(name, &feedback.id).await.map_err(|e| match e {
        JoinError::AlreadyGiven => Error::Conflict(format!(
            "feedback for prediction `{}` was already recorded; it counts once",
            feedback.id
        )),
        JoinError::Unavailable(why) => {
            Error::Unavailable(format!("feedback cannot be joined now: {why}"))
        }
        other => Error::NotFound(format!("{other}: `{}`", feedback.id)),
    })?;
    let correct = judge(feedback.label.as_ref(), entry.classes.as_deref());
    let mut counters = VersionCounters::default();
    if let Some(reward) = feedback.reward {
        counters.feedback.rewards = 1;
        counters.feedback.reward_sum = reward;
    }
    if let Some(correct) = correct {
        counters.feedback.labels = 1;
        counters.feedback.correct = u64::from(correct);
    }
    let report = Report {
        id: None,
        replica: FEEDBACK_REPLICA.to_string(),
        interval_seconds: 0.001,
        revision: None,
        versions: BTreeMap::from([(entry.version, counters)]),
        load_error: None,
    };
    store.record_report(name, report).await?;
    Ok(Joined {
        id: feedback.id,
        model_version: entry.version.to_string(),
        route: entry.route.as_str(),
        correct,
    })
}
