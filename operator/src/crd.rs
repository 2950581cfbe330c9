//! The `ModelDeployment` custom resource (`ferry.dev/v1alpha1`, short name `md`).
//!
//! ```yaml
//! apiVersion: ferry.dev/v1alpha1
//! kind: ModelDeployment
//! metadata: {name: iris}
//! spec:
//!   model: iris
//!   alias: production          # or `version: 3`
//!   registry:
//!     url: "http://ferry-registry:8080"
//!     tokenSecret: {name: ferry-registry-tokens, key: write}          # the operator's
//!     servingTokenSecret: {name: ferry-registry-tokens, key: serving} # the pods'
//!   auth:
//!     tokensSecret: {name: ferry-registry-tokens, key: serving-tokens} # who may call the pods
//! ```
//!
//! Everything else has a default meant for a first rollout: 1 replica, no shadow stage, canary
//! steps 1% → 10% → 50% → 100% held one minute each, judged every minute on at least 50
//! requests (error rate ≤ 1%, p99 ≤ 1000 ms, reward ≥ 95% of the stable version's when there is
//! feedback, drift ≤ 0.25 when there is a score). The API server fills these defaults in, so
//! `kubectl get md NAME -o yaml` shows the strategy in force.
//!
//! Manual controls are spec fields (`paused`, `abort`, `promoteNow`) or, equivalently, the
//! annotations [`ANNOTATION_PAUSED`], [`ANNOTATION_ABORT`] and [`ANNOTATION_PROMOTE_NOW`] set to
//! `"true"` (handy with `kubectl annotate`, and they do not bump the generation); either one set
//! turns the control on. See [`crate::rollout`] for what each does.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::{Controls, Phase, RolloutConfig, RolloutState, ShadowConfig, StepConfig};
use crate::verdict::Thresholds;
use ferry_api::records::EndpointCondition;
use ferry_api::traffic::policy::MAX_AGE_SECONDS;
use ferry_api::units::{DURATION_PATTERN, parse_duration};

/// `ferry.dev/paused: "true"` pauses like `spec.paused`.
pub const ANNOTATION_PAUSED: &str = "ferry.dev/paused";
/// `ferry.dev/abort: "true"` aborts like `spec.abort`.
pub const ANNOTATION_ABORT: &str = "ferry.dev/abort";
/// `ferry.dev/promote-now: "true"` promotes like `spec.promoteNow`.
pub const ANNOTATION_PROMOTE_NOW: &str = "ferry.dev/promote-now";

/// The serving image when `spec.image` is not set.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/ferry-ml/ferry:", env!("CARGO_PKG_VERSION"));

/// A model served on Kubernetes and rolled out progressively: the operator runs the serving
/// pods, keeps the registry endpoint of the same name, and moves traffic to each new version
/// step by step, rolling back on its own when the new version is worse.
// The printcolumns repeat `type_ = "integer"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    category = "ferry",
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "A model served by Ferry and rolled out progressively (shadow, canary steps, promote) with automatic rollback.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Stable",
        type_ = "integer",
        json_path = ".status.stableVersion"
    ),
    printcolumn(
        name = "Candidate",
        type_ = "integer",
        json_path = ".status.candidateVersion"
    ),
    printcolumn(
        name = "Weight",
        type_ = "number",
        description = "Percent of requests the candidate answers",
        json_path = ".status.currentWeight"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The registry model to serve.
    #[schemars(length(min = 1))]
    pub model: String,
    /// Serve this version number. Set this or `alias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i64>,
    /// Track this alias (`production` or `@production`): every move of the alias in the
    /// registry starts a rollout. Set this or `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Serving pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// CPU and memory of each serving pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The serving image (the `ferry` image); defaults to the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where the registry is, and the tokens the operator and the pods call it with.
    pub registry: RegistrySpec,
    /// Who may call the serving pods. They listen on the pod network, so they never run open.
    pub auth: AuthSpec,
    /// How a new version is rolled out.
    #[serde(default)]
    pub strategy: Strategy,
    /// The stable version counts as stale once older than this (`30d`, `12h`): a perishable
    /// model. Its age counts from its training data's `as_of` when its lineage has one, else from
    /// its creation. The registry raises `model.stale` once per incident, and the `Stale`
    /// condition shows it. Unset leaves the endpoint's own setting (`ferry endpoint set
    /// --max-age`) alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_age: Option<String>,
    /// Freeze the rollout where it is (the traffic split stays; nothing is judged or started).
    #[serde(default)]
    pub paused: bool,
    /// Roll the current rollout back now, and start none while set.
    #[serde(default)]
    pub abort: bool,
    /// Promote the candidate now, skipping the rest of the analysis.
    #[serde(default)]
    pub promote_now: bool,
}

