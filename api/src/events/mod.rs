//! The events of the registry's log: their kinds ([`EventKind`]), their typed payloads
//! ([`EventData`]), and the patterns webhooks subscribe with ([`patterns`]).
//!
//! The registry writes an event with [`EventData`], so each kind's payload has one definition;
//! consumers (serving's follower, the operator, the CLI, webhook receivers) read the kind with
//! [`crate::records::Event::event_kind`] and the payload with [`EventData::decode`] when they
//! need its fields. On the wire an event stays `{id, type, subject, data, created_at}`: a kind
//! this build does not know (a newer registry) is skipped, not an error.

pub mod patterns;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::records::{EndpointPolicy, VersionStatus};

/// Every kind of event the registry records, in the order they were introduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A model's first version was pushed.
    ModelCreated,
    /// A version was pushed.
    VersionCreated,
    /// A version was archived or restored.
    VersionUpdated,
    /// An alias was set or moved.
    AliasSet,
    /// An alias was removed.
    AliasDeleted,
    /// An endpoint's traffic policy was created or changed.
    EndpointUpdated,
    /// An endpoint was deleted.
    EndpointDeleted,
    /// A serving replica cannot apply the newest policy (once per incident).
    EndpointDegraded,
    /// The replica applies the policy again.
    EndpointRecovered,
    /// Live inputs of a version drifted past the endpoint's threshold (once per incident).
    DriftDetected,
    /// The drift score came back under the threshold.
    DriftRecovered,
    /// A step of a rollout (the operator's).
    RolloutStep,
    /// A webhook subscription was created.
    WebhookCreated,
    /// A webhook subscription was deleted.
    WebhookDeleted,
    /// An endpoint's stable version is older than the endpoint's maximum age (once per incident).
    ModelStale,
    /// The endpoint's stable version is within its maximum age again (a newer one, or a policy
    /// change).
    ModelRefreshed,
    /// An endpoint's stable version's accuracy or mean reward dropped past the policy's limit
    /// (once per incident).
    PerformanceDegraded,
    /// It came back within the limit, or the version stopped being stable.
    PerformanceRecovered,
    /// A feature view's definition was registered as a new version.
    FeatureViewRegistered,
    /// A feature view version's rows were written to the online store.
    FeatureViewMaterialized,
    /// Features served online differ from their offline values for the same entities.
    SkewDetected,
    /// They agree again (or were materialized again and agree).
    SkewRecovered,
}

impl EventKind {
    /// Every kind, in [`EventKind`]'s order.
    pub const ALL: [EventKind; 22] = [
        EventKind::ModelCreated,
        EventKind::VersionCreated,
        EventKind::VersionUpdated,
        EventKind::AliasSet,
        EventKind::AliasDeleted,
        EventKind::EndpointUpdated,
        EventKind::EndpointDeleted,
        EventKind::EndpointDegraded,
        EventKind::EndpointRecovered,
        EventKind::DriftDetected,
        EventKind::DriftRecovered,
        EventKind::RolloutStep,
        EventKind::WebhookCreated,
        EventKind::WebhookDeleted,
        EventKind::ModelStale,
        EventKind::ModelRefreshed,
        EventKind::PerformanceDegraded,
        EventKind::PerformanceRecovered,
        EventKind::FeatureViewRegistered,
        EventKind::FeatureViewMaterialized,
        EventKind::SkewDetected,
        EventKind::SkewRecovered,
    ];

