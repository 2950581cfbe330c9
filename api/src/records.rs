//! The registry's records as the API shows them: models, versions, aliases, events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lineage::{Lineage, ParamValue};
use crate::onnx::ModelSignature;

/// A model: a name under which versions are pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's name.
    pub name: String,
    /// Highest version number handed out (0 before the first push completes).
    pub latest_version: i64,
    /// Number of versions.
    pub version_count: i64,
    /// Alias → version.
    pub aliases: BTreeMap<String, i64>,
    /// When the first version was pushed.
    pub created_at: DateTime<Utc>,
    /// When anything about the model last changed.
    pub updated_at: DateTime<Utc>,
}

/// Whether a version may be deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionStatus {
    /// Usable everywhere.
    Active,
    /// Kept (with its bytes) for lineage and rollback, but no alias or new endpoint may point at it.
    Archived,
}

impl VersionStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Active => "active",
            VersionStatus::Archived => "archived",
        }
    }

    /// Parses the database spelling; anything unknown reads as archived (the safe side).
    pub fn from_db(text: &str) -> Self {
        if text == "active" {
            VersionStatus::Active
        } else {
            VersionStatus::Archived
        }
    }
}

/// One immutable version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The model's name.
    pub name: String,
    /// The version number, from 1.
    pub version: i64,
    /// Lowercase hex SHA-256 of the ONNX bytes (also the blob's address).
    pub sha256: String,
    /// Size of the ONNX bytes.
    pub size: i64,
    /// Active or archived.
    pub status: VersionStatus,
    /// Inputs, outputs and opsets read from the ONNX graph.
    pub signature: ModelSignature,
    /// Code and data the model came from.
    pub lineage: Lineage,
    /// Hyper-parameters.
    pub params: BTreeMap<String, ParamValue>,
    /// Evaluation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// A human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether a training profile is attached (`GET …/profile`).
    pub has_profile: bool,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// When it was pushed.
    pub created_at: DateTime<Utc>,
}

/// Where an alias points, and where it pointed before the change that returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The model's name.
    pub name: String,
    /// The alias.
    pub alias: String,
    /// The version it points at.
    pub version: i64,
    /// The version it pointed at before this change, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<i64>,
}

/// One change, as recorded in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic, gapless id: consumers resume after the last one they handled.
    pub id: i64,
    /// `model.created`, `version.created`, `version.updated`, `alias.set`, `alias.deleted`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The model (or endpoint) the event is about.
    pub subject: String,
    /// Event-specific details.
    pub data: serde_json::Value,
    /// When the change committed.
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// The event's kind, or `None` for a kind this build does not know (a newer registry's):
    /// consumers skip those.
    pub fn event_kind(&self) -> Option<crate::events::EventKind> {
        self.kind.parse().ok()
    }
}

/// A page of a newest-first listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A page of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventPage {
    /// Events with `id > after`, oldest first.
    pub events: Vec<Event>,
    /// The id to pass as `after` next time (the last event's id, or `after` when empty).
    pub next_after: i64,
    /// The newest event id in the log when this page was read: a consumer that first reads
    /// `head`, then the current state, then follows from `head`, misses nothing.
    pub head: i64,
}

/// The traffic policy of an endpoint: which versions of a model answer, in what proportion, and
/// which ones only listen in. `PUT /api/v1/endpoints/{name}`; serving follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPolicy {
    /// The model whose versions the endpoint routes between.
    pub model: String,
    /// The version answering every request not sent to the canary.
    pub stable: i64,
    /// A candidate version answering a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPolicy>,
    /// Versions that receive copies of requests; their answers are compared, never returned.
    #[serde(default)]
    pub shadows: Vec<ShadowPolicy>,
    /// A request header whose value decides the route (the same user always sees the same
    /// version); without it, each request is routed on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// When live inputs count as drifted (see drift monitoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftPolicy>,
    /// The stable version is stale once it is older than this many seconds (from its training
    /// data's `as_of` when its lineage gives one, else from its creation): a perishable model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    /// When the stable version's answers count as degraded (accuracy or mean reward from
    /// feedback, against a reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<DecayPolicy>,
}

/// What performance decay is measured on, from the feedback joined to a version's predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayMetric {
    /// Share of labelled predictions whose class equalled the label.
    Accuracy,
    /// Mean reward.
    Reward,
}

impl DecayMetric {
    /// The spelling on the wire, in events, and the lineage metric used as the reference.
    pub fn as_str(self) -> &'static str {
        match self {
            DecayMetric::Accuracy => "accuracy",
            DecayMetric::Reward => "reward",
        }
    }
}

/// When an endpoint's stable version counts as performing worse than it did (concept drift:
/// the inputs may look the same while the right answers changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecayPolicy {
    /// Accuracy (from labels) or mean reward.
    pub metric: DecayMetric,
    /// Degraded when the window's value is more than this below the reference (absolute: `0.05`
    /// is five accuracy points).
    pub max_drop: f64,
    /// The rolling window: the newest this-many labels (or rewards) of the version. Fewer in
    /// the reports the registry keeps: no verdict.
    #[serde(default = "default_decay_window")]
    pub window: u64,
    /// The value to compare with. Absent: the version's recorded lineage metric of the same name
    /// (`accuracy` / `reward`), else its first full window in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<f64>,
}

