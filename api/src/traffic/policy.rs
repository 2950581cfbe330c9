//! What makes a traffic policy acceptable, checked without I/O. Whether its versions exist and
//! are active is checked by the store, inside the transaction that writes it.

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ValidationError};
use crate::names;
use crate::records::{DecayMetric, EndpointPolicy};

/// Most shadows one endpoint may mirror to: every shadow costs each replica a model in memory
/// and a share of its CPU.
pub const MAX_SHADOWS: usize = 16;

/// Largest sliding window by count a drift policy may ask for.
pub const MAX_WINDOW_SAMPLES: u64 = 100_000_000;

/// Longest `max_age_seconds`: a hundred years.
pub const MAX_AGE_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// Canary weights move in steps of 1/1000.
const WEIGHT_STEPS: f64 = 1000.0;

/// Float noise tolerated around a weight or rate (`0.1 + 0.2` is a fine `0.3`).
const TOLERANCE: f64 = 1e-9;

/// What a version does in an endpoint's current policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficRole {
    /// Answers every request not sent to the canary.
    Stable,
    /// Answers a share of requests.
    Canary,
    /// Receives copies of requests.
    Shadow,
    /// No longer in the policy, but reported inside the window.
    Retired,
}

impl TrafficRole {
    /// The spelling in analyses and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficRole::Stable => "stable",
            TrafficRole::Canary => "canary",
            TrafficRole::Shadow => "shadow",
            TrafficRole::Retired => "retired",
        }
    }
}

impl TrafficRole {
    /// The role of `version` in `policy`; [`TrafficRole::Retired`] for a version it does not
    /// name (or when there is no policy).
    pub fn of(policy: Option<&EndpointPolicy>, version: i64) -> TrafficRole {
        let Some(policy) = policy else {
            return TrafficRole::Retired;
        };
        if policy.stable == version {
            TrafficRole::Stable
        } else if policy.canary.as_ref().is_some_and(|c| c.version == version) {
            TrafficRole::Canary
        } else if policy.shadows.iter().any(|s| s.version == version) {
            TrafficRole::Shadow
        } else {
            TrafficRole::Retired
        }
    }
}

/// One version a policy routes to, and the field of the policy that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionUse {
    /// The version number.
    pub version: i64,
    /// What the policy does with it.
    pub role: TrafficRole,
    /// Where it appears in the policy (`stable`, `canary.version`, `shadows[1].version`), for
    /// error messages.
    pub field: String,
}

/// The versions a policy routes to, stable first, then the canary, then the shadows in order.
pub fn referenced_versions(policy: &EndpointPolicy) -> Vec<VersionUse> {
    let mut uses = vec![VersionUse {
        version: policy.stable,
        role: TrafficRole::Stable,
        field: "stable".into(),
    }];
    if let Some(canary) = &policy.canary {
        uses.push(VersionUse {
            version: canary.version,
            role: TrafficRole::Canary,
            field: "canary.version".into(),
        });
    }
    for (i, shadow) in policy.shadows.iter().enumerate() {
        uses.push(VersionUse {
            version: shadow.version,
            role: TrafficRole::Shadow,
            field: format!("shadows[{i}].version"),
        });
    }
    uses
}