    /// The spelling on the wire and in the database: `version.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ModelCreated => "model.created",
            EventKind::VersionCreated => "version.created",
            EventKind::VersionUpdated => "version.updated",
            EventKind::AliasSet => "alias.set",
            EventKind::AliasDeleted => "alias.deleted",
            EventKind::EndpointUpdated => "endpoint.updated",
            EventKind::EndpointDeleted => "endpoint.deleted",
            EventKind::EndpointDegraded => "endpoint.degraded",
            EventKind::EndpointRecovered => "endpoint.recovered",
            EventKind::DriftDetected => "drift.detected",
            EventKind::DriftRecovered => "drift.recovered",
            EventKind::RolloutStep => "rollout.step",
            EventKind::WebhookCreated => "webhook.created",
            EventKind::WebhookDeleted => "webhook.deleted",
            EventKind::ModelStale => "model.stale",
            EventKind::ModelRefreshed => "model.refreshed",
            EventKind::PerformanceDegraded => "performance.degraded",
            EventKind::PerformanceRecovered => "performance.recovered",
            EventKind::FeatureViewRegistered => "feature_view.registered",
            EventKind::FeatureViewMaterialized => "feature_view.materialized",
            EventKind::SkewDetected => "skew.detected",
            EventKind::SkewRecovered => "skew.recovered",
        }
    }

    /// The family a `family.*` pattern names: the part before the dot.
    pub fn family(self) -> &'static str {
        let name = self.as_str();
        name.split_once('.').map_or(name, |(family, _)| family)
    }

    /// Whether a change of this kind can change which version a model is served at (its
    /// aliases, its versions' status, a new version): what followers of models react to.
    pub fn moves_a_model(self) -> bool {
        matches!(
            self,
            EventKind::ModelCreated
                | EventKind::VersionCreated
                | EventKind::VersionUpdated
                | EventKind::AliasSet
                | EventKind::AliasDeleted
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_string()))
    }
}

/// A `type` this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventKind(pub String);

/// `model.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCreated {
    /// The model.
    pub model: String,
}

/// `version.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionCreated {
    /// The model.
    pub model: String,
    /// The new version's number.
    pub version: i64,
    /// The SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: i64,
}

/// `version.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionUpdated {
    /// The model.
    pub model: String,
    /// The version.
    pub version: i64,
    /// Its new status.
    pub status: VersionStatus,
}

/// `alias.set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasSet {
    /// The model.
    pub model: String,
    /// The alias.
    pub alias: String,
    /// The version it points at now.
    pub version: i64,
    /// The version it pointed at before (null for a new alias).
    pub previous: Option<i64>,
}

/// `alias.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasDeleted {
    /// The model.
    pub model: String,
    /// The alias.
    pub alias: String,
    /// The version it pointed at.
    pub version: i64,
}

/// `endpoint.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointUpdated {
    /// The endpoint.
    pub endpoint: String,
    /// Its new revision.
    pub revision: i64,
    /// The policy now in force.
    pub policy: EndpointPolicy,
    /// True when this write created the endpoint.
    pub created: bool,
}

/// `endpoint.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointDeleted {
    /// The endpoint.
    pub endpoint: String,
    /// Its last revision.
    pub revision: i64,
}

/// `endpoint.degraded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointDegraded {
    /// The endpoint.
    pub endpoint: String,
    /// The replica that cannot apply the policy.
    pub replica: String,
    /// Why.
    pub error: String,
    /// The policy revision the replica serves, when it said.
    pub revision: Option<i64>,
}

/// `endpoint.recovered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecovered {
    /// The endpoint.
    pub endpoint: String,
    /// The replica.
    pub replica: String,
    /// The error it reported before.
    pub previous_error: String,
    /// The policy revision it serves now, when it said.
    pub revision: Option<i64>,
}

/// A feature and its drift score, in `drift.detected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureScore {
    /// The input feature (`input[3]` or a named column).
    pub name: String,
    /// Its score by the policy's metric.
    pub score: f64,
}

/// `drift.detected`: the version, the policy, the window, and the worst features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftDetected {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// The version that drifted.
    pub version: i64,
    /// Its role in the endpoint (`stable`, `canary`, `shadow`).
    pub role: String,
    /// The metric of the policy (`psi`, `kl`, `js`).
    pub metric: String,
    /// The policy's threshold.
    pub threshold: f64,
    /// Windows in a row past the threshold the policy asks for.
    pub consecutive_windows: u32,
    /// The overall score of the window.
    pub score: Option<f64>,
    /// The window's length.
    pub window_seconds: f64,
    /// When the window ended (RFC 3339).
    pub window_end: String,
    /// Rows the window scored.
    pub samples: u64,
    /// The worst features, worst first.
    pub features: Vec<FeatureScore>,
}

