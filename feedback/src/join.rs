//! What a feedback body may hold, and how a label is judged against what was predicted. The
//! same rules for every way feedback arrives (serving, the registry, the queue consumer).

use ferry_api::error::ValidationError;
use ferry_api::names;
use serde::{Deserialize, Serialize};

pub use ferry_api::names::MAX_ID_BYTES;

/// Feedback on one prediction: `{"id": "…", "reward": 1.0?, "label": 1 | [1, 0]?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// The prediction's id: the request's `id`, else the `x-request-id` it was answered with.
    pub id: String,
    /// A business reward (revenue, a click, 0/1 for a correct decision…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// The true class: one, or one per row of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
}

/// A label: one class, or one per row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    /// The class of a one-row prediction.
    One(i64),
    /// The class of each row.
    Rows(Vec<i64>),
}

/// The shape of a feedback body, for error messages.
pub const FEEDBACK_SHAPE: &str = r#"{"id": "…", "reward": number?, "label": int or [int]?}"#;

impl FeedbackBody {
    /// Checks what no store is needed for: an id within the limits, a reward or a label, a
    /// finite reward.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming what is wrong.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id(&self.id)?;
        if self.reward.is_none() && self.label.is_none() {
            return Err(ValidationError::BadRequest(
                "feedback needs a `reward`, a `label`, or both".into(),
            ));
        }
        if self.reward.is_some_and(|r| !r.is_finite()) {
            return Err(ValidationError::BadRequest(
                "`reward` must be a finite number".into(),
            ));
        }
        Ok(())
    }
}

/// Checks a feedback's prediction id (see [`names::validate_id`]).
///
/// # Errors
/// [`ValidationError::BadRequest`] naming the limit.
pub fn check_id(id: &str) -> Result<(), ValidationError> {
    names::validate_id("`id`", id)
}

/// Whether `label` matches the predicted `classes`: `None` without a label, or when the outputs
/// did not read as classes.
#[must_use]
pub fn judge(label: Option<&Label>, classes: Option<&[i64]>) -> Option<bool> {
    match (label?, classes?) {
        (Label::One(l), classes) => Some(classes.first() == Some(l)),
        (Label::Rows(ls), classes) => Some(ls.as_slice() == classes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_judged_against_the_predicted_classes() {
        assert_eq!(judge(Some(&Label::One(1)), Some(&[1])), Some(true));
        assert_eq!(judge(Some(&Label::One(0)), Some(&[1])), Some(false));
        assert_eq!(
            judge(Some(&Label::Rows(vec![1, 0])), Some(&[1, 0])),
            Some(true)
        );
        assert_eq!(
            judge(Some(&Label::Rows(vec![1])), Some(&[1, 0])),
            Some(false)
        );
        assert_eq!(judge(None, Some(&[1])), None);
        assert_eq!(judge(Some(&Label::One(1)), None), None);
    }

    #[test]
    fn a_body_needs_a_capped_id_and_a_finite_reward_or_a_label() {
        let body = |id: &str, reward, label| FeedbackBody {
            id: id.into(),
            reward,
            label,
        };
        assert!(body("p-1", Some(1.0), None).validate().is_ok());
        assert!(body("p-1", None, Some(Label::One(1))).validate().is_ok());
        assert!(body("p-1", None, None).validate().is_err());
        assert!(body("p-1", Some(f64::NAN), None).validate().is_err());
        let long = body(&"x".repeat(MAX_ID_BYTES + 1), Some(1.0), None);
        assert!(
            long.validate()
                .unwrap_err()
                .to_string()
                .contains("at most 256 bytes")
        );
    }
}
