//! The drift monitor: every interval, for each endpoint with a drift policy, judges the last
//! window of its stable (and canary) version's live inputs against the training profile, and
//! raises or closes an incident.
//!
//! The judgment is a pure state machine ([`step`]); [`evaluate_once`] is the thin shell that
//! reads the window's reports, scores them, and writes the new state together with its event
//! (`drift.detected` / `drift.recovered`) in one transaction.
//!
//! # Windows
//! A window ends at the evaluation's `now` and starts where the version's previous judged
//! window ended, or `interval` before `now`, whichever is later; it covers the reports the
//! registry *received* in `[start, now)`. A version is not judged again until 90% of an
//! interval has passed since its last judged window ended, so several registry replicas (each
//! running a monitor on the same database) judge each stretch of time once between them, and a
//! restart right after an evaluation does not judge the same reports twice.
//!
//! A policy with `window_samples` slides by count instead: each evaluation (still one per
//! interval) sums the newest reports, newest first, until they hold that many rows, reaching
//! back over every report the registry keeps. Consecutive windows then overlap, so
//! `consecutive_windows` counts evaluations; the event's window starts at the oldest report used.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ferry_api::drift::{DriftAnalysis, Profile, analyze_drift};
use ferry_api::events::{DriftDetected, DriftRecovered, EventData, FeatureScore};
use ferry_api::records::{DriftMetric, DriftPolicy, EndpointPolicy, Event};
use ferry_api::traffic::{DriftCounters, ReceivedReport, TrafficRole};

use crate::error::{Error, Result};
use crate::store::MetadataStore;

/// The evaluation interval when none is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Shortest interval the background monitor runs at.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How far back a window by count (`window_samples`) may reach; the registry's report retention
/// is usually the tighter bound.
pub const COUNT_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Most features named in a `drift.detected` event.
pub const EVENT_FEATURES: usize = 10;

/// Share of an interval that must pass after a judged window before the next one is judged.
const DUE_FRACTION: f64 = 0.9;

/// Where one version stands: how many windows in a row breached, and whether an incident is
/// open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriftState {
    /// Judged windows in a row whose score was above the threshold.
    pub consecutive: u32,
    /// Whether an incident is open (`drift.detected` emitted, `drift.recovered` not yet).
    pub incident: bool,
}

/// What one window showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The policy metric's overall score; `None` when nothing could be scored.
    pub score: Option<f64>,
    /// Live samples behind it ([`DriftAnalysis::samples`]).
    pub samples: u64,
}

/// How a window was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Too few samples (or no score): the state is left as it was.
    NotJudged,
    /// Above the threshold.
    Breach,
    /// At or below the threshold.
    Healthy,
}

/// An incident opening or closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Emit `drift.detected`.
    Detected,
    /// Emit `drift.recovered`.
    Recovered,
}

/// One step of the judgment: the new state, the verdict, and the incident transition if any.
///
/// - fewer than `min_samples` samples (or no score) → not judged, state unchanged;
/// - score above `threshold` → `consecutive + 1`; reaching `consecutive_windows` outside an
///   incident opens one ([`Transition::Detected`], once per incident);
/// - score at or below `threshold` → `consecutive = 0`, and an open incident closes
///   ([`Transition::Recovered`]), which re-arms detection.
pub fn step(
    state: DriftState,
    observation: &Observation,
    policy: &DriftPolicy,
) -> (DriftState, Verdict, Option<Transition>) {
    let score = match observation.score {
        Some(score) if observation.samples >= policy.min_samples && !score.is_nan() => score,
        _ => return (state, Verdict::NotJudged, None),
    };
    if score > policy.threshold {
        let consecutive = state.consecutive.saturating_add(1);
        let opens = !state.incident && consecutive >= policy.consecutive_windows;
        (
            DriftState {
                consecutive,
                incident: state.incident || opens,
            },
            Verdict::Breach,
            opens.then_some(Transition::Detected),
        )
    } else {
        (
            DriftState {
                consecutive: 0,
                incident: false,
            },
            Verdict::Healthy,
            state.incident.then_some(Transition::Recovered),
        )
    }
}