/// `drift.recovered`, pointing at the `drift.detected` event it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRecovered {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// The version.
    pub version: i64,
    /// Its role in the endpoint.
    pub role: String,
    /// The metric of the policy.
    pub metric: String,
    /// The policy's threshold.
    pub threshold: f64,
    /// The overall score of the window.
    pub score: Option<f64>,
    /// The window's length.
    pub window_seconds: f64,
    /// When the window ended (RFC 3339).
    pub window_end: String,
    /// Rows the window scored.
    pub samples: u64,
    /// The id of the `drift.detected` event of the incident, when known.
    pub detected_event: Option<i64>,
}

/// `model.stale`: the endpoint's stable version is older than the policy's maximum age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStale {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// The stable version that is too old.
    pub version: i64,
    /// Its age when judged, in seconds.
    pub age_seconds: u64,
    /// The policy's maximum age, in seconds.
    pub max_age_seconds: u64,
    /// What the age counts from: `data` (the newest training dataset's `as_of`) or `created`.
    pub age_from: String,
    /// That instant (RFC 3339).
    pub since: String,
}

/// `model.refreshed`: the incident a `model.stale` opened is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRefreshed {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// The stable version now.
    pub version: i64,
    /// The version that was stale.
    pub stale_version: i64,
    /// Why: `new_version` (a newer stable version), `policy` (the maximum age was raised or
    /// removed).
    pub reason: String,
    /// The stable version's age now, in seconds.
    pub age_seconds: Option<u64>,
    /// The policy's maximum age, if any.
    pub max_age_seconds: Option<u64>,
    /// The id of the `model.stale` event it closes.
    pub stale_event: Option<i64>,
}

/// `performance.degraded`: the stable version's rolling accuracy or mean reward is more than
/// `max_drop` below its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceDegraded {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// The version.
    pub version: i64,
    /// `accuracy` or `reward`.
    pub metric: String,
    /// The window's value.
    pub value: f64,
    /// What it is compared with.
    pub reference: f64,
    /// Where the reference comes from: `policy`, `lineage` or `first_window`.
    pub reference_source: String,
    /// `reference - value`.
    pub drop: f64,
    /// The policy's limit.
    pub max_drop: f64,
    /// Labels (or rewards) in the window.
    pub samples: u64,
    /// Of the labels, the correct ones (accuracy only).
    pub correct: Option<u64>,
    /// When the oldest report of the window arrived (RFC 3339).
    pub window_start: Option<String>,
    /// When the window was judged (RFC 3339).
    pub window_end: String,
}

/// `performance.recovered`: the incident a `performance.degraded` opened is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceRecovered {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// The version that was degraded.
    pub version: i64,
    /// `accuracy` or `reward`.
    pub metric: String,
    /// Why: `recovered` (a window within the limit again), `replaced` (another version is
    /// stable), `policy` (the decay policy was removed or changed).
    pub reason: String,
    /// The window's value, when judged.
    pub value: Option<f64>,
    /// The reference.
    pub reference: Option<f64>,
    /// Labels (or rewards) in the window.
    pub samples: u64,
    /// The id of the `performance.degraded` event it closes.
    pub degraded_event: Option<i64>,
}

/// `feature_view.registered`: a new version of a feature view's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureViewRegistered {
    /// The view.
    pub name: String,
    /// The new version.
    pub version: i64,
    /// Its definition's hash.
    pub sha256: String,
    /// Its entity key.
    pub entity: String,
    /// How many features it has.
    pub features: usize,
}

/// `feature_view.materialized`: a view version's rows were written to the online store (what
/// `ferry features materialize` reports when it is done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureViewMaterialized {
    /// The view.
    pub name: String,
    /// The version whose rows were written.
    pub version: i64,
    /// What was read, its hash and how much of it.
    #[serde(flatten)]
    pub report: crate::features::Materialization,
}

