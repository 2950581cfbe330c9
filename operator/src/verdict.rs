//! The verdict on one analysis of a candidate: pure, over the registry's per-version numbers.
//!
//! Checks run in a fixed order and the first one that fails decides, so a candidate that is bad
//! in several ways is always reported the same way:
//!
//! 0. **gates** — `policyLoaded` (a serving replica could not apply the policy: the candidate
//!    would never get traffic to judge, so this fails at once) and `sampleSize` (too few
//!    requests, or shadow comparisons, to judge anything: the verdict is *inconclusive*, never a
//!    pass);
//! 1. **business** — `rewardRatio`: candidate mean reward / stable mean reward, when both have
//!    at least `minRewards` rewards in the window and the stable mean is positive;
//! 2. **technical** — `errorRate`, then `latencyP99` of the candidate;
//! 3. **model signals** — `shadowAgreement` (while shadowing), then `drift` of live inputs from
//!    the candidate's training profile, when the registry has a drift score.
//!
//! A check without data (no feedback, no class axis, no drift score) is recorded as skipped with
//! the reason, and does not block.

use ferry_api::traffic::{EndpointAnalysis, VersionAnalysis};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Thresholds an analysis is judged against (from `spec.strategy.canary.analysis`).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Fewer candidate requests (or shadow comparisons) than this is inconclusive.
    pub min_requests: u64,
    /// The reward check applies only when both versions have at least this many rewards.
    pub min_rewards: u64,
    /// Highest acceptable candidate error rate, 0..1.
    pub max_error_rate: f64,
    /// Highest acceptable candidate p99 latency, in milliseconds.
    pub max_latency_p99_ms: f64,
    /// Lowest acceptable share of shadow comparisons that agree with the stable version.
    pub min_shadow_agreement: f64,
    /// Lowest acceptable candidate/stable mean-reward ratio.
    pub min_reward_ratio: f64,
    /// Highest acceptable drift score of live inputs from the candidate's training profile.
    pub max_drift: f64,
}

/// Which part of a rollout an analysis judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Stage {
    /// The candidate only received copies of requests.
    Shadow,
    /// The candidate answered a share of requests.
    Canary,
}

/// One check of an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    /// Every serving replica could apply the traffic policy.
    PolicyLoaded,
    /// Enough traffic to judge.
    SampleSize,
    /// Business metric: candidate mean reward relative to the stable version's.
    RewardRatio,
    /// Share of the candidate's requests that failed.
    ErrorRate,
    /// The candidate's 99th percentile latency.
    LatencyP99,
    /// Share of shadow comparisons whose predicted class agreed with the stable version.
    ShadowAgreement,
    /// Drift of live inputs from the candidate's training profile.
    Drift,
}

impl Check {
    /// The spelling in the status and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::PolicyLoaded => "policyLoaded",
            Check::SampleSize => "sampleSize",
            Check::RewardRatio => "rewardRatio",
            Check::ErrorRate => "errorRate",
            Check::LatencyP99 => "latencyP99",
            Check::ShadowAgreement => "shadowAgreement",
            Check::Drift => "drift",
        }
    }

    /// The machine-readable reason a rollout is rolled back when this check fails
    /// (`status.reason`, the Kubernetes Event's reason).
    pub fn failure_reason(self) -> &'static str {
        match self {
            Check::PolicyLoaded => "PolicyNotLoaded",
            Check::SampleSize => "TooFewRequests",
            Check::RewardRatio => "RewardTooLow",
            Check::ErrorRate => "ErrorRateTooHigh",
            Check::LatencyP99 => "LatencyTooHigh",
            Check::ShadowAgreement => "ShadowDisagrees",
            Check::Drift => "DriftTooHigh",
        }
    }
}

/// The outcome of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// Every applicable check passed.
    Passed,
    /// A check failed: the rollout is rolled back.
    Failed,
    /// Not enough data to judge: wait.
    Inconclusive,
}

/// One check's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// The measured value, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The configured threshold, when the check has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Whether it passed; absent when it was skipped or not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// Why it was skipped, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The verdict on an analysis, with every check's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Passed, failed or inconclusive.
    pub verdict: Verdict,
    /// The check that decided a failed or inconclusive verdict.
    pub decided_by: Option<Check>,
    /// One line for humans: the deciding check with its value and threshold.
    pub summary: String,
    /// Every check, in the order they were judged.
    pub checks: Vec<CheckResult>,
}

/// What one analysis judged, as kept in `status.lastAnalysis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// When it was judged.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Shadow or canary.
    pub stage: Stage,
    /// The canary step (from 1) it judged; absent for the shadow stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The candidate version judged.
    pub candidate_version: i64,
    /// The stable version it was compared with.
    pub stable_version: i64,
    /// Length of the analysis window, in seconds.
    pub window_seconds: f64,
    /// Passed, failed or inconclusive.
    pub verdict: Verdict,
    /// The check that decided a failed or inconclusive verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Check>,
    /// One line for humans.
    pub summary: String,
    /// Every check with its value and threshold.
    pub checks: Vec<CheckResult>,
}