/// The registry the serving pods and the operator talk to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Base URL, e.g. `http://ferry-registry.ferry.svc:8080`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// A Secret key holding the operator's bearer token (role `write`: it sets the endpoint).
    /// Only the operator reads it; it never reaches the serving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,
    /// A Secret key holding the serving pods' bearer token (role `serving`: they read models and
    /// post their reports, nothing more). The kubelet gives it to the pods; the operator never
    /// reads it. Without it the pods call the registry without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_token_secret: Option<SecretKeyRef>,
}

/// The tokens the serving pods accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret key holding a tokens file (`ROLE:SECRET` per line, as `ferry serving
    /// --tokens-file`): clients of the pods' Service present one of these tokens. Mounted
    /// read-only into the pods by the kubelet; the operator never reads it.
    pub tokens_secret: SecretKeyRef,
}

/// A key of a Secret in the resource's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key inside it.
    #[serde(default = "default_token_key")]
    pub key: String,
}

/// How a new version is rolled out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// An optional first stage in which the candidate only receives copies of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStrategy>,
    /// The canary steps and how each is judged.
    #[serde(default)]
    pub canary: CanaryStrategy,
}

/// The shadow stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStrategy {
    /// How long the candidate shadows before it is judged (`30s`, `5m`, `1h`).
    #[serde(default = "default_shadow_duration")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
    /// Share of requests mirrored to the candidate, 0..1.
    #[serde(default = "one")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
}

impl Default for ShadowStrategy {
    fn default() -> Self {
        ShadowStrategy {
            duration: default_shadow_duration(),
            sample_rate: one(),
        }
    }
}

/// The canary steps and their analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// Steps with increasing weights; the candidate is promoted after the last one passes.
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1))]
    pub steps: Vec<CanaryStep>,
    /// How each step is judged.
    #[serde(default)]
    pub analysis: AnalysisSpec,
}

impl Default for CanaryStrategy {
    fn default() -> Self {
        CanaryStrategy {
            steps: default_steps(),
            analysis: AnalysisSpec::default(),
        }
    }
}

/// One canary step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of requests the candidate answers (0.1 to 100).
    #[schemars(range(min = 0.1, max = 100.0))]
    pub weight: f64,
    /// How long the step is held before its final judgement (`30s`, `1m`, `1h`).
    #[serde(default = "default_pause")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub pause: String,
}

/// How a step is judged. Checks run business first (reward), then technical (errors, latency),
/// then model signals (shadow agreement, drift); the first failure rolls back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// How often the candidate is judged during a step, and the window each judgement covers.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    /// Fewer candidate requests (or shadow comparisons) in a window is inconclusive: wait.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: u32,
    /// The reward check applies once both versions have this many rewards in a window.
    #[serde(default = "default_min_rewards")]
    #[schemars(range(min = 1))]
    pub min_rewards: u32,
    /// Highest acceptable candidate error rate, 0..1.
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    /// Highest acceptable candidate p99 latency, in milliseconds.
    #[serde(default = "default_max_latency_p99_ms")]
    #[schemars(range(min = 0.0))]
    pub max_latency_p99_ms: f64,
    /// Lowest acceptable share of shadow comparisons agreeing with the stable version, 0..1.
    #[serde(default = "default_min_shadow_agreement")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_shadow_agreement: f64,
    /// Lowest acceptable candidate/stable mean-reward ratio.
    #[serde(default = "default_min_reward_ratio")]
    #[schemars(range(min = 0.0))]
    pub min_reward_ratio: f64,
    /// Highest acceptable drift score of live inputs from the candidate's training profile.
    #[serde(default = "default_max_drift")]
    #[schemars(range(min = 0.0))]
    pub max_drift: f64,
    /// Inconclusive judgements after a step's hold before the rollout fails; 0 waits forever.
    #[serde(default = "default_max_inconclusive")]
    pub max_inconclusive: u32,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: default_interval(),
            min_requests: default_min_requests(),
            min_rewards: default_min_rewards(),
            max_error_rate: default_max_error_rate(),
            max_latency_p99_ms: default_max_latency_p99_ms(),
            min_shadow_agreement: default_min_shadow_agreement(),
            min_reward_ratio: default_min_reward_ratio(),
            max_drift: default_max_drift(),
            max_inconclusive: default_max_inconclusive(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}
