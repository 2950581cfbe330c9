//! Business feedback posted to the registry (`POST /api/v1/endpoints/{name}/feedback`): joined
//! through the prediction index the serving replicas share, and stored at once as a report of
//! the pseudo-replica [`FEEDBACK_REPLICA`], so it counts in the analysis like the feedback every
//! replica reports, and is durable before it is acknowledged. With a log (`--prediction-log`),
//! each accepted feedback is also appended to `feedback/<endpoint>/<day>/`, next to what serving
//! writes, for `ferry feedback export`.

use std::collections::BTreeMap;

use ferry_api::traffic::{Report, VersionCounters};
use ferry_feedback::log::{FeedbackRecord, PredictionLog};
use ferry_feedback::{FeedbackBody, JoinError, Prediction, SharedIndex, judge};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::MetadataStore;

/// The replica name the registry's own feedback is reported under.
pub const FEEDBACK_REPLICA: &str = "registry-feedback";

/// How an idempotent recording went ([`record_once`]).
#[derive(Debug, Clone)]
pub enum Recorded {
    /// Counted now (or by an earlier attempt of the same message, which the report id makes
    /// count once).
    Joined(Joined),
    /// The prediction's feedback was already taken (by an earlier attempt that got as far as
    /// taking it, or by feedback through another way): nothing more to count.
    AlreadyCounted,
}

/// Joins and records `feedback` so that trying again after a crash at any moment counts it once:
/// the prediction is read without taking it, the feedback is stored as a report whose id derives
/// from the endpoint and prediction id (the registry stores a report id once), and only then is
/// the prediction taken from the index. For consumers that may see a message twice (the RabbitMQ
/// feedback consumer). The log may get a line twice for one prediction (a crash between the
/// report and the take); `ferry feedback export` keeps one per id.
///
/// # Errors
/// As [`record`]: 400 invalid, 404 unknown endpoint or prediction, 503 index down.
pub async fn record_once(
    store: &MetadataStore,
    index: &SharedIndex,
    log: Option<&PredictionLog>,
    name: &str,
    feedback: FeedbackBody,
) -> Result<Recorded> {
    use sha2::{Digest, Sha256};
    feedback.validate()?;
    store.get_endpoint(name).await?;
    let entry = match index.peek(name, &feedback.id).await {
        Ok(entry) => entry,
        Err(JoinError::AlreadyGiven) => return Ok(Recorded::AlreadyCounted),
        Err(JoinError::Unavailable(why)) => {
            return Err(Error::Unavailable(format!(
                "feedback cannot be joined now: {why}"
            )));
        }
        Err(other) => return Err(Error::NotFound(format!("{other}: `{}`", feedback.id))),
    };
    let digest = Sha256::digest(format!("{name}/{}", feedback.id).as_bytes());
    let report_id = format!("feedback-{}", hex::encode(&digest[..20]));
    let correct = judge(feedback.label.as_ref(), entry.classes.as_deref());
    store
        .record_report(
            name,
            report(entry.version, &feedback, correct, Some(report_id)),
        )
        .await?;
    write_log(log, name, &feedback, &entry, correct);
    // Counted; taking it now makes a second feedback through any way a 409. Should this fail,
    // a retry of the same message finds the report already stored.
    if let Err(e) = index.take(name, &feedback.id).await {
        tracing::debug!(endpoint = %name, id = %feedback.id, error = %e, "taking a recorded prediction failed");
    }
    Ok(Recorded::Joined(Joined {
        id: feedback.id,
        model_version: entry.version.to_string(),
        route: entry.route.as_str(),
        correct,
    }))
}

/// The report that counts one feedback for `version`.
fn report(
    version: i64,
    feedback: &FeedbackBody,
    correct: Option<bool>,
    id: Option<String>,
) -> Report {
    let mut counters = VersionCounters::default();
    if let Some(reward) = feedback.reward {
        counters.feedback.rewards = 1;
        counters.feedback.reward_sum = reward;
    }
    if let Some(correct) = correct {
        counters.feedback.labels = 1;
        counters.feedback.correct = u64::from(correct);
    }
    Report {
        id,
        replica: FEEDBACK_REPLICA.to_string(),
        interval_seconds: 0.001,
        revision: None,
        versions: BTreeMap::from([(version, counters)]),
        load_error: None,
    }
}

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
    log: Option<&PredictionLog>,
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
    store
        .record_report(name, report(entry.version, &feedback, correct, None))
        .await?;
    write_log(log, name, &feedback, &entry, correct);
    Ok(Joined {
        id: feedback.id,
        model_version: entry.version.to_string(),
        route: entry.route.as_str(),
        correct,
    })
}

/// Hands an accepted feedback to the log, when there is one (never waits; see
/// [`PredictionLog::feedback`]).
fn write_log(
    log: Option<&PredictionLog>,
    name: &str,
    feedback: &FeedbackBody,
    entry: &Prediction,
    correct: Option<bool>,
) {
    if let Some(log) = log {
        log.feedback(FeedbackRecord::joined(name, feedback, entry, correct));
    }
}