/// The stored judgment state of one version of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftStateRecord {
    /// The endpoint.
    pub endpoint: String,
    /// The version judged.
    pub version: i64,
    /// Judged windows in a row above the threshold.
    pub consecutive: u32,
    /// The id of the `drift.detected` event of the open incident, if one is open.
    pub incident_event: Option<i64>,
    /// End of the last judged window.
    pub window_end: Option<DateTime<Utc>>,
    /// The policy metric's score in that window.
    pub last_score: Option<f64>,
    /// Samples in that window.
    pub last_samples: Option<u64>,
    /// When the state was last written.
    pub updated_at: DateTime<Utc>,
}

impl DriftStateRecord {
    /// The part of the record the state machine works on.
    pub fn state(&self) -> DriftState {
        DriftState {
            consecutive: self.consecutive,
            incident: self.incident_event.is_some(),
        }
    }
}

/// What [`MetadataStore::record_drift_judgment`] writes.
#[derive(Debug, Clone)]
pub(crate) struct DriftJudgment {
    pub endpoint: String,
    pub version: i64,
    pub state: DriftState,
    pub window_end: DateTime<Utc>,
    pub score: Option<f64>,
    pub samples: u64,
    /// The event to emit with the change, and whether it opens (`true`) or closes the incident.
    pub event: Option<EventData>,
}

/// Starts the monitor on a background task: [`evaluate_once`] every `interval` (at least
/// [`MIN_INTERVAL`]), the first one at once. Failures are logged and retried at the next tick.
/// Runs on `tasks` until `stop` is cancelled.
pub fn spawn_drift_monitor(
    store: MetadataStore,
    interval: Duration,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
) {
    let interval = interval.max(MIN_INTERVAL);
    spawn_periodic("drift", interval, tasks, stop, move |now| {
        let store = store.clone();
        async move { evaluate_once(&store, interval, now).await }
    });
}

/// Runs `pass` every `interval` on `tasks`, the first one at once, until `stop` is cancelled:
/// the loop the registry's monitors share. The events a pass emits are logged as warnings
/// (incidents are what an operator reads logs for); a failed pass is logged and retried at the
/// next tick. A pass in progress completes (its judgments commit together); stopping waits for
/// the next tick.
pub(crate) fn spawn_periodic<F, Fut>(
    what: &'static str,
    interval: Duration,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
    mut pass: F,
) where
    F: FnMut(DateTime<Utc>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<Event>>> + Send,
{
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            match pass(Utc::now()).await {
                Ok(events) => {
                    for event in &events {
                        tracing::warn!(monitor = what, endpoint = %event.subject, event = %event.kind, data = %event.data, "incident changed");
                    }
                }
                Err(e) => {
                    tracing::warn!(monitor = what, error = %e, "monitor pass failed; retrying at the next interval");
                }
            }
        }
        tracing::info!(monitor = what, "monitor stopped");
    });
}

/// One version to judge in this pass.
struct Due {
    version: i64,
    role: TrafficRole,
    start: DateTime<Utc>,
    previous: Option<DriftStateRecord>,
}

/// One evaluation pass as of `now` with windows of `interval` (see the [module docs](self)):
/// judges every due stable and canary version of every endpoint with a drift policy, writes
/// the states that changed, and returns the events emitted. A failure on one endpoint is logged
/// and does not stop the others. Versions without a (readable) training profile are not judged.
/// States of versions the monitor no longer watches (left the policy, or the policy dropped
/// `drift`) are forgotten, without an event.
///
/// # Errors
/// [`Error::Database`] when the endpoints or states cannot be read, [`Error::BadRequest`] for an
/// interval too long to subtract from `now`.
pub async fn evaluate_once(
    store: &MetadataStore,
    interval: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let span = TimeDelta::from_std(interval)
        .map_err(|_| Error::BadRequest(format!("drift interval {interval:?} is too long")))?;
    let endpoints = store.endpoint_policies().await?;
    let mut states: BTreeMap<String, Vec<DriftStateRecord>> = BTreeMap::new();
    for state in store.drift_states(None).await? {
        states
            .entry(state.endpoint.clone())
            .or_default()
            .push(state);
    }
    let mut events = Vec::new();
    for (name, policy) in endpoints {
        let known = states.remove(&name).unwrap_or_default();
        match evaluate_endpoint(store, &name, &policy, known, span, now).await {
            Ok(emitted) => events.extend(emitted),
            Err(e) => {
                tracing::warn!(endpoint = %name, error = %e, "drift evaluation of the endpoint failed");
            }
        }
    }
    Ok(events)
}