/// `skew.detected`: features serving read online differ from the offline values materialized for
/// the same entities, in more than [`crate::skew::MAX_MISMATCH_SHARE`] of a window's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkewDetected {
    /// The feature view.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// Rows compared in the window.
    pub window_rows: u64,
    /// The skewed features, most mismatched first, each with an entity where it differed.
    pub features: Vec<crate::skew::SkewedFeature>,
}

/// `skew.recovered`: a window in which no feature is skewed closes the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkewRecovered {
    /// The feature view.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// Rows compared in the window.
    pub window_rows: u64,
    /// The id of the `skew.detected` event it closes.
    pub detected_event: Option<i64>,
}

/// `rollout.step`: a rollout step posted by the operator, with the endpoint's model and
/// revision at the time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStepped {
    /// The endpoint.
    pub endpoint: String,
    /// Its model.
    pub model: String,
    /// Its policy revision when the step was recorded.
    pub revision: i64,
    /// Why, one CamelCase word.
    pub reason: String,
    /// For people.
    pub message: String,
    /// The rollout's phase after the step.
    pub phase: String,
    /// The stable version after the step.
    pub stable: Option<i64>,
    /// The candidate version after the step.
    pub candidate: Option<i64>,
    /// The canary step, from 1.
    pub step: Option<u32>,
    /// Percent of requests the candidate answers after the step.
    pub weight: f64,
    /// Who reported it.
    pub source: Option<String>,
    /// The analysis that decided the step (verdict, window, every check with its value and
    /// threshold), when the step followed a judgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::records::StepAnalysis>,
}

/// `webhook.created` and `webhook.deleted` (the URL without credentials or query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookChanged {
    /// The webhook's id.
    pub id: String,
    /// Where it delivers, shown without secrets.
    pub url: String,
    /// The patterns it subscribes to.
    pub events: Vec<String>,
}

/// An event's payload, typed: what the registry writes and what consumers decode.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// `model.created`.
    ModelCreated(ModelCreated),
    /// `version.created`.
    VersionCreated(VersionCreated),
    /// `version.updated`.
    VersionUpdated(VersionUpdated),
    /// `alias.set`.
    AliasSet(AliasSet),
    /// `alias.deleted`.
    AliasDeleted(AliasDeleted),
    /// `endpoint.updated`.
    EndpointUpdated(Box<EndpointUpdated>),
    /// `endpoint.deleted`.
    EndpointDeleted(EndpointDeleted),
    /// `endpoint.degraded`.
    EndpointDegraded(EndpointDegraded),
    /// `endpoint.recovered`.
    EndpointRecovered(EndpointRecovered),
    /// `drift.detected`.
    DriftDetected(Box<DriftDetected>),
    /// `drift.recovered`.
    DriftRecovered(Box<DriftRecovered>),
    /// `rollout.step`.
    RolloutStep(Box<RolloutStepped>),
    /// `webhook.created`.
    WebhookCreated(WebhookChanged),
    /// `webhook.deleted`.
    WebhookDeleted(WebhookChanged),
    /// `model.stale`.
    ModelStale(Box<ModelStale>),
    /// `model.refreshed`.
    ModelRefreshed(Box<ModelRefreshed>),
    /// `performance.degraded`.
    PerformanceDegraded(Box<PerformanceDegraded>),
    /// `performance.recovered`.
    PerformanceRecovered(Box<PerformanceRecovered>),
    /// `feature_view.registered`.
    FeatureViewRegistered(FeatureViewRegistered),
    /// `feature_view.materialized`.
    FeatureViewMaterialized(Box<FeatureViewMaterialized>),
    /// `skew.detected`.
    SkewDetected(Box<SkewDetected>),
    /// `skew.recovered`.
    SkewRecovered(Box<SkewRecovered>),
}