fn default_token_key() -> String {
    "token".into()
}
fn one() -> f64 {
    1.0
}
fn default_shadow_duration() -> String {
    "5m".into()
}
fn default_pause() -> String {
    "1m".into()
}
fn default_steps() -> Vec<CanaryStep> {
    [1.0, 10.0, 50.0, 100.0]
        .into_iter()
        .map(|weight| CanaryStep {
            weight,
            pause: default_pause(),
        })
        .collect()
}
fn default_interval() -> String {
    "1m".into()
}
fn default_min_requests() -> u32 {
    50
}
fn default_min_rewards() -> u32 {
    20
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_latency_p99_ms() -> f64 {
    1000.0
}
fn default_min_shadow_agreement() -> f64 {
    0.9
}
fn default_min_reward_ratio() -> f64 {
    0.95
}
fn default_max_drift() -> f64 {
    0.25
}
fn default_max_inconclusive() -> u32 {
    10
}

/// What the operator reports. The rollout's whole state is here, so a restarted operator
/// resumes where the last one stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// Phase, versions, step, weight, timestamps, last analysis, reason and message.
    #[serde(flatten)]
    pub rollout: RolloutState,
    /// `Ready` (a stable version serves), `Progressing` (a rollout is moving), `Degraded` (the
    /// last rollout was rolled back by its analysis or failed); then, as the registry's monitors
    /// judge the stable version, `Stale` (older than `maxAge`), `PerformanceDegraded` (its
    /// accuracy or reward dropped) and `Drifted` (its live inputs drifted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Which version the spec asks for, before it is resolved against the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRef {
    /// A version number.
    Version(i64),
    /// An alias to follow (without the `@`).
    Alias(String),
}

/// A spec the operator cannot act on, with every problem listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ModelDeployment spec: {}", .problems.join("; "))]
pub struct SpecError {
    /// Each problem, naming its field.
    pub problems: Vec<String>,
}

/// Checks a ModelDeployment's own name: its Service and Deployment take it, and their labels
/// carry it, so it must be a DNS-1035 label (what a Service name must be): at most 63
/// characters, lowercase letters, digits and `-`, starting with a letter and not ending with `-`.
///
/// # Errors
/// [`SpecError`] naming `metadata.name` and the rule.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        return Ok(());
    }
    Err(SpecError {
        problems: vec![format!(
            "metadata.name `{name}` ({} characters) cannot name the Service and label the pods: \
             use at most 63 lowercase letters, digits and `-`, starting with a letter",
            name.chars().count()
        )],
    })
}

impl ModelDeploymentSpec {
    /// The version or alias to serve.
    ///
    /// # Errors
    /// [`SpecError`] when neither or both of `version` and `alias` are set, or the alias is
    /// empty.
    pub fn target(&self) -> Result<TargetRef, SpecError> {
        let alias = self
            .alias
            .as_deref()
            .map(|a| a.trim().trim_start_matches('@'));
        let problem = |p: &str| SpecError {
            problems: vec![p.to_string()],
        };
        match (self.version, alias) {
            (Some(v), None) => Ok(TargetRef::Version(v)),
            (None, Some(a)) if !a.is_empty() => Ok(TargetRef::Alias(a.to_string())),
            (None, Some(_)) => Err(problem("alias: must name an alias, e.g. production")),
            (Some(_), Some(_)) => Err(problem("set either version or alias, not both")),
            (None, None) => Err(problem(
                "set version (a number) or alias (e.g. production) to say what to serve",
            )),
        }
    }