async fn evaluate_endpoint(
    store: &MetadataStore,
    name: &str,
    policy: &EndpointPolicy,
    known: Vec<DriftStateRecord>,
    span: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let mut watched = Vec::new();
    if policy.drift.is_some() {
        watched.push((policy.stable, TrafficRole::Stable));
        if let Some(canary) = &policy.canary {
            watched.push((canary.version, TrafficRole::Canary));
        }
    }
    let stale: Vec<i64> = known
        .iter()
        .map(|s| s.version)
        .filter(|v| !watched.iter().any(|(w, _)| w == v))
        .collect();
    if !stale.is_empty() {
        store.forget_drift_states(name, &stale).await?;
    }
    let Some(drift) = &policy.drift else {
        return Ok(Vec::new());
    };

    let due_after = TimeDelta::milliseconds((span.num_milliseconds() as f64 * DUE_FRACTION) as i64);
    let mut due = Vec::new();
    for (version, role) in watched {
        let previous = known.iter().find(|s| s.version == version).cloned();
        let start = match previous.as_ref().and_then(|p| p.window_end) {
            Some(end) if now - end < due_after => continue,
            Some(end) => end.max(now - span),
            None => now - span,
        };
        due.push(Due {
            version,
            role,
            start,
            previous,
        });
    }
    let Some(mut earliest) = due.iter().map(|d| d.start).min() else {
        return Ok(Vec::new());
    };
    let by_count = drift.window_samples;
    if by_count.is_some() {
        // The registry prunes reports past its retention; this only bounds the query.
        earliest = now - TimeDelta::from_std(COUNT_LOOKBACK).unwrap_or(TimeDelta::MAX);
    }
    let versions: Vec<i64> = due.iter().map(|d| d.version).collect();
    let profiles = store.version_profiles(&policy.model, &versions).await?;
    if profiles.is_empty() {
        return Ok(Vec::new());
    }
    let reports = store.received_reports(name, earliest, now).await?;

    // Summing a window of reports and scoring thousands of features is CPU work.
    let windows: Vec<(i64, DateTime<Utc>)> = due.iter().map(|d| (d.version, d.start)).collect();
    let analyses = tokio::task::spawn_blocking(move || {
        windows
            .into_iter()
            .filter_map(|(version, start)| {
                let profile = profiles.get(&version)?;
                let (counters, start) = match by_count {
                    Some(rows) => newest_counters(&reports, version, rows),
                    None => (window_counters(&reports, version, start), Some(start)),
                };
                Some((version, (analyze_drift(profile, &counters), start)))
            })
            .collect::<BTreeMap<i64, (DriftAnalysis, Option<DateTime<Utc>>)>>()
    })
    .await
    .map_err(|e| Error::Internal(format!("drift scoring task failed: {e}")))?;

    let mut events = Vec::new();
    for d in due {
        let Some((analysis, start)) = analyses.get(&d.version) else {
            continue;
        };
        let observation = Observation {
            score: analysis.score(drift.metric),
            samples: analysis.samples,
        };
        let before = d.previous.as_ref().map(|p| p.state()).unwrap_or_default();
        let (after, verdict, transition) = step(before, &observation, drift);
        tracing::debug!(endpoint = %name, version = d.version, ?verdict, score = ?observation.score, samples = observation.samples, "drift window judged");
        if after == before && transition.is_none() {
            // Nothing to record: a healthy version stays without writes. (A breach always
            // changes `consecutive`, so every breach is recorded with its window.)
            continue;
        }
        let window = Window {
            endpoint: name,
            model: &policy.model,
            version: d.version,
            role: d.role,
            policy: drift,
            start: start.unwrap_or(now),
            end: now,
        };
        let event = transition.map(|t| match t {
            Transition::Detected => detected_event(&window, analysis),
            Transition::Recovered => recovered_event(
                &window,
                analysis,
                d.previous.as_ref().and_then(|p| p.incident_event),
            ),
        });
        let judgment = DriftJudgment {
            endpoint: name.to_string(),
            version: d.version,
            state: after,
            window_end: now,
            score: observation.score,
            samples: observation.samples,
            event,
        };
        events.extend(
            store
                .record_drift_judgment(d.previous.as_ref(), judgment)
                .await?,
        );
    }
    Ok(events)
}

