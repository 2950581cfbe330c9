//! What a reported rollout step must look like.

use crate::error::{Result, ValidationError};
use crate::names;
use crate::records::RolloutStep;

/// Longest `reason`, in characters (the limit of a Kubernetes Event's reason).
pub const MAX_ROLLOUT_REASON_CHARS: usize = 128;

/// Longest `message`, in characters (a Kubernetes Event's note is at most 1 kB).
pub const MAX_ROLLOUT_MESSAGE_CHARS: usize = 1024;

/// Longest `phase` and `source`, in characters.
const MAX_LABEL_CHARS: usize = 256;

/// Checks a rollout step.
///
/// # Errors
/// [`ValidationError::BadRequest`] listing every problem, each naming its field.
pub fn validate_rollout_step(step: &RolloutStep) -> Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let reason = step.reason.as_str();
    if reason.is_empty() {
        problems.push("reason must not be empty".into());
    } else if reason.chars().count() > MAX_ROLLOUT_REASON_CHARS
        || !reason.starts_with(|c: char| c.is_ascii_uppercase())
        || !reason.chars().all(|c| c.is_ascii_alphanumeric())
    {
        problems.push(format!(
            "reason must be one CamelCase word of at most {MAX_ROLLOUT_REASON_CHARS} letters and digits, got {}",
            names::printable(reason)
        ));
    }
    let message_chars = step.message.chars().count();
    if message_chars > MAX_ROLLOUT_MESSAGE_CHARS {
        problems.push(format!(
            "message is {message_chars} characters long, the limit is {MAX_ROLLOUT_MESSAGE_CHARS}"
        ));
    }
    for (field, value) in [
        ("phase", Some(step.phase.as_str())),
        ("source", step.source.as_deref()),
    ] {
        let Some(value) = value else { continue };
        if value.trim().is_empty() {
            problems.push(format!("{field} must not be empty"));
        } else if value.chars().count() > MAX_LABEL_CHARS || value.chars().any(char::is_control) {
            problems.push(format!(
                "{field} must be at most {MAX_LABEL_CHARS} printable characters, got {}",
                names::printable(value)
            ));
        }
    }
    for (field, version) in [("stable", step.stable), ("candidate", step.candidate)] {
        if let Some(v) = version
            && v < 1
        {
            problems.push(format!(
                "{field} must be a version number (1 or more), got {v}"
            ));
        }
    }
    if step.step == Some(0) {
        problems.push("step counts from 1".into());
    }
    if !(step.weight.is_finite() && (0.0..=100.0).contains(&step.weight)) {
        problems.push(format!(
            "weight is a percentage between 0 and 100, got {}",
            step.weight
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::BadRequest(format!(
            "invalid rollout step: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> RolloutStep {
        RolloutStep {
            reason: "StepAdvanced".into(),
            message: "v2: step 1 passed; step 2/4 at 10%".into(),
            phase: "Progressing".into(),
            stable: Some(1),
            candidate: Some(2),
            step: Some(2),
            weight: 10.0,
            source: Some("ModelDeployment default/fraud".into()),
        }
    }

    #[test]
    fn a_well_formed_step_passes() {
        assert!(validate_rollout_step(&step()).is_ok());
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let bad = RolloutStep {
            reason: "step advanced".into(),
            message: "x".repeat(MAX_ROLLOUT_MESSAGE_CHARS + 1),
            phase: " ".into(),
            stable: Some(0),
            candidate: Some(-3),
            step: Some(0),
            weight: 101.0,
            source: Some("a\u{7}b".into()),
        };
        let text = validate_rollout_step(&bad).unwrap_err().to_string();
        for needle in [
            "reason must be one CamelCase word",
            "message is 1025 characters",
            "phase must not be empty",
            "source must be at most",
            "stable must be a version number",
            "candidate must be a version number",
            "step counts from 1",
            "weight is a percentage",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
