//! `POST /v2/models/{name}/feedback`: business feedback joined to the prediction it is about,
//! counted as that version's reward and accuracy.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::find_model;
use crate::ServingState;
use crate::error::ServingError;

/// Body of `POST /v2/models/{name}/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Feedback {
    id: String,
    #[serde(default)]
    reward: Option<f64>,
    #[serde(default)]
    label: Option<Label>,
}

/// A label: one class, or one per row.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Label {
    One(i64),
    Rows(Vec<i64>),
}

pub(super) async fn feedback(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    body: Result<axum::Json<Feedback>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ServingError> {
    let axum::Json(feedback) = body.map_err(|e| {
        ServingError::BadRequest(format!(
            "feedback must be JSON {{\"id\": \"…\", \"reward\": number?, \"label\": int or [int]?}}: {}",
            e.body_text()
        ))
    })?;
    if feedback.reward.is_none() && feedback.label.is_none() {
        return Err(ServingError::BadRequest(
            "feedback needs a `reward`, a `label`, or both".into(),
        ));
    }
    if feedback.reward.is_some_and(|r| !r.is_finite()) {
        return Err(ServingError::BadRequest(
            "`reward` must be a finite number".into(),
        ));
    }
    let model = find_model(&state, &name)?;
    let now = Instant::now();
    let entry = model
        .traffic
        .predictions
        .take_for_feedback(&feedback.id, now)
        .map_err(|e| match e {
            crate::traffic::FeedbackError::AlreadyGiven => ServingError::Conflict(format!(
                "feedback for prediction `{}` was already recorded; it counts once",
                feedback.id
            )),
            other => ServingError::NotFound(format!(
                "{other}: `{}` (predictions are kept for {} s, the newest {})",
                feedback.id,
                state.config.feedback_ttl.as_secs(),
                state.config.feedback_capacity
            )),
        })?;
    let correct = match (&feedback.label, &entry.classes) {
        (None, _) => None,
        (Some(_), None) => None,
        (Some(Label::One(l)), Some(classes)) => Some(classes.first() == Some(l)),
        (Some(Label::Rows(ls)), Some(classes)) => Some(ls == classes),
    };
    model
        .traffic
        .stats
        .record_feedback(now, entry.version, feedback.reward, correct);
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