    /// The rollout configuration, validated: durations parse, weights increase within
    /// (0, 100], thresholds are in range, and the target is well formed.
    ///
    /// # Errors
    /// [`SpecError`] listing every problem.
    pub fn rollout_config(&self) -> Result<RolloutConfig, SpecError> {
        let mut problems = Vec::new();
        if let Err(e) = self.target() {
            problems.extend(e.problems);
        }
        if self.model.trim().is_empty() {
            problems.push("model: must not be empty".into());
        }
        if self.replicas < 0 {
            problems.push(format!(
                "replicas: must be 0 or more, got {}",
                self.replicas
            ));
        }
        let mut duration = |field: &str, text: &str| match parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{field}: {e}"));
                Duration::ZERO
            }
        };
        let shadow = self.strategy.shadow.as_ref().map(|s| ShadowConfig {
            duration: duration("strategy.shadow.duration", &s.duration),
            sample_rate: s.sample_rate,
        });
        let canary = &self.strategy.canary;
        let steps: Vec<StepConfig> = canary
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepConfig {
                weight: s.weight,
                pause: duration(&format!("strategy.canary.steps[{i}].pause"), &s.pause),
            })
            .collect();
        let a = &canary.analysis;
        let interval = duration("strategy.canary.analysis.interval", &a.interval);
        let max_age = self
            .max_age
            .as_deref()
            .map(|text| (duration("maxAge", text), text));
        if interval.is_zero() && parse_duration(&a.interval).is_ok() {
            problems.push("strategy.canary.analysis.interval: must be longer than 0s".into());
        }
        if let Some((age, text)) = max_age
            && parse_duration(text).is_ok()
            && !(1..=MAX_AGE_SECONDS).contains(&age.as_secs())
        {
            // The registry counts whole seconds: under one would make every version stale.
            problems.push(format!(
                "maxAge: must be between 1s and 36500d (100 years), got `{}`",
                text.trim()
            ));
        }
        if let Some(s) = &shadow
            && !(s.sample_rate > 0.0 && s.sample_rate <= 1.0)
        {
            problems.push(format!(
                "strategy.shadow.sampleRate: must be in (0, 1], got {}",
                s.sample_rate
            ));
        }
        if steps.is_empty() {
            problems.push("strategy.canary.steps: at least one step is needed".into());
        }
        let mut previous = 0.0;
        for (i, step) in steps.iter().enumerate() {
            if !(step.weight >= 0.1 && step.weight <= 100.0) {
                problems.push(format!(
                    "strategy.canary.steps[{i}].weight: must be between 0.1 and 100 (percent), got {}",
                    step.weight
                ));
            } else if step.weight <= previous {
                problems.push(format!(
                    "strategy.canary.steps[{i}].weight: weights must increase, {} follows {previous}",
                    step.weight
                ));
            }
            previous = step.weight;
        }
        for (field, value, lo, hi) in [
            ("maxErrorRate", a.max_error_rate, 0.0, 1.0),
            ("minShadowAgreement", a.min_shadow_agreement, 0.0, 1.0),
            ("maxLatencyP99Ms", a.max_latency_p99_ms, 0.0, f64::MAX),
            ("minRewardRatio", a.min_reward_ratio, 0.0, f64::MAX),
            ("maxDrift", a.max_drift, 0.0, f64::MAX),
        ] {
            if !(value >= lo && value <= hi) {
                problems.push(format!(
                    "strategy.canary.analysis.{field}: must be between {lo} and {hi}, got {value}"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(SpecError { problems });
        }
        Ok(RolloutConfig {
            model: self.model.trim().to_string(),
            shadow,
            steps,
            interval,
            max_inconclusive: a.max_inconclusive,
            thresholds: Thresholds {
                min_requests: u64::from(a.min_requests),
                min_rewards: u64::from(a.min_rewards),
                max_error_rate: a.max_error_rate,
                max_latency_p99_ms: a.max_latency_p99_ms,
                min_shadow_agreement: a.min_shadow_agreement,
                min_reward_ratio: a.min_reward_ratio,
                max_drift: a.max_drift,
            },
            max_age: max_age.map(|(age, _)| age),
        })
    }

    /// The serving image to run.
    pub fn image_or_default(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_IMAGE)
    }
}

impl ModelDeployment {
    /// The manual controls: each spec field or its annotation.
    pub fn controls(&self) -> Controls {
        let annotated = |key: &str| {
            self.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        };
        Controls {
            paused: self.spec.paused || annotated(ANNOTATION_PAUSED),
            abort: self.spec.abort || annotated(ANNOTATION_ABORT),
            promote_now: self.spec.promote_now || annotated(ANNOTATION_PROMOTE_NOW),
        }
    }

    /// The rollout state from the status (the empty state for a new resource).
    pub fn rollout_state(&self) -> RolloutState {
        self.status
            .as_ref()
            .map(|s| s.rollout.clone())
            .unwrap_or_default()
    }
}

/// The condition types copied from the registry's judgement of the endpoint, in this order
/// after `Ready`, `Progressing` and `Degraded`.
pub const REGISTRY_CONDITIONS: [&str; 3] = ["Stale", "PerformanceDegraded", "Drifted"];

/// A condition's desired status, type, reason and message, before transition times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionSummary {
    /// `Ready`, `Progressing`, `Degraded`, or one of [`REGISTRY_CONDITIONS`].
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// For humans.
    pub message: String,
}