/// The drift counters of `version` summed over the reports received at or after `start`.
fn window_counters(
    reports: &[ReceivedReport],
    version: i64,
    start: DateTime<Utc>,
) -> DriftCounters {
    let mut sum = DriftCounters::default();
    for received in reports.iter().filter(|r| r.received_at >= start) {
        if let Some(drift) = received
            .report
            .versions
            .get(&version)
            .and_then(|c| c.drift.as_ref())
        {
            sum.merge(drift);
        }
    }
    sum
}

/// The drift counters of `version` summed over the newest reports, newest first, until they hold
/// at least `rows` rows (or the reports run out), and when the oldest one used was received.
/// Whole reports are taken, so the window may hold up to one report's rows more.
fn newest_counters(
    reports: &[ReceivedReport],
    version: i64,
    rows: u64,
) -> (DriftCounters, Option<DateTime<Utc>>) {
    let mut sum = DriftCounters::default();
    let mut oldest = None;
    let mut newest_first: Vec<&ReceivedReport> = reports.iter().collect();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.received_at));
    for received in newest_first {
        if sum.samples >= rows {
            break;
        }
        if let Some(drift) = received
            .report
            .versions
            .get(&version)
            .and_then(|c| c.drift.as_ref())
            .filter(|d| d.samples > 0)
        {
            sum.merge(drift);
            oldest = Some(received.received_at);
        }
    }
    (sum, oldest)
}

/// What an event says about the judged window.
struct Window<'a> {
    endpoint: &'a str,
    model: &'a str,
    version: i64,
    role: TrafficRole,
    policy: &'a DriftPolicy,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Window<'_> {
    fn seconds(&self) -> f64 {
        (self.end - self.start).num_milliseconds() as f64 / 1000.0
    }
}

fn metric_name(metric: DriftMetric) -> &'static str {
    match metric {
        DriftMetric::Psi => "psi",
        DriftMetric::Kl => "kl",
        DriftMetric::Js => "js",
    }
}

/// The `drift.detected` event: the version, the policy, the window, and the worst features
/// (at most [`EVENT_FEATURES`], worst first) by the policy's metric.
fn detected_event(window: &Window<'_>, analysis: &DriftAnalysis) -> EventData {
    let metric = window.policy.metric;
    let features = analysis
        .ranked(metric)
        .into_iter()
        .take(EVENT_FEATURES)
        .map(|(name, score)| FeatureScore {
            name: name.to_string(),
            score,
        })
        .collect();
    EventData::DriftDetected(Box::new(DriftDetected {
        endpoint: window.endpoint.to_string(),
        model: window.model.to_string(),
        version: window.version,
        role: window.role.as_str().to_string(),
        metric: metric_name(metric).to_string(),
        threshold: window.policy.threshold,
        consecutive_windows: window.policy.consecutive_windows,
        score: analysis.score(metric),
        window_seconds: window.seconds(),
        window_end: crate::store::timestamp(window.end),
        samples: analysis.samples,
        features,
    }))
}

/// The `drift.recovered` event, pointing at the `drift.detected` event it closes.
fn recovered_event(
    window: &Window<'_>,
    analysis: &DriftAnalysis,
    detected: Option<i64>,
) -> EventData {
    let metric = window.policy.metric;
    EventData::DriftRecovered(Box::new(DriftRecovered {
        endpoint: window.endpoint.to_string(),
        model: window.model.to_string(),
        version: window.version,
        role: window.role.as_str().to_string(),
        metric: metric_name(metric).to_string(),
        threshold: window.policy.threshold,
        score: analysis.score(metric),
        window_seconds: window.seconds(),
        window_end: crate::store::timestamp(window.end),
        samples: analysis.samples,
        detected_event: detected,
    }))
}

