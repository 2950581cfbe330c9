//! `POST /v2/models/{name}/feedback`: business feedback joined to the prediction it is about
//! (through the prediction index, whichever replica answered it), counted as that version's
//! reward and accuracy in this replica's counters (the registry sums every replica's).

use std::time::{Duration, Instant};

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_feedback::{FEEDBACK_SHAPE, FeedbackBody, JoinError, judge};
use serde_json::json;

use super::find_model;
use crate::ServingState;
use crate::error::ServingError;
use ferry_feedback::log::FeedbackRecord;

/// What a 503 for an unreachable prediction index asks the client to wait.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub(super) async fn feedback(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    body: Result<axum::Json<FeedbackBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ServingError> {
    let axum::Json(feedback) = body.map_err(|e| {
        ServingError::BadRequest(format!(
            "feedback must be JSON {FEEDBACK_SHAPE}: {}",
            e.body_text()
        ))
    })?;
    feedback
        .validate()
        .map_err(|e| ServingError::BadRequest(e.to_string()))?;
    let model = find_model(&state, &name)?;
    let entry = state
        .predictions
        .take(&name, &feedback.id)
        .await
        .map_err(|e| join_error(&state, &feedback.id, e))?;
    let correct = judge(feedback.label.as_ref(), entry.classes.as_deref());
    model
        .traffic
        .stats
        .record_feedback(Instant::now(), entry.version, feedback.reward, correct);
    if let Some(log) = &state.prediction_log {
        log.feedback(FeedbackRecord::joined(&name, &feedback, &entry, correct));
    }
    state
        .metrics
        .feedback(&name, &entry.version.to_string(), feedback.reward, correct);
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "id": feedback.id,
            "model_version": entry.version.to_string(),
            "route": entry.route.as_str(),
            "correct": correct,
        })),
    )
        .into_response())
}

fn join_error(state: &ServingState, id: &str, e: JoinError) -> ServingError {
    match e {
        JoinError::AlreadyGiven => ServingError::Conflict(format!(
            "feedback for prediction `{id}` was already recorded; it counts once"
        )),
        JoinError::Unavailable(why) => ServingError::Unavailable {
            message: format!("feedback cannot be joined now: {why}"),
            retry_after: RETRY_AFTER,
        },
        other => {
            let kept = state.config.feedback_ttl.as_secs();
            let held = match state.predictions.health().held {
                Some(_) => format!(
                    ", the newest {} per endpoint",
                    state.config.feedback_capacity
                ),
                None => String::new(),
            };
            ServingError::NotFound(format!(
                "{other}: `{id}` (predictions are kept for {kept} s{held})"
            ))
        }
    }
}