/// The numbers an analysis is judged on, picked out of the registry's endpoint analysis.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// The stable version's numbers in the window, if it was reported.
    pub stable: Option<&'a VersionAnalysis>,
    /// The candidate's numbers in the window, if it was reported.
    pub candidate: Option<&'a VersionAnalysis>,
    /// Drift score of live inputs from the candidate's training profile, when known.
    pub candidate_drift: Option<f64>,
    /// The newest error a serving replica reported applying the policy.
    pub load_error: Option<&'a str>,
}

impl<'a> Evidence<'a> {
    /// Picks the two versions out of `analysis` by number (whatever role the registry gave
    /// them: a candidate is a `shadow` while shadowing and a `canary` after).
    pub fn from_analysis(
        analysis: &'a EndpointAnalysis,
        stable: i64,
        candidate: i64,
        candidate_drift: Option<f64>,
    ) -> Self {
        let find = |v: i64| analysis.versions.iter().find(|a| a.version == v);
        Evidence {
            stable: find(stable),
            candidate: find(candidate),
            candidate_drift,
            load_error: analysis.load_error.as_deref().filter(|e| !e.is_empty()),
        }
    }
}

/// Judges one analysis of `stage`. See the module docs for the order of checks.
pub fn judge(stage: Stage, thresholds: &Thresholds, evidence: &Evidence<'_>) -> Judgement {
    let candidate = evidence.candidate.cloned().unwrap_or_default();
    let mut checks = Vec::with_capacity(7);

    // Gate: a replica that cannot apply the policy never routes to the candidate.
    if let Some(error) = evidence.load_error {
        let note: String = error.chars().take(300).collect();
        checks.push(CheckResult {
            check: Check::PolicyLoaded,
            value: None,
            threshold: None,
            passed: Some(false),
            note: Some(note.clone()),
        });
        return Judgement {
            verdict: Verdict::Failed,
            decided_by: Some(Check::PolicyLoaded),
            summary: format!("a serving replica could not apply the policy: {note}"),
            checks,
        };
    }

    // Gate: enough traffic to judge anything.
    let (sample, sample_what) = match stage {
        Stage::Shadow => (candidate.shadow_compared, "shadow comparisons"),
        Stage::Canary => (candidate.requests + candidate.errors, "requests"),
    };
    let enough = sample >= thresholds.min_requests;
    checks.push(CheckResult {
        check: Check::SampleSize,
        value: Some(sample as f64),
        threshold: Some(thresholds.min_requests as f64),
        passed: Some(enough),
        note: (!enough).then(|| format!("too few {sample_what} to judge")),
    });

    if stage == Stage::Canary {
        checks.push(reward_check(thresholds, evidence.stable, &candidate));
        checks.push(at_most(
            Check::ErrorRate,
            candidate.error_rate,
            thresholds.max_error_rate,
            "no requests",
        ));
        checks.push(at_most(
            Check::LatencyP99,
            candidate.latency_p99_ms,
            thresholds.max_latency_p99_ms,
            "no successful requests",
        ));
    }
    checks.push(at_least(
        Check::ShadowAgreement,
        candidate.shadow_agreement,
        thresholds.min_shadow_agreement,
        match stage {
            Stage::Shadow => "outputs have no class axis to compare",
            Stage::Canary => "not a shadow in this stage",
        },
    ));
    checks.push(at_most(
        Check::Drift,
        evidence.candidate_drift,
        thresholds.max_drift,
        "no drift score",
    ));

    if !enough {
        // The numbers are shown, but none of them decides on so little data.
        for check in checks.iter_mut().skip(1) {
            if check.passed.is_some() {
                check.passed = None;
                check.note = Some("not judged: too few requests".into());
            }
        }
        return Judgement {
            verdict: Verdict::Inconclusive,
            decided_by: Some(Check::SampleSize),
            summary: format!(
                "inconclusive: {sample} {sample_what} < {} needed",
                thresholds.min_requests
            ),
            checks,
        };
    }
    match checks.iter().find(|c| c.passed == Some(false)) {
        Some(failed) => Judgement {
            verdict: Verdict::Failed,
            decided_by: Some(failed.check),
            summary: describe(failed),
            checks,
        },
        None => Judgement {
            verdict: Verdict::Passed,
            decided_by: None,
            summary: "all checks passed".into(),
            checks,
        },
    }
}

