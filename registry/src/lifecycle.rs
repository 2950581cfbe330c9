//! The lifecycle monitor: every interval (the drift interval), for each endpoint whose policy
//! sets a maximum age or a decay policy, judges its **stable** version and raises or closes an
//! incident, once per incident, with its event in the same transaction as its state:
//!
//! - **Perishable models** (`max_age_seconds`): the version's age counts from its newest
//!   training dataset's `as_of` when the lineage gives one, else from its creation
//!   ([`ferry_api::lifecycle::age_origin`]). Older than the maximum → `model.stale`. A newer
//!   stable version, or a policy that allows the age, closes it: `model.refreshed`.
//! - **Performance decay** (`decay`): the newest `window` labels (accuracy) or rewards (mean
//!   reward) the serving replicas reported for the version, reaching back over the reports the
//!   registry keeps, compared with a reference (the policy's, else the version's lineage metric
//!   of the same name, else its first full window, remembered here). More than `max_drop`
//!   below → `performance.degraded`; back within → `performance.recovered` (also when another
//!   version becomes stable or the policy goes). Fewer samples than the window: no verdict, and
//!   `ferry endpoint show` says how many there are.
//!
//! The judgments are pure ([`ferry_api::lifecycle`]); this is the thin shell around them. Like
//! the drift monitor, it is safe to run in several registries on one database: a judgment is
//! written only if the state it was made from is still there.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ferry_api::events::{
    EventData, ModelRefreshed, ModelStale, PerformanceDegraded, PerformanceRecovered,
};
use ferry_api::lifecycle::{
    DecayVerdict, FeedbackWindow, ReferenceSource, Transition, age, age_origin, decay_reference,
    incident_step, is_stale, judge_decay, newest_feedback,
};
use ferry_api::records::{
    DecayMetric, DecayPolicy, EndpointCondition, EndpointPolicy, EndpointRecord, Event,
};

use ferry_api::names::VersionRef;

use crate::error::{Error, Result};
use crate::store::MetadataStore;

/// How far back a decay window may reach; the registry's report retention is usually the tighter
/// bound.
pub const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// The two kinds of incident the monitor keeps, one row each per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The stable version is older than the maximum age.
    Stale,
    /// The stable version's accuracy or reward dropped.
    Decay,
}

impl Kind {
    /// The spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stale => "stale",
            Kind::Decay => "decay",
        }
    }

    /// Reads [`Kind::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Stale, Kind::Decay]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The stored state of one kind of incident of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleState {
    /// The endpoint.
    pub endpoint: String,
    /// Which incident.
    pub kind: Kind,
    /// The stable version it is about.
    pub version: i64,
    /// The id of the event that opened the incident, while it is open.
    pub incident_event: Option<i64>,
    /// Decay: the reference the windows are compared with.
    pub reference: Option<f64>,
    /// Decay: where it came from.
    #[serde(skip)]
    pub reference_source: Option<ReferenceSource>,
    /// Decay: the last window's value; stale: the age in seconds when last judged.
    pub last_value: Option<f64>,
    /// Decay: samples in the last window.
    pub last_samples: Option<u64>,
    /// When the row was last written.
    pub updated_at: DateTime<Utc>,
}

/// What happens to the incident with a write.
#[derive(Debug, Clone)]
pub(crate) enum Incident {
    /// Stays as it is.
    Keep,
    /// Opens with this event.
    Open(EventData),
    /// Closes with this event.
    Close(EventData),
}

/// What [`MetadataStore::record_lifecycle`] writes.
#[derive(Debug, Clone)]
pub(crate) struct LifecycleWrite {
    pub endpoint: String,
    pub kind: Kind,
    pub version: i64,
    pub reference: Option<f64>,
    pub reference_source: Option<ReferenceSource>,
    pub value: Option<f64>,
    pub samples: Option<u64>,
    pub incident: Incident,
    /// Delete the row (after emitting the incident's event, if any).
    pub forget: bool,
}

/// Starts the monitor on a background task: [`evaluate_once`] every `interval` (at least a
/// second), the first one at once. Failures are logged and retried at the next tick.
pub fn spawn_lifecycle_monitor(
    store: MetadataStore,
    interval: Duration,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
) {
    let interval = interval.max(crate::drift::monitor::MIN_INTERVAL);
    crate::drift::monitor::spawn_periodic("lifecycle", interval, tasks, stop, move |now| {
        let store = store.clone();
        async move { evaluate_once(&store, now).await }
    });
}