fn default_decay_window() -> u64 {
    200
}

/// A condition of an endpoint, in the manner of Kubernetes' conditions: what the registry's
/// monitors judge of its stable version now. `GET /api/v1/endpoints/{name}` lists one per
/// monitor the policy turns on: `Stale` (`max_age_seconds`), `PerformanceDegraded` (`decay`),
/// `Drifted` (`drift`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointCondition {
    /// `Stale`, `PerformanceDegraded` or `Drifted`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` (an incident is open), `False`, or `Unknown` (no verdict yet, e.g. too few
    /// labels).
    pub status: String,
    /// The version it is about.
    pub version: i64,
    /// The id of the event that opened the incident, while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<i64>,
    /// For people: the numbers behind it.
    pub message: String,
}

/// The canary part of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPolicy {
    /// The candidate version.
    pub version: i64,
    /// Share of requests it answers, 0 to 1, in steps down to 0.001.
    pub weight: f64,
}

/// One shadow of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowPolicy {
    /// The shadow version.
    pub version: i64,
    /// Share of requests mirrored to it, 0 to 1.
    #[serde(default = "one")]
    pub sample_rate: f64,
}

fn one() -> f64 {
    1.0
}

/// Which distance measures drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMetric {
    /// Population stability index.
    Psi,
    /// Kullback–Leibler divergence of live from training.
    Kl,
    /// Jensen–Shannon distance.
    Js,
}

/// When an endpoint's live inputs count as drifted from the training profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftPolicy {
    /// The distance.
    pub metric: DriftMetric,
    /// Scores above this are drift.
    pub threshold: f64,
    /// Fewer live samples than this in a window are not judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Windows in a row above the threshold before an incident is raised.
    #[serde(default = "default_consecutive")]
    pub consecutive_windows: u32,
    /// A sliding window by count: judge the newest this-many live rows (reaching back over the
    /// reports the registry keeps) instead of the rows of the last interval. For endpoints whose
    /// traffic per interval is low or bursty. Absent: windows by time, one interval long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_samples: Option<u64>,
}

fn default_min_samples() -> u64 {
    100
}

fn default_consecutive() -> u32 {
    1
}

/// An endpoint as stored: its policy and revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The endpoint's name (what clients call `/v2/models/{name}/infer`).
    pub name: String,
    /// Bumped by every write; `If-Match: "<revision>"` makes a write conditional.
    pub revision: i64,
    /// The traffic policy.
    #[serde(flatten)]
    pub policy: EndpointPolicy,
    /// When the endpoint was created.
    pub created_at: DateTime<Utc>,
    /// When its policy last changed.
    pub updated_at: DateTime<Utc>,
    /// What the monitors judge of it now (stale, performance degraded, drifted); only filled in
    /// by `GET /api/v1/endpoints/{name}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<EndpointCondition>,
}

/// A step of a progressive rollout on an endpoint, as the operator reports it with
/// `POST /api/v1/endpoints/{name}/rollout-events`. The registry records it as a `rollout.step`
/// event (with the endpoint's model and revision added), so webhooks and event consumers see
/// rollouts next to the policy changes they cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStep {
    /// Why, one CamelCase word: `RolloutStarted`, `StepAdvanced`, `Promoted`,
    /// `ErrorRateTooHigh`, …
    pub reason: String,
    /// For people.
    pub message: String,
    /// The rollout's phase after the step (`Progressing`, `Promoted`, `RolledBack`, …).
    pub phase: String,
    /// The stable version after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<i64>,
    /// The candidate version after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<i64>,
    /// The canary step after the change, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Percent of requests the candidate answers after the step, 0 to 100.
    #[serde(default)]
    pub weight: f64,
    /// Who reports it, e.g. `ModelDeployment default/iris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The analysis that decided this step, when the step followed a judgement (a stage
    /// passed, a rollback, an inconclusive limit): the verdict and every check's numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<StepAnalysis>,
}

/// The judgement behind a rollout step: what was compared over which window, the verdict and
/// every check with its value and threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepAnalysis {
    /// `Shadow` or `Canary`.
    pub stage: String,
    /// `Passed`, `Failed` or `Inconclusive`.
    pub verdict: String,
    /// The check that decided a failed or inconclusive verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The candidate version judged.
    pub candidate: i64,
    /// The stable version it was compared with.
    pub stable: i64,
    /// Length of the analysis window, in seconds.
    pub window_seconds: f64,
    /// Every check, in the order they were judged.
    pub checks: Vec<StepCheck>,
}

/// One check of a [`StepAnalysis`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepCheck {
    /// Which check (`errorRate`, `rewardRatio`, `latencyP99`, …).
    pub check: String,
    /// The measured value, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold, when the check has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Whether it passed; absent when it was skipped or not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// Why it was skipped, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