/// Checks a policy and returns it normalized: the canary weight snapped to its 0.001 step and
/// rates clamped into [0, 1] (both only within float noise), the sticky header lowercased.
///
/// # Errors
/// [`ValidationError::BadRequest`] listing every problem, each naming its field.
pub fn validate_policy(mut policy: EndpointPolicy) -> Result<EndpointPolicy> {
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = names::validate("model", &policy.model) {
        problems.push(e.to_string());
    }
    for used in referenced_versions(&policy) {
        if used.version < 1 {
            problems.push(format!(
                "{}: versions are numbered from 1, got {}",
                used.field, used.version
            ));
        }
    }

    if let Some(canary) = &mut policy.canary {
        match snap_weight(canary.weight) {
            Ok(weight) => canary.weight = weight,
            Err(why) => problems.push(format!("canary.weight {why}")),
        }
        if canary.version == policy.stable {
            problems.push(format!(
                "canary.version: version {} is already the stable version",
                canary.version
            ));
        }
    }

    if policy.shadows.len() > MAX_SHADOWS {
        problems.push(format!(
            "shadows: at most {MAX_SHADOWS} shadows, got {}",
            policy.shadows.len()
        ));
    }
    let canary_version = policy.canary.as_ref().map(|c| c.version);
    let mut seen: Vec<i64> = Vec::new();
    for (i, shadow) in policy.shadows.iter_mut().enumerate() {
        match clamp_rate(shadow.sample_rate) {
            Ok(rate) => shadow.sample_rate = rate,
            Err(why) => problems.push(format!("shadows[{i}].sample_rate {why}")),
        }
        let v = shadow.version;
        if v == policy.stable {
            problems.push(format!(
                "shadows[{i}].version: version {v} is the stable version; a version cannot shadow itself"
            ));
        } else if Some(v) == canary_version {
            problems.push(format!(
                "shadows[{i}].version: version {v} is the canary version; a version cannot shadow itself"
            ));
        } else if seen.contains(&v) {
            problems.push(format!(
                "shadows[{i}].version: version {v} is listed as a shadow more than once"
            ));
        }
        seen.push(v);
    }

    if let Some(header) = &mut policy.sticky_header {
        // `from_bytes` accepts any case and normalizes to lowercase, which is how serving looks
        // headers up.
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => *header = name.as_str().to_string(),
            Err(_) => problems.push(format!(
                "sticky_header {} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, not empty)",
                names::printable(header)
            )),
        }
    }

    if let Some(drift) = &policy.drift {
        if !(drift.threshold.is_finite() && drift.threshold > 0.0) {
            problems.push(format!(
                "drift.threshold must be a finite number above 0, got {}",
                drift.threshold
            ));
        }
        if drift.min_samples < 1 {
            problems.push("drift.min_samples must be at least 1, got 0".into());
        }
        if drift.consecutive_windows < 1 {
            problems.push("drift.consecutive_windows must be at least 1, got 0".into());
        }
        if let Some(n) = drift.window_samples
            && !(drift.min_samples..=MAX_WINDOW_SAMPLES).contains(&n)
        {
            problems.push(format!(
                "drift.window_samples must be between drift.min_samples ({}) and {MAX_WINDOW_SAMPLES}, got {n}",
                drift.min_samples
            ));
        }
    }

    if let Some(seconds) = policy.max_age_seconds
        && !(1..=MAX_AGE_SECONDS).contains(&seconds)
    {
        problems.push(format!(
            "max_age_seconds must be between 1 and {MAX_AGE_SECONDS} (100 years), got {seconds}"
        ));
    }

    if let Some(decay) = &policy.decay {
        if !(decay.max_drop.is_finite() && decay.max_drop > 0.0) {
            problems.push(format!(
                "decay.max_drop must be a finite number above 0, got {}",
                decay.max_drop
            ));
        }
        if decay.metric == DecayMetric::Accuracy && decay.max_drop >= 1.0 {
            problems.push(format!(
                "decay.max_drop for accuracy is a share below 1 (0.05 is five points), got {}",
                decay.max_drop
            ));
        }
        if !(1..=MAX_WINDOW_SAMPLES).contains(&decay.window) {
            problems.push(format!(
                "decay.window must be between 1 and {MAX_WINDOW_SAMPLES}, got {}",
                decay.window
            ));
        }
        if let Some(reference) = decay.reference
            && !reference.is_finite()
        {
            problems.push(format!(
                "decay.reference must be a finite number, got {reference}"
            ));
        }
    }

    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(ValidationError::BadRequest(format!(
            "invalid endpoint policy: {}",
            problems.join("; ")
        )))
    }
}

/// A weight in [0, 1] on a 0.001 step, snapped to the exact step; the error completes
/// "canary.weight …".
fn snap_weight(weight: f64) -> std::result::Result<f64, String> {
    let weight = clamp_rate(weight)?;
    let steps = (weight * WEIGHT_STEPS).round();
    let snapped = steps / WEIGHT_STEPS;
    if (weight - snapped).abs() > TOLERANCE {
        return Err(format!("must be a multiple of 0.001, got {weight}"));
    }
    Ok(snapped)
}

/// A fraction in [0, 1], clamped when it is outside only by float noise; the error completes
/// "<field> …".
fn clamp_rate(rate: f64) -> std::result::Result<f64, String> {
    if rate.is_finite() && (-TOLERANCE..=1.0 + TOLERANCE).contains(&rate) {
        Ok(rate.clamp(0.0, 1.0))
    } else {
        Err(format!("must be between 0 and 1, got {rate}"))
    }
}

/// Which of an endpoint's primary versions answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// The endpoint's stable version.
    Stable,
    /// The endpoint's canary version.
    Canary,
}