/// `Ready`, `Progressing` and `Degraded` as `state` implies them.
pub fn condition_summaries(state: &RolloutState) -> [ConditionSummary; 3] {
    let reason = state.reason.clone().unwrap_or_else(|| "Pending".into());
    let message = state.message.clone().unwrap_or_default();
    let ready = match state.stable_version {
        Some(v) => ConditionSummary {
            type_: "Ready",
            status: "True",
            reason: "StableServing".into(),
            message: format!("version {v} serves traffic"),
        },
        None => ConditionSummary {
            type_: "Ready",
            status: "False",
            reason: reason.clone(),
            message: if message.is_empty() {
                "no version deployed yet".into()
            } else {
                message.clone()
            },
        },
    };
    let moving = matches!(state.phase, Phase::Shadowing | Phase::Progressing);
    let progressing = ConditionSummary {
        type_: "Progressing",
        status: holds(moving),
        reason: if state.phase == Phase::Paused {
            "Paused".into()
        } else {
            reason.clone()
        },
        // Never empty: Kubernetes 1.20's server-side apply turns "" into null, which the
        // schema refuses.
        message: if message.is_empty() {
            "no rollout in progress".into()
        } else {
            message.clone()
        },
    };
    let degraded_phase = matches!(state.phase, Phase::RolledBack | Phase::Failed)
        && !matches!(
            state.reason.as_deref(),
            Some(crate::rollout::REASON_ABORTED | crate::rollout::REASON_WITHDRAWN)
        );
    let degraded = ConditionSummary {
        type_: "Degraded",
        status: holds(degraded_phase),
        reason: if degraded_phase {
            reason
        } else {
            "Healthy".into()
        },
        message: if degraded_phase && !message.is_empty() {
            message
        } else if degraded_phase {
            "the last rollout was rolled back".into()
        } else {
            "no rollout was rolled back".into()
        },
    };
    [ready, progressing, degraded]
}

/// The registry's judgement of the endpoint's stable version (its endpoint's `conditions`) as
/// Kubernetes conditions: `Stale` and `PerformanceDegraded` as reported, and one `Drifted` (the
/// first that is `True`, else a `False` one). A type the registry does not report (its monitor
/// is off) gives none.
pub fn registry_condition_summaries(conditions: &[EndpointCondition]) -> Vec<ConditionSummary> {
    REGISTRY_CONDITIONS
        .into_iter()
        .filter_map(|type_| {
            let of_type = || conditions.iter().filter(move |c| c.kind == type_);
            let reported = of_type()
                .find(|c| c.status == "True")
                .or_else(|| of_type().find(|c| c.status == "False"))
                .or_else(|| of_type().next())?;
            let status = match reported.status.as_str() {
                "True" => "True",
                "False" => "False",
                _ => "Unknown",
            };
            let reason = match (type_, status) {
                ("Stale", "True") => "MaxAgeExceeded",
                ("Stale", "False") => "WithinMaxAge",
                ("PerformanceDegraded", "True") => "PerformanceDropped",
                ("PerformanceDegraded", "False") => "PerformanceHeld",
                ("PerformanceDegraded", _) => "NotEnoughFeedback",
                ("Drifted", "True") => "InputsDrifted",
                ("Drifted", "False") => "InputsStable",
                _ => "NoVerdict",
            };
            // Never empty: Kubernetes 1.20's server-side apply turns "" into null.
            let message = if reported.message.trim().is_empty() {
                format!("{type_} is {status} for version {}", reported.version)
            } else {
                reported.message.clone()
            };
            Some(ConditionSummary {
                type_,
                status,
                reason: reason.into(),
                message,
            })
        })
        .collect()
}