/// One pass as of `now`: judges the stable version of every endpoint with a maximum age or a
/// decay policy, writes what changed, and returns the events emitted. A failure on one endpoint
/// is logged and does not stop the others.
///
/// # Errors
/// [`Error::Database`] when the endpoints or states cannot be read.
pub async fn evaluate_once(store: &MetadataStore, now: DateTime<Utc>) -> Result<Vec<Event>> {
    let endpoints = store.endpoint_policies().await?;
    let states = store.lifecycle_states(None).await?;
    let mut events = Vec::new();
    for (name, policy) in endpoints {
        let known = |kind| states.iter().find(|s| s.endpoint == name && s.kind == kind);
        let stale = judge_stale(store, &name, &policy, known(Kind::Stale), now).await;
        let decay = judge_decay_of(store, &name, &policy, known(Kind::Decay), now).await;
        for result in [stale, decay] {
            match result {
                Ok(emitted) => events.extend(emitted),
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "lifecycle evaluation of the endpoint failed");
                }
            }
        }
    }
    Ok(events)
}

async fn judge_stale(
    store: &MetadataStore,
    name: &str,
    policy: &EndpointPolicy,
    previous: Option<&LifecycleState>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let open = previous.and_then(|p| p.incident_event);
    let refreshed = |reason: &str, age_seconds: Option<u64>| {
        EventData::ModelRefreshed(Box::new(ModelRefreshed {
            endpoint: name.to_string(),
            model: policy.model.clone(),
            version: policy.stable,
            stale_version: previous.map_or(policy.stable, |p| p.version),
            reason: reason.to_string(),
            age_seconds,
            max_age_seconds: policy.max_age_seconds,
            stale_event: open,
        }))
    };
    let write = |version, incident, value: Option<f64>, forget| LifecycleWrite {
        endpoint: name.to_string(),
        kind: Kind::Stale,
        version,
        reference: None,
        reference_source: None,
        value,
        samples: None,
        incident,
        forget,
    };
    let Some(max_age) = policy.max_age_seconds else {
        // The policy no longer limits the age: close an open incident, forget the row.
        return match previous {
            None => Ok(Vec::new()),
            Some(p) => {
                let incident = match open {
                    Some(_) => Incident::Close(refreshed("policy", None)),
                    None => Incident::Keep,
                };
                store
                    .record_lifecycle(previous, write(p.version, incident, None, true))
                    .await
            }
        };
    };
    let version = store
        .get_version(&policy.model, &VersionRef::Number(policy.stable))
        .await?;
    let (origin, source) = age_origin(version.created_at, &version.lineage);
    let age = age(origin, now);
    let age_seconds = age.as_secs();
    let stale = is_stale(age, Duration::from_secs(max_age));
    let same_version = previous.is_some_and(|p| p.version == policy.stable);
    let (incident, changed) = if open.is_some() && !same_version {
        // The stale version is no longer stable. The new one is judged at the next pass.
        (
            Incident::Close(refreshed("new_version", Some(age_seconds))),
            true,
        )
    } else {
        match incident_step(open.is_some(), Some(stale)) {
            Some(Transition::Opens) => (
                Incident::Open(EventData::ModelStale(Box::new(ModelStale {
                    endpoint: name.to_string(),
                    model: policy.model.clone(),
                    version: policy.stable,
                    age_seconds,
                    max_age_seconds: max_age,
                    age_from: source.as_str().to_string(),
                    since: crate::store::timestamp(origin),
                }))),
                true,
            ),
            Some(Transition::Closes) => (
                Incident::Close(refreshed("policy", Some(age_seconds))),
                true,
            ),
            None => (Incident::Keep, !same_version),
        }
    };
    if !changed {
        return Ok(Vec::new());
    }
    store
        .record_lifecycle(
            previous,
            write(policy.stable, incident, Some(age_seconds as f64), false),
        )
        .await
}