/// Profiles by version, for the versions whose stored profile is a valid one of the current
/// format (profiles stored before uploads were validated may not be: those versions are not
/// scored).
pub(crate) fn parse_profiles(rows: Vec<(i64, String)>) -> BTreeMap<i64, Profile> {
    rows.into_iter()
        .filter_map(|(version, text)| {
            let parsed = serde_json::from_str::<Profile>(&text)
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate().map(|()| p).map_err(|e| e.to_string()));
            match parsed {
                Ok(profile) => Some((version, profile)),
                Err(e) => {
                    tracing::debug!(version, error = %e, "stored profile is not a valid current one; drift is not scored");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn policy(threshold: f64, min_samples: u64, consecutive_windows: u32) -> DriftPolicy {
        DriftPolicy {
            metric: DriftMetric::Psi,
            threshold,
            min_samples,
            consecutive_windows,
            window_samples: None,
        }
    }

    fn seen(score: f64, samples: u64) -> Observation {
        Observation {
            score: Some(score),
            samples,
        }
    }

    fn state(consecutive: u32, incident: bool) -> DriftState {
        DriftState {
            consecutive,
            incident,
        }
    }

    /// Runs `scores` (with 1,000 samples each) through the machine from a fresh state and
    /// returns the transitions, one per window.
    fn run(p: &DriftPolicy, scores: &[f64]) -> Vec<Option<Transition>> {
        let mut s = DriftState::default();
        scores
            .iter()
            .map(|score| {
                let (next, _, t) = step(s, &seen(*score, 1000), p);
                s = next;
                t
            })
            .collect()
    }

    use Transition::{Detected as D, Recovered as R};

    #[test]
    fn the_state_machine_follows_its_table() {
        let p = policy(0.2, 100, 3);
        #[rustfmt::skip]
        let table: Vec<(DriftState, Observation, DriftState, Verdict, Option<Transition>)> = vec![
            // Below min_samples: not judged, whatever the score and state.
            (state(0, false), seen(9.0, 99), state(0, false), Verdict::NotJudged, None),
            (state(2, false), seen(9.0, 0), state(2, false), Verdict::NotJudged, None),
            (state(5, true), seen(0.0, 99), state(5, true), Verdict::NotJudged, None),
            // No score at all: not judged.
            (state(1, false), Observation { score: None, samples: 500 }, state(1, false), Verdict::NotJudged, None),
            (state(1, false), seen(f64::NAN, 500), state(1, false), Verdict::NotJudged, None),
            // Breaches count up; the third in a row opens the incident.
            (state(0, false), seen(0.3, 100), state(1, false), Verdict::Breach, None),
            (state(1, false), seen(0.3, 100), state(2, false), Verdict::Breach, None),
            (state(2, false), seen(0.3, 100), state(3, true), Verdict::Breach, Some(D)),
            // Inside an incident, more breaches emit nothing.
            (state(3, true), seen(5.0, 100), state(4, true), Verdict::Breach, None),
            // At the threshold is healthy: the count resets, an incident closes.
            (state(2, false), seen(0.2, 100), state(0, false), Verdict::Healthy, None),
            (state(4, true), seen(0.2, 100), state(0, false), Verdict::Healthy, Some(R)),
            (state(0, false), seen(0.0, 100), state(0, false), Verdict::Healthy, None),
            // A count saturates instead of wrapping.
            (state(u32::MAX, true), seen(1.0, 100), state(u32::MAX, true), Verdict::Breach, None),
        ];
        for (before, observation, after, verdict, transition) in table {
            assert_eq!(
                step(before, &observation, &p),
                (after, verdict, transition),
                "{before:?} + {observation:?}"
            );
        }
    }

    #[test]
    fn a_single_breach_opens_an_incident_when_one_window_is_enough() {
        assert_eq!(run(&policy(0.2, 1, 1), &[0.5]), [Some(D)]);
        assert_eq!(
            run(&policy(0.2, 1, 1), &[0.1, 0.5, 0.5]),
            [None, Some(D), None]
        );
    }

    #[test]
    fn with_three_windows_a_single_breach_does_nothing() {
        let p = policy(0.2, 1, 3);
        assert_eq!(run(&p, &[0.5, 0.1, 0.5, 0.5, 0.1]), [None; 5]);
        assert_eq!(run(&p, &[0.5, 0.5, 0.5, 0.5]), [None, None, Some(D), None]);
    }

    #[test]
    fn recovery_re_arms_detection_for_a_new_incident() {
        let p = policy(0.2, 1, 1);
        assert_eq!(
            run(&p, &[0.5, 0.5, 0.1, 0.1, 0.5]),
            [Some(D), None, Some(R), None, Some(D)]
        );
    }

    #[test]
    fn flapping_scores_raise_one_incident_per_breach_run_long_enough() {
        // One window is enough: every flap is a new incident, each closed once.
        let p = policy(0.2, 1, 1);
        assert_eq!(
            run(&p, &[0.5, 0.1, 0.5, 0.1]),
            [Some(D), Some(R), Some(D), Some(R)]
        );
        // Two windows needed: flapping never gets there.
        let p = policy(0.2, 1, 2);
        assert_eq!(run(&p, &[0.5, 0.1, 0.5, 0.1, 0.5, 0.1]), [None; 6]);
        // Windows with too few samples neither count nor reset.
        let mut s = DriftState::default();
        for (score, samples, want) in [
            (0.5, 1000, None),
            (0.0, 0, None),
            (0.5, 1000, Some(D)),
            (0.0, 0, None),
            (0.0, 1000, Some(R)),
        ] {
            let (next, _, t) = step(s, &seen(score, samples), &p);
            assert_eq!(t, want, "{score} × {samples}");
            s = next;
        }
    }

    #[test]
    fn stored_profiles_that_are_not_valid_current_ones_are_skipped() {
        let valid = r#"{"format":1,"inputs":[{"input":"x","features":[{"name":"a","column":0,
            "edges":[0.0,1.0],"counts":[0,2,0],"summary":{"count":2,"mean":0.5,"std":0.5,"min":0.0,"max":1.0}}]}]}"#;
        let legacy = r#"{"features":[{"name":"f0","edges":[0.0,1.0],"counts":[1,2,3]}]}"#;
        let inconsistent = valid.replace("[0,2,0]", "[0,2]");
        let parsed = parse_profiles(vec![
            (1, valid.to_string()),
            (2, legacy.to_string()),
            (3, inconsistent),
        ]);
        assert_eq!(parsed.keys().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_detected_event_names_the_worst_features_first_and_at_most_ten() {
        use ferry_api::drift::compare::FeatureDrift;
        use ferry_api::drift::score::Scores;
        let mut analysis = DriftAnalysis {
            samples: 500,
            ..DriftAnalysis::default()
        };
        for i in 0..12 {
            analysis.features.insert(
                format!("f{i:02}"),
                FeatureDrift {
                    input: "x".into(),
                    samples: 500,
                    scores: Scores {
                        psi: f64::from(i) / 10.0,
                        kl: 0.0,
                        js: 0.0,
                    },
                },
            );
        }
        analysis.scores = Some(Scores {
            psi: 1.1,
            kl: 0.0,
            js: 0.0,
        });
        let p = policy(0.2, 100, 2);
        let now = Utc::now();
        let window = Window {
            endpoint: "e",
            model: "m",
            version: 3,
            role: TrafficRole::Canary,
            policy: &p,
            start: now - TimeDelta::seconds(60),
            end: now,
        };
        let event = detected_event(&window, &analysis).to_json();
        assert_eq!(event["metric"], "psi");
        assert_eq!(event["version"], 3);
        assert_eq!(event["role"], "canary");
        assert_eq!(event["score"], 1.1);
        assert_eq!(event["window_seconds"], 60.0);
        assert_eq!(event["samples"], 500);
        let features = event["features"].as_array().unwrap();
        assert_eq!(features.len(), 10);
        assert_eq!(features[0], json!({"name": "f11", "score": 1.1}));
        assert_eq!(features[9]["name"], "f02");
    }
}