fn reward_check(
    thresholds: &Thresholds,
    stable: Option<&VersionAnalysis>,
    candidate: &VersionAnalysis,
) -> CheckResult {
    let skipped = |note: String| CheckResult {
        check: Check::RewardRatio,
        value: None,
        threshold: Some(thresholds.min_reward_ratio),
        passed: None,
        note: Some(note),
    };
    let stable_rewards = stable.map_or(0, |s| s.reward_count);
    if candidate.reward_count < thresholds.min_rewards || stable_rewards < thresholds.min_rewards {
        return skipped(format!(
            "too few rewards (candidate {}, stable {}, need {} each)",
            candidate.reward_count, stable_rewards, thresholds.min_rewards
        ));
    }
    let (Some(c), Some(s)) = (candidate.reward_mean, stable.and_then(|s| s.reward_mean)) else {
        return skipped("no mean reward".into());
    };
    if s.is_nan() || s <= 0.0 {
        // A ratio to a zero or negative mean says nothing about which version is better.
        return skipped(format!("stable mean reward {} is not positive", num(s)));
    }
    let mut result = at_least(
        Check::RewardRatio,
        Some(c / s),
        thresholds.min_reward_ratio,
        "",
    );
    result.note = Some(format!("candidate {} / stable {}", num(c), num(s)));
    result
}

fn at_most(check: Check, value: Option<f64>, max: f64, missing: &str) -> CheckResult {
    compare(check, value, max, missing, |v| v <= max)
}

fn at_least(check: Check, value: Option<f64>, min: f64, missing: &str) -> CheckResult {
    compare(check, value, min, missing, |v| v >= min)
}

fn compare(
    check: Check,
    value: Option<f64>,
    threshold: f64,
    missing: &str,
    ok: impl Fn(f64) -> bool,
) -> CheckResult {
    CheckResult {
        check,
        value,
        threshold: Some(threshold),
        // A NaN fails: a number nobody can compare is not a pass.
        passed: value.map(|v| v.is_finite() && ok(v)),
        note: value.is_none().then(|| format!("skipped: {missing}")),
    }
}

/// `errorRate 0.12 > 0.01`, for the summary of a failed check.
fn describe(check: &CheckResult) -> String {
    let op = match check.check {
        Check::RewardRatio | Check::ShadowAgreement | Check::SampleSize => "<",
        _ => ">",
    };
    let mut text = format!(
        "{} {} {op} {}",
        check.check.as_str(),
        check.value.map_or_else(|| "?".into(), num),
        check.threshold.map_or_else(|| "?".into(), num)
    );
    if let Some(note) = &check.note {
        text.push_str(&format!(" ({note})"));
    }
    text
}