async fn judge_decay_of(
    store: &MetadataStore,
    name: &str,
    policy: &EndpointPolicy,
    previous: Option<&LifecycleState>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let open = previous.and_then(|p| p.incident_event);
    let recovered = |version: i64, metric: &str, reason: &str, window: Option<(f64, f64, u64)>| {
        EventData::PerformanceRecovered(Box::new(PerformanceRecovered {
            endpoint: name.to_string(),
            model: policy.model.clone(),
            version,
            metric: metric.to_string(),
            reason: reason.to_string(),
            value: window.map(|w| w.0),
            reference: window.map(|w| w.1).or(previous.and_then(|p| p.reference)),
            samples: window.map_or(0, |w| w.2),
            degraded_event: open,
        }))
    };
    let Some(decay) = &policy.decay else {
        return match previous {
            None => Ok(Vec::new()),
            Some(p) => {
                let incident = match open {
                    Some(_) => Incident::Close(recovered(p.version, "", "policy", None)),
                    None => Incident::Keep,
                };
                store
                    .record_lifecycle(
                        previous,
                        LifecycleWrite {
                            endpoint: name.to_string(),
                            kind: Kind::Decay,
                            version: p.version,
                            reference: None,
                            reference_source: None,
                            value: None,
                            samples: None,
                            incident,
                            forget: true,
                        },
                    )
                    .await
            }
        };
    };
    let metric = decay.metric.as_str();
    let stable = policy.stable;
    let same_version = previous.is_some_and(|p| p.version == stable);
    if previous.is_some() && !same_version {
        // Another version is stable: its incident (if any) is over, and it starts afresh.
        let incident = match open {
            Some(_) => Incident::Close(recovered(
                previous.map_or(stable, |p| p.version),
                metric,
                "replaced",
                None,
            )),
            None => Incident::Keep,
        };
        return store
            .record_lifecycle(
                previous,
                LifecycleWrite {
                    endpoint: name.to_string(),
                    kind: Kind::Decay,
                    version: stable,
                    reference: None,
                    reference_source: None,
                    value: None,
                    samples: None,
                    incident,
                    forget: false,
                },
            )
            .await;
    }
    let version = store
        .get_version(&policy.model, &VersionRef::Number(stable))
        .await?;
    let first_window = previous
        .filter(|p| p.reference_source == Some(ReferenceSource::FirstWindow))
        .and_then(|p| p.reference);
    let reference = decay_reference(decay, version.metrics.get(metric).copied(), first_window);
    let since = now
        - TimeDelta::from_std(LOOKBACK)
            .map_err(|_| Error::Internal("lookback out of range".into()))?;
    let reports = store.received_reports(name, since, now).await?;
    let window = newest_feedback(&reports, stable, decay.metric, decay.window);
    let verdict = judge_decay(decay, reference.map(|r| r.0), &window);
    let samples = window.samples(decay.metric);
    let (reference, breached, value) = match verdict {
        DecayVerdict::TooFewSamples { .. } => (reference, None, window.value(decay.metric)),
        DecayVerdict::Reference(v) => (Some((v, ReferenceSource::FirstWindow)), None, Some(v)),
        DecayVerdict::Healthy(v) => (reference, Some(false), Some(v)),
        DecayVerdict::Degraded(v) => (reference, Some(true), Some(v)),
    };
    tracing::debug!(endpoint = %name, version = stable, ?verdict, samples, "decay window judged");
    let incident = match (incident_step(open.is_some(), breached), value, reference) {
        (Some(Transition::Opens), Some(v), Some((r, source))) => Incident::Open(degraded_event(
            name, policy, decay, &window, v, r, source, now,
        )),
        (Some(Transition::Closes), Some(v), Some((r, _))) => Incident::Close(recovered(
            stable,
            metric,
            "recovered",
            Some((v, r, samples)),
        )),
        _ => Incident::Keep,
    };
    store
        .record_lifecycle(
            previous,
            LifecycleWrite {
                endpoint: name.to_string(),
                kind: Kind::Decay,
                version: stable,
                reference: reference.map(|r| r.0),
                reference_source: reference.map(|r| r.1),
                value,
                samples: Some(samples),
                incident,
                forget: false,
            },
        )
        .await
}

#[allow(clippy::too_many_arguments)]
fn degraded_event(
    name: &str,
    policy: &EndpointPolicy,
    decay: &DecayPolicy,
    window: &FeedbackWindow,
    value: f64,
    reference: f64,
    source: ReferenceSource,
    now: DateTime<Utc>,
) -> EventData {
    EventData::PerformanceDegraded(Box::new(PerformanceDegraded {
        endpoint: name.to_string(),
        model: policy.model.clone(),
        version: policy.stable,
        metric: decay.metric.as_str().to_string(),
        value,
        reference,
        reference_source: source.as_str().to_string(),
        drop: reference - value,
        max_drop: decay.max_drop,
        samples: window.samples(decay.metric),
        correct: (decay.metric == DecayMetric::Accuracy).then_some(window.counters.correct),
        window_start: window.start.map(crate::store::timestamp),
        window_end: crate::store::timestamp(now),
    }))
}

