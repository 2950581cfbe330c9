//! What a reported rollout step must look like.

use crate::error::{Result, ValidationError};
use crate::names;
use crate::records::{RolloutStep, StepAnalysis};

/// Longest `reason`, in characters (the limit of a Kubernetes Event's reason).
pub const MAX_ROLLOUT_REASON_CHARS: usize = 128;

/// Longest `message`, in characters (a Kubernetes Event's note is at most 1 kB).
pub const MAX_ROLLOUT_MESSAGE_CHARS: usize = 1024;

/// Longest `phase` and `source`, in characters.
const MAX_LABEL_CHARS: usize = 256;

/// Most checks in a step's analysis (the operator judges seven).
pub const MAX_STEP_CHECKS: usize = 32;

/// Longest check name, stage, verdict and `decided_by`, in characters.
const MAX_WORD_CHARS: usize = 64;

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
    if let Some(analysis) = &step.analysis {
        analysis_problems(analysis, &mut problems);
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

/// Problems with a step's analysis, each naming its field.
fn analysis_problems(analysis: &StepAnalysis, problems: &mut Vec<String>) {
    let word = |field: &str, value: &str, problems: &mut Vec<String>| {
        if value.is_empty()
            || value.chars().count() > MAX_WORD_CHARS
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            problems.push(format!(
                "{field} must be one word of at most {MAX_WORD_CHARS} letters, digits or _, got {}",
                names::printable(value)
            ));
        }
    };
    word("analysis.stage", &analysis.stage, problems);
    word("analysis.verdict", &analysis.verdict, problems);
    if let Some(decided_by) = &analysis.decided_by {
        word("analysis.decided_by", decided_by, problems);
    }
    for (field, v) in [
        ("analysis.stable", analysis.stable),
        ("analysis.candidate", analysis.candidate),
    ] {
        if v < 1 {
            problems.push(format!(
                "{field} must be a version number (1 or more), got {v}"
            ));
        }
    }
    if !(analysis.window_seconds.is_finite() && analysis.window_seconds >= 0.0) {
        problems.push(format!(
            "analysis.window_seconds must be a duration in seconds, got {}",
            analysis.window_seconds
        ));
    }
    if analysis.checks.len() > MAX_STEP_CHECKS {
        problems.push(format!(
            "analysis.checks has {} entries, the limit is {MAX_STEP_CHECKS}",
            analysis.checks.len()
        ));
        return;
    }
    for (i, check) in analysis.checks.iter().enumerate() {
        word(
            &format!("analysis.checks[{i}].check"),
            &check.check,
            problems,
        );
        if let Some(note) = &check.note
            && (note.chars().count() > MAX_LABEL_CHARS || note.chars().any(char::is_control))
        {
            problems.push(format!(
                "analysis.checks[{i}].note must be at most {MAX_LABEL_CHARS} printable characters"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::StepCheck;

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
            analysis: Some(StepAnalysis {
                stage: "Canary".into(),
                verdict: "Passed".into(),
                decided_by: None,
                candidate: 2,
                stable: 1,
                window_seconds: 60.0,
                checks: vec![StepCheck {
                    check: "errorRate".into(),
                    value: Some(0.0),
                    threshold: Some(0.01),
                    passed: Some(true),
                    note: None,
                }],
            }),
        }
    }

    #[test]
    fn too_many_checks_are_refused_by_count() {
        let mut step = step();
        let analysis = step.analysis.as_mut().unwrap();
        analysis.checks = vec![analysis.checks[0].clone(); MAX_STEP_CHECKS + 1];
        let text = validate_rollout_step(&step).unwrap_err().to_string();
        assert!(text.contains("analysis.checks has 33 entries"), "{text}");
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
            analysis: Some(StepAnalysis {
                stage: "canary stage".into(),
                verdict: String::new(),
                decided_by: None,
                candidate: 0,
                stable: 1,
                window_seconds: f64::NAN,
                checks: vec![StepCheck {
                    check: "error rate".into(),
                    value: None,
                    threshold: None,
                    passed: None,
                    note: Some("x".repeat(300)),
                }],
            }),
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
            "analysis.stage must be one word",
            "analysis.verdict must be one word",
            "analysis.candidate must be a version number",
            "analysis.window_seconds must be a duration",
            "analysis.checks[0].check must be one word",
            "analysis.checks[0].note must be at most",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