impl Route {
    /// `"stable"` or `"canary"`: the `x-ferry-route` header value and the metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Stable => "stable",
            Route::Canary => "canary",
        }
    }

    /// The version this route names in `policy`. A canary route without a canary in the policy
    /// (the policy changed between routing and lookup) falls back to the stable version.
    #[must_use]
    pub fn version_in(self, policy: &EndpointPolicy) -> i64 {
        match (self, &policy.canary) {
            (Route::Canary, Some(canary)) => canary.version,
            _ => policy.stable,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CanaryPolicy, DecayPolicy, DriftMetric, DriftPolicy, ShadowPolicy};

    fn policy() -> EndpointPolicy {
        EndpointPolicy {
            model: "fraud".into(),
            stable: 1,
            canary: Some(CanaryPolicy {
                version: 2,
                weight: 0.05,
            }),
            shadows: vec![ShadowPolicy {
                version: 3,
                sample_rate: 0.5,
            }],
            sticky_header: Some("X-User-Id".into()),
            drift: Some(DriftPolicy {
                metric: DriftMetric::Psi,
                threshold: 0.2,
                min_samples: 100,
                consecutive_windows: 2,
                window_samples: None,
            }),
            max_age_seconds: Some(30 * 86_400),
            decay: Some(DecayPolicy {
                metric: DecayMetric::Accuracy,
                max_drop: 0.05,
                window: 200,
                reference: None,
            }),
        }
    }

    fn problem(p: EndpointPolicy) -> String {
        validate_policy(p).unwrap_err().to_string()
    }

    #[test]
    fn a_complete_policy_is_accepted_with_its_sticky_header_lowercased() {
        let valid = validate_policy(policy()).unwrap();
        assert_eq!(valid.sticky_header.as_deref(), Some("x-user-id"));
        assert_eq!(valid.canary.as_ref().unwrap().weight, 0.05);
        let minimal = EndpointPolicy {
            canary: None,
            shadows: Vec::new(),
            sticky_header: None,
            drift: None,
            ..policy()
        };
        assert_eq!(validate_policy(minimal.clone()).unwrap(), minimal);
    }

    #[test]
    fn weights_on_a_thousandth_step_are_accepted_and_float_noise_is_snapped_away() {
        for (given, stored) in [
            (0.0, 0.0),
            (1.0, 1.0),
            (0.001, 0.001),
            (0.999, 0.999),
            (0.1 + 0.2, 0.3),
            (0.7 * 0.1, 0.07),
            (1.0 + 1e-12, 1.0),
            (-1e-12, 0.0),
        ] {
            let mut p = policy();
            p.canary.as_mut().unwrap().weight = given;
            let valid = validate_policy(p).unwrap();
            assert_eq!(valid.canary.unwrap().weight, stored, "{given}");
        }
    }

    #[test]
    fn weights_off_the_thousandth_step_or_outside_zero_to_one_are_refused() {
        for (weight, says) in [
            (0.0005, "multiple of 0.001"),
            (0.1234, "multiple of 0.001"),
            (1.5, "between 0 and 1"),
            (-0.1, "between 0 and 1"),
            (f64::NAN, "between 0 and 1"),
            (f64::INFINITY, "between 0 and 1"),
        ] {
            let mut p = policy();
            p.canary.as_mut().unwrap().weight = weight;
            let err = problem(p);
            assert!(err.contains("canary.weight") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn a_canary_cannot_be_the_stable_version() {
        let mut p = policy();
        p.canary.as_mut().unwrap().version = 1;
        let err = problem(p);
        assert!(
            err.contains("canary.version") && err.contains("stable"),
            "{err}"
        );
    }

    #[test]
    fn shadows_must_differ_from_stable_canary_and_each_other() {
        for (versions, says) in [
            (vec![1], "shadows[0].version: version 1 is the stable"),
            (vec![3, 2], "shadows[1].version: version 2 is the canary"),
            (
                vec![3, 4, 3],
                "shadows[2].version: version 3 is listed as a shadow more",
            ),
        ] {
            let mut p = policy();
            p.shadows = versions
                .into_iter()
                .map(|version| ShadowPolicy {
                    version,
                    sample_rate: 1.0,
                })
                .collect();
            let err = problem(p);
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn sample_rates_must_be_between_zero_and_one() {
        for rate in [-0.5, 1.01, f64::NAN] {
            let mut p = policy();
            p.shadows[0].sample_rate = rate;
            let err = problem(p);
            assert!(
                err.contains("shadows[0].sample_rate must be between 0 and 1"),
                "{err}"
            );
        }
        let mut p = policy();
        p.shadows[0].sample_rate = 0.123_456;
        assert_eq!(
            validate_policy(p).unwrap().shadows[0].sample_rate,
            0.123_456
        );
    }

    #[test]
    fn too_many_shadows_are_refused() {
        let mut p = policy();
        p.shadows = (10..10 + MAX_SHADOWS as i64 + 1)
            .map(|version| ShadowPolicy {
                version,
                sample_rate: 1.0,
            })
            .collect();
        assert!(problem(p).contains("at most 16 shadows"));
    }

    #[test]
    fn a_sticky_header_must_be_a_valid_header_name() {
        for header in ["", "x user", "x:user", "x\nuser", "é"] {
            let mut p = policy();
            p.sticky_header = Some(header.into());
            let err = problem(p);
            assert!(err.contains("sticky_header"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn max_age_and_decay_are_checked_naming_their_fields() {
        assert!(validate_policy(policy()).is_ok());
        for (change, says) in [
            (
                (|p: &mut EndpointPolicy| p.max_age_seconds = Some(0)) as fn(&mut EndpointPolicy),
                "max_age_seconds must be between 1",
            ),
            (
                |p| p.max_age_seconds = Some(MAX_AGE_SECONDS + 1),
                "max_age_seconds must be between 1",
            ),
            (
                |p| p.decay.as_mut().unwrap().max_drop = 0.0,
                "decay.max_drop must be a finite number above 0, got 0",
            ),
            (
                |p| p.decay.as_mut().unwrap().max_drop = f64::NAN,
                "decay.max_drop must be a finite number above 0",
            ),
            (
                |p| p.decay.as_mut().unwrap().max_drop = 5.0,
                "decay.max_drop for accuracy is a share below 1",
            ),
            (
                |p| p.decay.as_mut().unwrap().window = 0,
                "decay.window must be between 1",
            ),
            (
                |p| p.decay.as_mut().unwrap().reference = Some(f64::INFINITY),
                "decay.reference must be a finite number",
            ),
        ] {
            let mut p = policy();
            change(&mut p);
            let err = problem(p);
            assert!(err.contains(says), "{err}");
        }
        // A reward can drop by more than 1.
        let mut p = policy();
        p.decay = Some(DecayPolicy {
            metric: DecayMetric::Reward,
            max_drop: 5.0,
            window: 10,
            reference: Some(20.0),
        });
        assert!(validate_policy(p).is_ok());
    }

    #[test]
    fn a_window_by_count_holds_at_least_min_samples() {
        for (n, ok) in [
            (99, false),
            (100, true),
            (5000, true),
            (MAX_WINDOW_SAMPLES + 1, false),
        ] {
            let mut p = policy();
            p.drift.as_mut().unwrap().window_samples = Some(n);
            match validate_policy(p) {
                Ok(_) => assert!(ok, "{n} was accepted"),
                Err(e) => {
                    assert!(!ok, "{n}: {e}");
                    assert!(e.to_string().contains("drift.window_samples"), "{e}");
                }
            }
        }
    }

    #[test]
    fn drift_settings_must_be_positive() {
        let mut p = policy();
        let drift = p.drift.as_mut().unwrap();
        drift.threshold = 0.0;
        drift.min_samples = 0;
        drift.consecutive_windows = 0;
        let err = problem(p);
        for field in [
            "drift.threshold",
            "drift.min_samples",
            "drift.consecutive_windows",
        ] {
            assert!(err.contains(field), "{field}: {err}");
        }
        for threshold in [f64::NAN, f64::INFINITY, -1.0] {
            let mut p = policy();
            p.drift.as_mut().unwrap().threshold = threshold;
            assert!(problem(p).contains("drift.threshold"));
        }
    }

    #[test]
    fn versions_below_one_and_bad_model_names_are_refused_naming_the_field() {
        let mut p = policy();
        p.stable = 0;
        p.canary.as_mut().unwrap().version = -1;
        p.shadows[0].version = 0;
        p.model = "../etc".into();
        let err = problem(p);
        for says in [
            "stable: versions are numbered from 1, got 0",
            "canary.version: versions are numbered from 1, got -1",
            "shadows[0].version: versions are numbered from 1",
            "invalid model name",
        ] {
            assert!(err.contains(says), "{says}: {err}");
        }
    }

    #[test]
    fn referenced_versions_come_stable_canary_then_shadows() {
        let uses = referenced_versions(&policy());
        let got: Vec<(i64, TrafficRole, &str)> = uses
            .iter()
            .map(|u| (u.version, u.role, u.field.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, TrafficRole::Stable, "stable"),
                (2, TrafficRole::Canary, "canary.version"),
                (3, TrafficRole::Shadow, "shadows[0].version"),
            ]
        );
    }
}