/// What the monitors judge of the endpoint now, for `GET /api/v1/endpoints/{name}`: one
/// condition per monitor its policy turns on. `Stale` and `PerformanceDegraded` come from this
/// monitor's state (`True` while an incident is open; `Unknown` before a first verdict, except
/// that a stable version not judged yet is `Stale` by its age, which needs no data), `Drifted`
/// from the drift monitor's (one per watched version with an open incident, else one `False`).
///
/// # Errors
/// [`Error::Database`], [`Error::NotFound`] for a stable version that went missing.
pub async fn conditions(
    store: &MetadataStore,
    name: &str,
    policy: &EndpointPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<EndpointCondition>> {
    let states = store.lifecycle_states(Some(name)).await?;
    let state = |kind| {
        states
            .iter()
            .find(|s| s.kind == kind && s.version == policy.stable)
    };
    let status = |open: bool| if open { "True" } else { "False" }.to_string();
    let mut conditions = Vec::new();
    if let Some(max_age) = policy.max_age_seconds {
        let version = store
            .get_version(&policy.model, &VersionRef::Number(policy.stable))
            .await?;
        let (origin, source) = age_origin(version.created_at, &version.lineage);
        let judged = state(Kind::Stale);
        let open = judged.and_then(|s| s.incident_event);
        // A version the monitor has not judged yet (it just became stable) is shown by its
        // age, as the next pass will judge it, rather than as fresh by default.
        let stale = match judged {
            Some(_) => open.is_some(),
            None => is_stale(age(origin, now), Duration::from_secs(max_age)),
        };
        conditions.push(EndpointCondition {
            kind: "Stale".into(),
            status: status(stale),
            version: policy.stable,
            event: open,
            message: format!(
                "version {} is {} old (counted from {}), maximum {}",
                policy.stable,
                ferry_api::units::short_age(age(origin, now).as_secs()),
                match source {
                    ferry_api::lifecycle::AgeSource::Data => "its training data",
                    ferry_api::lifecycle::AgeSource::Created => "its creation",
                },
                ferry_api::units::whole_units(max_age)
            ),
        });
    }
    if let Some(decay) = &policy.decay {
        let s = state(Kind::Decay);
        let open = s.and_then(|s| s.incident_event);
        let samples = s.and_then(|s| s.last_samples).unwrap_or(0);
        let metric = decay.metric.as_str();
        let (status, message) = match s {
            Some(s) if samples >= decay.window && s.reference.is_some() => (
                status(open.is_some()),
                format!(
                    "{metric} {} against a reference of {} ({}), maximum drop {}",
                    fmt_value(s.last_value),
                    fmt_value(s.reference),
                    s.reference_source.map_or("-", |r| r.as_str()),
                    decay.max_drop
                ),
            ),
            _ => (
                "Unknown".to_string(),
                format!(
                    "no verdict: {samples} of the {} {} a window needs",
                    decay.window,
                    if decay.metric == DecayMetric::Accuracy {
                        "labels"
                    } else {
                        "rewards"
                    }
                ),
            ),
        };
        conditions.push(EndpointCondition {
            kind: "PerformanceDegraded".into(),
            status,
            version: policy.stable,
            event: open,
            message,
        });
    }
    if policy.drift.is_some() {
        let mut drifted = 0;
        for drift in store.drift_states(Some(name)).await? {
            if let Some(event) = drift.incident_event {
                drifted += 1;
                conditions.push(EndpointCondition {
                    kind: "Drifted".into(),
                    status: status(true),
                    version: drift.version,
                    event: Some(event),
                    message: format!(
                        "live inputs of version {} drifted: score {} in the last judged window",
                        drift.version,
                        fmt_value(drift.last_score),
                    ),
                });
            }
        }
        if drifted == 0 {
            conditions.push(EndpointCondition {
                kind: "Drifted".into(),
                status: status(false),
                version: policy.stable,
                event: None,
                message: "no drift incident open".into(),
            });
        }
    }
    Ok(conditions)
}

/// An endpoint with its [`conditions`]: what `GET /api/v1/endpoints/{name}` answers.
///
/// # Errors
/// As [`MetadataStore::get_endpoint`] and [`conditions`].
pub async fn describe_endpoint(
    store: &MetadataStore,
    name: &str,
    now: DateTime<Utc>,
) -> Result<EndpointRecord> {
    let mut record = store.get_endpoint(name).await?;
    record.conditions = conditions(store, name, &record.policy, now).await?;
    Ok(record)
}

fn fmt_value(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}