/// The status to write for `state`: `Ready`, `Progressing` and `Degraded` from the rollout,
/// then [`registry_condition_summaries`] of `registry`, the endpoint's conditions as just read
/// (empty when it has none or does not exist). `None` means the endpoint could not be read: the
/// previous status's registry conditions are kept as they were rather than flap. Conditions keep
/// their `lastTransitionTime` while their status does not change.
pub fn status_for(
    state: RolloutState,
    previous: Option<&ModelDeploymentStatus>,
    registry: Option<&[EndpointCondition]>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> ModelDeploymentStatus {
    let previous_conditions: BTreeMap<&str, &Condition> = previous
        .map(|p| p.conditions.iter().map(|c| (c.type_.as_str(), c)).collect())
        .unwrap_or_default();
    let condition = |summary: ConditionSummary| {
        let since = previous_conditions
            .get(summary.type_)
            .filter(|c| c.status == summary.status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| k8s_time(now));
        Condition {
            type_: summary.type_.into(),
            status: summary.status.into(),
            reason: summary.reason,
            message: summary.message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let mut conditions: Vec<Condition> = condition_summaries(&state)
        .into_iter()
        .map(condition)
        .collect();
    match registry {
        Some(reported) => conditions.extend(
            registry_condition_summaries(reported)
                .into_iter()
                .map(condition),
        ),
        None => conditions.extend(
            REGISTRY_CONDITIONS
                .into_iter()
                .filter_map(|type_| previous_conditions.get(type_).map(|c| (*c).clone())),
        ),
    }
    ModelDeploymentStatus {
        rollout: state,
        conditions,
        observed_generation: generation,
    }
}

fn holds(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// A Kubernetes timestamp (whole seconds, as `metav1.Time` is written).
fn k8s_time(at: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(at.timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_a_valid_resource_tracking_an_alias() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/examples/modeldeployment.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let md: ModelDeployment = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            md.spec.target().unwrap(),
            TargetRef::Alias("production".into())
        );
        let config = md.spec.rollout_config().unwrap();
        assert_eq!(config.model, "fraud");
        let weights: Vec<f64> = config.steps.iter().map(|s| s.weight).collect();
        assert_eq!(weights, [5.0, 25.0, 50.0, 100.0]);
        assert!(config.shadow.is_some());
    }

    fn spec() -> ModelDeploymentSpec {
        serde_json::from_value(serde_json::json!({
            "model": "iris",
            "alias": "@production",
            "registry": {"url": "http://registry:8080"},
            "auth": {"tokensSecret": {"name": "ferry-tokens", "key": "serving-tokens"}}
        }))
        .unwrap()
    }

    #[test]
    fn a_minimal_spec_gets_first_user_defaults() {
        let spec = spec();
        assert_eq!(spec.replicas, 1);
        assert_eq!(
            spec.target().unwrap(),
            TargetRef::Alias("production".into())
        );
        let config = spec.rollout_config().unwrap();
        let weights: Vec<f64> = config.steps.iter().map(|s| s.weight).collect();
        assert_eq!(weights, vec![1.0, 10.0, 50.0, 100.0]);
        assert!(
            config
                .steps
                .iter()
                .all(|s| s.pause == Duration::from_secs(60))
        );
        assert_eq!(config.interval, Duration::from_secs(60));
        assert_eq!(config.shadow, None);
        assert_eq!(config.thresholds.min_requests, 50);
        assert_eq!(config.thresholds.max_error_rate, 0.01);
        assert_eq!(config.max_inconclusive, 10);
        assert_eq!(spec.image_or_default(), DEFAULT_IMAGE);
    }

    #[test]
    fn names_that_cannot_name_a_service_are_refused() {
        for good in ["fraud", "fraud-v2", &format!("a{}", "b".repeat(62))] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            format!("a{}", "b".repeat(63)),
            "fraud.v2".to_string(),
            "Fraud".to_string(),
            "2fraud".to_string(),
            "fraud-".to_string(),
        ] {
            let err = check_name(&bad).unwrap_err();
            assert!(err.problems[0].contains("metadata.name"), "{bad}");
        }
    }

    #[test]
    fn an_invalid_spec_lists_every_problem_with_its_field() {
        let mut spec = spec();
        spec.version = Some(3);
        spec.strategy.shadow = Some(ShadowStrategy {
            duration: "5 minutes".into(),
            sample_rate: 0.0,
        });
        spec.strategy.canary.steps = vec![
            CanaryStep {
                weight: 50.0,
                pause: "1m".into(),
            },
            CanaryStep {
                weight: 10.0,
                pause: "1x".into(),
            },
            CanaryStep {
                weight: 200.0,
                pause: "1m".into(),
            },
        ];
        spec.strategy.canary.analysis.max_error_rate = 2.0;
        let err = spec.rollout_config().unwrap_err();
        let text = err.to_string();
        for needle in [
            "either version or alias",
            "strategy.shadow.duration",
            "strategy.shadow.sampleRate",
            "steps[1].weight: weights must increase",
            "steps[1].pause",
            "steps[2].weight: must be between 0.1 and 100",
            "maxErrorRate",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn neither_version_nor_alias_is_refused() {
        let mut spec = spec();
        spec.alias = None;
        assert!(
            spec.target()
                .unwrap_err()
                .to_string()
                .contains("set version")
        );
        spec.version = Some(4);
        assert_eq!(spec.target().unwrap(), TargetRef::Version(4));
    }

    #[test]
    fn controls_come_from_spec_fields_or_annotations() {
        let mut md = ModelDeployment::new("iris", spec());
        assert_eq!(md.controls(), Controls::default());
        md.metadata.annotations = Some(BTreeMap::from([
            (ANNOTATION_PAUSED.to_string(), "True".to_string()),
            (ANNOTATION_ABORT.to_string(), "no".to_string()),
        ]));
        md.spec.promote_now = true;
        assert_eq!(
            md.controls(),
            Controls {
                paused: true,
                abort: false,
                promote_now: true
            }
        );
    }

    #[test]
    fn the_status_flattens_the_rollout_state_and_reads_back_the_same() {
        let state = RolloutState {
            phase: Phase::Progressing,
            stable_version: Some(1),
            candidate_version: Some(2),
            current_step: Some(2),
            current_weight: 10.0,
            step_started_at: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            ..RolloutState::default()
        };
        let now = DateTime::from_timestamp(1_700_000_100, 0).unwrap();
        let status = status_for(state.clone(), None, Some(&[]), Some(3), now);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "Progressing");
        assert_eq!(json["stableVersion"], 1);
        assert_eq!(json["candidateVersion"], 2);
        assert_eq!(json["currentStep"], 2);
        assert_eq!(json["currentWeight"], 10.0);
        assert_eq!(json["stepStartedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(json["observedGeneration"], 3);
        let back: ModelDeploymentStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.rollout, state);
    }

    #[test]
    fn conditions_keep_their_transition_time_until_their_status_changes() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(1_700_000_600, 0).unwrap();
        let rolling = RolloutState {
            phase: Phase::Progressing,
            stable_version: Some(1),
            candidate_version: Some(2),
            current_step: Some(1),
            current_weight: 1.0,
            ..RolloutState::default()
        };
        let first = status_for(rolling.clone(), None, Some(&[]), Some(1), t0);
        let by_type = |s: &ModelDeploymentStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).unwrap().clone()
        };
        assert_eq!(by_type(&first, "Ready").status, "True");
        assert_eq!(by_type(&first, "Progressing").status, "True");
        assert_eq!(by_type(&first, "Degraded").status, "False");

        let mut rolled_back = rolling;
        rolled_back.phase = Phase::RolledBack;
        rolled_back.reason = Some("ErrorRateTooHigh".into());
        let second = status_for(rolled_back, Some(&first), Some(&[]), Some(1), t1);
        assert_eq!(
            by_type(&second, "Ready").last_transition_time,
            by_type(&first, "Ready").last_transition_time
        );
        assert_eq!(by_type(&second, "Degraded").status, "True");
        assert_eq!(by_type(&second, "Degraded").reason, "ErrorRateTooHigh");
        assert_eq!(
            by_type(&second, "Degraded").last_transition_time,
            k8s_time(t1)
        );
        assert_eq!(by_type(&second, "Progressing").status, "False");
    }

    #[test]
    fn max_age_is_parsed_into_the_rollout_config_and_a_zero_one_is_refused() {
        let mut spec = spec();
        assert_eq!(spec.rollout_config().unwrap().max_age, None);
        spec.max_age = Some("30d".into());
        assert_eq!(
            spec.rollout_config().unwrap().max_age,
            Some(Duration::from_secs(30 * 86_400))
        );
        for bad in ["0s", "500ms", "36501d", "30 days"] {
            spec.max_age = Some(bad.into());
            let text = spec.rollout_config().unwrap_err().to_string();
            assert!(text.contains("maxAge: "), "{bad}: {text}");
        }
        spec.max_age = Some("0s".into());
        assert!(
            spec.rollout_config()
                .unwrap_err()
                .to_string()
                .contains("maxAge: must be between 1s and 36500d")
        );
    }

    fn reported(kind: &str, status: &str, version: i64, message: &str) -> EndpointCondition {
        EndpointCondition {
            kind: kind.into(),
            status: status.into(),
            version,
            event: (status == "True").then_some(41),
            message: message.into(),
        }
    }

    fn promoted() -> RolloutState {
        RolloutState {
            phase: Phase::Promoted,
            stable_version: Some(1),
            reason: Some("Deployed".into()),
            ..RolloutState::default()
        }
    }

    #[test]
    fn the_registry_conditions_follow_the_rollout_ones_with_camel_case_reasons() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let registry = [
            reported("Drifted", "False", 1, "no drift incident open"),
            reported("Stale", "True", 1, "version 1 is 31d old, maximum 30d"),
            reported("PerformanceDegraded", "Unknown", 1, "no verdict: 3 of 200"),
            reported("Drifted", "True", 2, "live inputs of version 2 drifted"),
        ];
        let status = status_for(promoted(), None, Some(&registry), Some(4), now);
        let seen: Vec<(&str, &str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.message.as_str(),
                )
            })
            .skip(3)
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "Stale",
                    "True",
                    "MaxAgeExceeded",
                    "version 1 is 31d old, maximum 30d"
                ),
                (
                    "PerformanceDegraded",
                    "Unknown",
                    "NotEnoughFeedback",
                    "no verdict: 3 of 200"
                ),
                (
                    "Drifted",
                    "True",
                    "InputsDrifted",
                    "live inputs of version 2 drifted"
                ),
            ]
        );
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types[..3], ["Ready", "Progressing", "Degraded"]);
        assert!(status.conditions[3..].iter().all(|c| {
            c.observed_generation == Some(4) && c.last_transition_time == k8s_time(now)
        }));
    }

    #[test]
    fn each_registry_verdict_has_its_own_reason_and_a_message_never_empty() {
        for (kind, status, reason) in [
            ("Stale", "True", "MaxAgeExceeded"),
            ("Stale", "False", "WithinMaxAge"),
            ("PerformanceDegraded", "True", "PerformanceDropped"),
            ("PerformanceDegraded", "False", "PerformanceHeld"),
            ("PerformanceDegraded", "Unknown", "NotEnoughFeedback"),
            ("Drifted", "True", "InputsDrifted"),
            ("Drifted", "False", "InputsStable"),
        ] {
            let summaries = registry_condition_summaries(&[reported(kind, status, 3, "")]);
            assert_eq!(summaries.len(), 1, "{kind} {status}");
            assert_eq!(
                (
                    summaries[0].type_,
                    summaries[0].status,
                    summaries[0].reason.as_str()
                ),
                (kind, status, reason)
            );
            assert!(!summaries[0].message.is_empty(), "{kind} {status}");
        }
        assert!(
            registry_condition_summaries(&[reported("Exploded", "True", 1, "boom")]).is_empty(),
            "types the operator does not know are not copied"
        );
    }

    #[test]
    fn an_endpoint_without_registry_conditions_gives_none_and_drops_the_old_ones() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let stale = [reported("Stale", "True", 1, "too old")];
        let first = status_for(promoted(), None, Some(&stale), Some(1), t0);
        assert_eq!(first.conditions.len(), 4);
        let second = status_for(promoted(), Some(&first), Some(&[]), Some(1), t0);
        let types: Vec<&str> = second.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Progressing", "Degraded"]);
    }

    #[test]
    fn an_unreadable_endpoint_keeps_the_previous_registry_conditions_unchanged() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(1_700_003_600, 0).unwrap();
        let registry = [
            reported("Stale", "True", 1, "too old"),
            reported("Drifted", "False", 1, "no drift incident open"),
        ];
        let first = status_for(promoted(), None, Some(&registry), Some(1), t0);
        let second = status_for(promoted(), Some(&first), None, Some(2), t1);
        assert_eq!(second.conditions[3..], first.conditions[3..]);
        assert_eq!(second.conditions.len(), 5);
        assert_eq!(
            second.conditions[0].observed_generation,
            Some(2),
            "the rollout's conditions are still written afresh"
        );
        let none_before = status_for(promoted(), None, None, Some(1), t1);
        assert_eq!(none_before.conditions.len(), 3);
    }

    #[test]
    fn registry_conditions_keep_their_transition_time_until_their_status_changes() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(1_700_003_600, 0).unwrap();
        let t2 = DateTime::from_timestamp(1_700_007_200, 0).unwrap();
        let stale = |status, message| [reported("Stale", status, 1, message)];
        let by_type = |s: &ModelDeploymentStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Stale")
                .unwrap()
                .clone()
        };
        let first = status_for(
            promoted(),
            None,
            Some(&stale("False", "1d old")),
            Some(1),
            t0,
        );
        let second = status_for(
            promoted(),
            Some(&first),
            Some(&stale("False", "2d old")),
            Some(1),
            t1,
        );
        assert_eq!(by_type(&second).last_transition_time, k8s_time(t0));
        assert_eq!(by_type(&second).message, "2d old");
        let third = status_for(
            promoted(),
            Some(&second),
            Some(&stale("True", "31d old")),
            Some(1),
            t2,
        );
        assert_eq!(by_type(&third).last_transition_time, k8s_time(t2));
        assert_eq!(by_type(&third).reason, "MaxAgeExceeded");
    }
}