impl EventData {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::ModelCreated(_) => EventKind::ModelCreated,
            EventData::VersionCreated(_) => EventKind::VersionCreated,
            EventData::VersionUpdated(_) => EventKind::VersionUpdated,
            EventData::AliasSet(_) => EventKind::AliasSet,
            EventData::AliasDeleted(_) => EventKind::AliasDeleted,
            EventData::EndpointUpdated(_) => EventKind::EndpointUpdated,
            EventData::EndpointDeleted(_) => EventKind::EndpointDeleted,
            EventData::EndpointDegraded(_) => EventKind::EndpointDegraded,
            EventData::EndpointRecovered(_) => EventKind::EndpointRecovered,
            EventData::DriftDetected(_) => EventKind::DriftDetected,
            EventData::DriftRecovered(_) => EventKind::DriftRecovered,
            EventData::RolloutStep(_) => EventKind::RolloutStep,
            EventData::WebhookCreated(_) => EventKind::WebhookCreated,
            EventData::WebhookDeleted(_) => EventKind::WebhookDeleted,
            EventData::ModelStale(_) => EventKind::ModelStale,
            EventData::ModelRefreshed(_) => EventKind::ModelRefreshed,
            EventData::PerformanceDegraded(_) => EventKind::PerformanceDegraded,
            EventData::PerformanceRecovered(_) => EventKind::PerformanceRecovered,
            EventData::FeatureViewRegistered(_) => EventKind::FeatureViewRegistered,
            EventData::FeatureViewMaterialized(_) => EventKind::FeatureViewMaterialized,
            EventData::SkewDetected(_) => EventKind::SkewDetected,
            EventData::SkewRecovered(_) => EventKind::SkewRecovered,
        }
    }

    /// What the event is about: the model, the endpoint, or the webhook's id.
    pub fn subject(&self) -> &str {
        match self {
            EventData::ModelCreated(e) => &e.model,
            EventData::VersionCreated(e) => &e.model,
            EventData::VersionUpdated(e) => &e.model,
            EventData::AliasSet(e) => &e.model,
            EventData::AliasDeleted(e) => &e.model,
            EventData::EndpointUpdated(e) => &e.endpoint,
            EventData::EndpointDeleted(e) => &e.endpoint,
            EventData::EndpointDegraded(e) => &e.endpoint,
            EventData::EndpointRecovered(e) => &e.endpoint,
            EventData::DriftDetected(e) => &e.endpoint,
            EventData::DriftRecovered(e) => &e.endpoint,
            EventData::RolloutStep(e) => &e.endpoint,
            EventData::WebhookCreated(e) | EventData::WebhookDeleted(e) => &e.id,
            EventData::ModelStale(e) => &e.endpoint,
            EventData::ModelRefreshed(e) => &e.endpoint,
            EventData::PerformanceDegraded(e) => &e.endpoint,
            EventData::PerformanceRecovered(e) => &e.endpoint,
            EventData::FeatureViewRegistered(e) => &e.name,
            EventData::FeatureViewMaterialized(e) => &e.name,
            EventData::SkewDetected(e) => &e.name,
            EventData::SkewRecovered(e) => &e.name,
        }
    }

    /// The payload as the event's `data` (keys sorted, as every event's data has been).
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            EventData::ModelCreated(e) => serde_json::to_value(e),
            EventData::VersionCreated(e) => serde_json::to_value(e),
            EventData::VersionUpdated(e) => serde_json::to_value(e),
            EventData::AliasSet(e) => serde_json::to_value(e),
            EventData::AliasDeleted(e) => serde_json::to_value(e),
            EventData::EndpointUpdated(e) => serde_json::to_value(e),
            EventData::EndpointDeleted(e) => serde_json::to_value(e),
            EventData::EndpointDegraded(e) => serde_json::to_value(e),
            EventData::EndpointRecovered(e) => serde_json::to_value(e),
            EventData::DriftDetected(e) => serde_json::to_value(e),
            EventData::DriftRecovered(e) => serde_json::to_value(e),
            EventData::RolloutStep(e) => serde_json::to_value(e),
            EventData::WebhookCreated(e) | EventData::WebhookDeleted(e) => serde_json::to_value(e),
            EventData::ModelStale(e) => serde_json::to_value(e),
            EventData::ModelRefreshed(e) => serde_json::to_value(e),
            EventData::PerformanceDegraded(e) => serde_json::to_value(e),
            EventData::PerformanceRecovered(e) => serde_json::to_value(e),
            EventData::FeatureViewRegistered(e) => serde_json::to_value(e),
            EventData::FeatureViewMaterialized(e) => serde_json::to_value(e),
            EventData::SkewDetected(e) => serde_json::to_value(e),
            EventData::SkewRecovered(e) => serde_json::to_value(e),
        };
        // Plain structs of strings, numbers and options: serializing them cannot fail.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Reads the payload of an event of `kind`.
    ///
    /// # Errors
    /// When `data` does not have the shape of `kind`'s payload.
    pub fn decode(
        kind: EventKind,
        data: &serde_json::Value,
    ) -> Result<EventData, serde_json::Error> {
        use serde_json::from_value as from;
        let data = data.clone();
        Ok(match kind {
            EventKind::ModelCreated => EventData::ModelCreated(from(data)?),
            EventKind::VersionCreated => EventData::VersionCreated(from(data)?),
            EventKind::VersionUpdated => EventData::VersionUpdated(from(data)?),
            EventKind::AliasSet => EventData::AliasSet(from(data)?),
            EventKind::AliasDeleted => EventData::AliasDeleted(from(data)?),
            EventKind::EndpointUpdated => EventData::EndpointUpdated(from(data)?),
            EventKind::EndpointDeleted => EventData::EndpointDeleted(from(data)?),
            EventKind::EndpointDegraded => EventData::EndpointDegraded(from(data)?),
            EventKind::EndpointRecovered => EventData::EndpointRecovered(from(data)?),
            EventKind::DriftDetected => EventData::DriftDetected(from(data)?),
            EventKind::DriftRecovered => EventData::DriftRecovered(from(data)?),
            EventKind::RolloutStep => EventData::RolloutStep(from(data)?),
            EventKind::WebhookCreated => EventData::WebhookCreated(from(data)?),
            EventKind::WebhookDeleted => EventData::WebhookDeleted(from(data)?),
            EventKind::ModelStale => EventData::ModelStale(from(data)?),
            EventKind::ModelRefreshed => EventData::ModelRefreshed(from(data)?),
            EventKind::PerformanceDegraded => EventData::PerformanceDegraded(from(data)?),
            EventKind::PerformanceRecovered => EventData::PerformanceRecovered(from(data)?),
            EventKind::FeatureViewRegistered => EventData::FeatureViewRegistered(from(data)?),
            EventKind::FeatureViewMaterialized => EventData::FeatureViewMaterialized(from(data)?),
            EventKind::SkewDetected => EventData::SkewDetected(from(data)?),
            EventKind::SkewRecovered => EventData::SkewRecovered(from(data)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_spelling_and_have_a_family() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert!(kind.as_str().starts_with(&format!("{}.", kind.family())));
        }
        assert!("model.exploded".parse::<EventKind>().is_err());
        assert_eq!(EventKind::ALL.len(), 22);
    }

    #[test]
    fn payloads_serialize_with_sorted_keys_and_nulls_kept_and_decode_back() {
        let set = EventData::AliasSet(AliasSet {
            model: "fraud".into(),
            alias: "production".into(),
            version: 2,
            previous: None,
        });
        assert_eq!(
            set.to_json().to_string(),
            r#"{"alias":"production","model":"fraud","previous":null,"version":2}"#
        );
        assert_eq!((set.kind(), set.subject()), (EventKind::AliasSet, "fraud"));
        assert_eq!(EventData::decode(set.kind(), &set.to_json()).unwrap(), set);
        let created = EventData::VersionCreated(VersionCreated {
            model: "fraud".into(),
            version: 1,
            sha256: "ab".into(),
            size: 3,
        });
        assert_eq!(
            created.to_json().to_string(),
            r#"{"model":"fraud","sha256":"ab","size":3,"version":1}"#
        );
        assert!(EventData::decode(EventKind::AliasSet, &created.to_json()).is_err());
    }
}