/// A number for messages: at most four decimals, no trailing zeros.
pub(crate) fn num(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            min_requests: 50,
            min_rewards: 20,
            max_error_rate: 0.01,
            max_latency_p99_ms: 500.0,
            min_shadow_agreement: 0.9,
            min_reward_ratio: 0.95,
            max_drift: 0.25,
        }
    }

    fn version(requests: u64, errors: u64) -> VersionAnalysis {
        VersionAnalysis {
            version: 2,
            requests,
            errors,
            error_rate: (requests + errors > 0).then(|| errors as f64 / (requests + errors) as f64),
            latency_p99_ms: (requests > 0).then_some(20.0),
            ..VersionAnalysis::default()
        }
    }

    fn with_rewards(mut v: VersionAnalysis, count: u64, mean: f64) -> VersionAnalysis {
        v.reward_count = count;
        v.reward_mean = Some(mean);
        v
    }

    fn evidence<'a>(stable: &'a VersionAnalysis, candidate: &'a VersionAnalysis) -> Evidence<'a> {
        Evidence {
            stable: Some(stable),
            candidate: Some(candidate),
            candidate_drift: None,
            load_error: None,
        }
    }

    #[test]
    fn a_healthy_candidate_passes_and_checks_without_data_are_skipped() {
        let stable = version(1000, 0);
        let candidate = version(100, 0);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.verdict, Verdict::Passed);
        assert_eq!(j.decided_by, None);
        let by_check = |c: Check| j.checks.iter().find(|r| r.check == c).unwrap();
        assert_eq!(by_check(Check::ErrorRate).passed, Some(true));
        assert_eq!(by_check(Check::RewardRatio).passed, None);
        assert!(
            by_check(Check::RewardRatio)
                .note
                .as_deref()
                .unwrap()
                .contains("too few rewards")
        );
        assert_eq!(by_check(Check::Drift).passed, None);
    }

    #[test]
    fn checks_are_recorded_in_the_order_business_technical_model() {
        let stable = version(1000, 0);
        let candidate = version(100, 0);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        let order: Vec<Check> = j.checks.iter().map(|c| c.check).collect();
        assert_eq!(
            order,
            vec![
                Check::SampleSize,
                Check::RewardRatio,
                Check::ErrorRate,
                Check::LatencyP99,
                Check::ShadowAgreement,
                Check::Drift
            ]
        );
    }

    #[test]
    fn bad_reward_is_reported_before_bad_errors_latency_and_drift() {
        let stable = with_rewards(version(1000, 0), 100, 1.0);
        let mut candidate = with_rewards(version(100, 30), 50, 0.5);
        candidate.latency_p99_ms = Some(9000.0);
        let mut e = evidence(&stable, &candidate);
        e.candidate_drift = Some(3.0);
        let j = judge(Stage::Canary, &thresholds(), &e);
        assert_eq!(j.verdict, Verdict::Failed);
        assert_eq!(j.decided_by, Some(Check::RewardRatio));
        assert!(
            j.summary.starts_with("rewardRatio 0.5 < 0.95"),
            "{}",
            j.summary
        );
        // The other failures are still on record with their numbers.
        let failed: Vec<Check> = j
            .checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| c.check)
            .collect();
        assert_eq!(
            failed,
            vec![
                Check::RewardRatio,
                Check::ErrorRate,
                Check::LatencyP99,
                Check::Drift
            ]
        );
    }

    #[test]
    fn errors_are_reported_before_latency() {
        let stable = version(1000, 0);
        let mut candidate = version(100, 10);
        candidate.latency_p99_ms = Some(9000.0);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.decided_by, Some(Check::ErrorRate));
        assert_eq!(j.summary, "errorRate 0.0909 > 0.01");
    }

    #[test]
    fn too_few_requests_is_inconclusive_even_when_every_request_failed() {
        let stable = version(1000, 0);
        let candidate = version(0, 10);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(j.decided_by, Some(Check::SampleSize));
        assert_eq!(j.summary, "inconclusive: 10 requests < 50 needed");
        let error_rate = j
            .checks
            .iter()
            .find(|c| c.check == Check::ErrorRate)
            .unwrap();
        assert_eq!(error_rate.value, Some(1.0));
        assert_eq!(error_rate.passed, None);
    }

    #[test]
    fn failed_requests_count_towards_the_sample() {
        let stable = version(1000, 0);
        let candidate = version(0, 50);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.decided_by, Some(Check::ErrorRate));
    }

    #[test]
    fn a_load_error_fails_at_once_without_traffic() {
        let analysis = EndpointAnalysis {
            load_error: Some("version 2: not a valid ONNX model".into()),
            ..EndpointAnalysis::default()
        };
        let e = Evidence::from_analysis(&analysis, 1, 2, None);
        let j = judge(Stage::Canary, &thresholds(), &e);
        assert_eq!(j.verdict, Verdict::Failed);
        assert_eq!(j.decided_by, Some(Check::PolicyLoaded));
        assert!(j.summary.contains("not a valid ONNX model"));
    }

    #[test]
    fn the_reward_ratio_is_skipped_when_the_stable_mean_is_not_positive() {
        let stable = with_rewards(version(1000, 0), 100, 0.0);
        let candidate = with_rewards(version(100, 0), 50, -1.0);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.verdict, Verdict::Passed);
        let reward = &j.checks[1];
        assert_eq!(reward.check, Check::RewardRatio);
        assert_eq!(reward.passed, None);
    }

    #[test]
    fn a_shadow_is_judged_on_comparisons_agreement_and_drift_only() {
        let stable = version(1000, 0);
        let mut candidate = version(0, 0);
        candidate.shadow_compared = 200;
        candidate.shadow_agreement = Some(0.8);
        let j = judge(Stage::Shadow, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.decided_by, Some(Check::ShadowAgreement));
        assert_eq!(j.summary, "shadowAgreement 0.8 < 0.9");
        let order: Vec<Check> = j.checks.iter().map(|c| c.check).collect();
        assert_eq!(
            order,
            vec![Check::SampleSize, Check::ShadowAgreement, Check::Drift]
        );

        candidate.shadow_agreement = Some(0.99);
        let mut e = evidence(&stable, &candidate);
        e.candidate_drift = Some(0.5);
        let j = judge(Stage::Shadow, &thresholds(), &e);
        assert_eq!(j.decided_by, Some(Check::Drift));

        candidate.shadow_compared = 10;
        let j = judge(Stage::Shadow, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(j.summary, "inconclusive: 10 shadow comparisons < 50 needed");
    }

    #[test]
    fn a_nan_value_fails_its_check() {
        let stable = version(1000, 0);
        let mut candidate = version(100, 0);
        candidate.latency_p99_ms = Some(f64::NAN);
        let j = judge(Stage::Canary, &thresholds(), &evidence(&stable, &candidate));
        assert_eq!(j.decided_by, Some(Check::LatencyP99));
    }

    #[test]
    fn numbers_in_messages_are_short() {
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(0.123456), "0.1235");
        assert_eq!(num(50.0), "50");
        assert_eq!(num(-0.00001), "0");
    }
}
