//! The analysis over time: a window's reports cut into equal steps, each step summed exactly
//! like the analysis ([`summarize_reports`]). What the web UI's charts draw, and what
//! `GET /api/v1/endpoints/{name}/analysis/series` answers.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::counters::VersionAnalysis;
use super::summary::{ReceivedReport, summarize_reports};
use crate::drift::Profile;
use crate::error::{Result, ValidationError};
use crate::names;
use crate::records::{DriftMetric, EndpointPolicy};

/// The most points a series has (`window / step`).
pub const MAX_POINTS: u64 = 360;

/// The points a series has when the request names no step.
pub const DEFAULT_POINTS: u64 = 60;

/// An endpoint's analysis, step by step over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSeries {
    /// The endpoint.
    pub endpoint: String,
    /// The window, in seconds.
    pub window_seconds: f64,
    /// Each point's step, in seconds.
    pub step_seconds: f64,
    /// Oldest first; a point for every step, empty steps included.
    pub points: Vec<SeriesPoint>,
}

/// One step of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The end of the step (RFC 3339): reports received in `(at - step, at]` are in it.
    pub at: String,
    /// Every version the step's reports or the current policy name, as in the analysis.
    pub versions: Vec<VersionPoint>,
}

/// A version's numbers in one step: the analysis's headline figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionPoint {
    /// The version.
    pub version: i64,
    /// Its role in the endpoint's current policy.
    pub role: String,
    /// Requests answered as primary.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `(requests + errors) / step`.
    pub requests_per_second: f64,
    /// `errors / (requests + errors)`.
    pub error_rate: Option<f64>,
    /// Median latency, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub latency_p99_ms: Option<f64>,
    /// Share of compared requests whose classes agreed with the primary's (a shadow's).
    pub shadow_agreement: Option<f64>,
    /// Mean absolute difference from the primary's outputs (a shadow's).
    pub shadow_mean_abs_diff: Option<f64>,
    /// Requests compared as a shadow.
    pub shadow_compared: u64,
    /// Mean reward.
    pub reward_mean: Option<f64>,
    /// Rewards behind it.
    pub reward_count: u64,
    /// Share of labelled predictions that were right.
    pub accuracy: Option<f64>,
    /// Labels behind it.
    pub label_count: u64,
    /// Drift of the step's inputs against the training profile: the worst feature's PSI.
    pub drift_psi: Option<f64>,
    /// The fewest live values behind any profiled feature in the step.
    pub drift_samples: u64,
}

impl VersionPoint {
    fn of(v: &VersionAnalysis, step_seconds: f64) -> Self {
        VersionPoint {
            version: v.version,
            role: v.role.clone(),
            requests: v.requests,
            errors: v.errors,
            requests_per_second: (v.requests + v.errors) as f64 / step_seconds,
            error_rate: v.error_rate,
            latency_p50_ms: v.latency_p50_ms,
            latency_p99_ms: v.latency_p99_ms,
            shadow_agreement: v.shadow_agreement,
            shadow_mean_abs_diff: v.shadow_mean_abs_diff,
            shadow_compared: v.shadow_compared,
            reward_mean: v.reward_mean,
            reward_count: v.reward_count,
            accuracy: v.accuracy,
            label_count: v.label_count,
            drift_psi: v.drift.as_ref().and_then(|d| d.score(DriftMetric::Psi)),
            drift_samples: v.drift.as_ref().map_or(0, |d| d.samples),
        }
    }
}

/// The step of a series over `window`: `text` (`15s`, `1m`) or, without one, the window cut in
/// [`DEFAULT_POINTS`] (at least a second).
///
/// # Errors
/// [`ValidationError::BadRequest`] naming the step: unparsable, under a second, longer than the
/// window, or making more than [`MAX_POINTS`] points.
pub fn parse_step(text: Option<&str>, window: Duration) -> Result<Duration> {
    let Some(text) = text else {
        return Ok((window / DEFAULT_POINTS as u32).max(Duration::from_secs(1)));
    };
    let step = crate::units::parse_duration(text).map_err(|_| {
        ValidationError::BadRequest(format!(
            "invalid step {}: use seconds (15) or a number with a unit (15s, 1m)",
            names::printable(text)
        ))
    })?;
    if step < Duration::from_secs(1) || step > window {
        return Err(ValidationError::BadRequest(format!(
            "step {} must be between 1 s and the window ({} s)",
            names::printable(text),
            window.as_secs()
        )));
    }
    let points = window.as_secs_f64() / step.as_secs_f64();
    if points.ceil() as u64 > MAX_POINTS {
        return Err(ValidationError::BadRequest(format!(
            "step {} makes {} points over {} s; at most {MAX_POINTS}",
            names::printable(text),
            points.ceil(),
            window.as_secs()
        )));
    }
    Ok(step)
}

/// Cuts `window` before `end` into steps of `step` (the oldest may start before the window so
/// that every step has the same length) and sums each step's `reports` like the analysis.
/// Reports outside the steps are ignored.
pub fn analysis_series<P: Borrow<Profile>>(
    endpoint: &str,
    policy: &EndpointPolicy,
    reports: &[ReceivedReport],
    profiles: &BTreeMap<i64, P>,
    end: DateTime<Utc>,
    window: Duration,
    step: Duration,
) -> AnalysisSeries {
    let step_seconds = step.as_secs_f64().max(1e-3);
    let count = (window.as_secs_f64() / step_seconds).ceil().max(1.0) as usize;
    let step_delta = TimeDelta::from_std(step).unwrap_or(TimeDelta::seconds(1));
    let ends: Vec<DateTime<Utc>> = (0..count)
        .map(|i| end - step_delta * i32::try_from(count - 1 - i).unwrap_or(i32::MAX))
        .collect();
    let mut buckets: Vec<Vec<ReceivedReport>> = vec![Vec::new(); count];
    for received in reports {
        // The first step whose end is at or after the report, if the report is after the
        // oldest step's start.
        let index = ends.partition_point(|at| *at < received.received_at);
        if index < count && received.received_at > ends[index] - step_delta {
            buckets[index].push(received.clone());
        }
    }
    let points = ends
        .iter()
        .zip(&buckets)
        .map(|(at, bucket)| {
            let analysis = summarize_reports(endpoint, step_seconds, policy, bucket, profiles);
            SeriesPoint {
                at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                versions: analysis
                    .versions
                    .iter()
                    .map(|v| VersionPoint::of(v, step_seconds))
                    .collect(),
            }
        })
        .collect();
    AnalysisSeries {
        endpoint: endpoint.to_string(),
        window_seconds: window.as_secs_f64(),
        step_seconds,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Report, VersionCounters};

    fn policy() -> EndpointPolicy {
        serde_json::from_value(serde_json::json!({"model": "m", "stable": 1})).unwrap()
    }

    fn report(at: DateTime<Utc>, version: i64, requests: u64) -> ReceivedReport {
        let counters = VersionCounters {
            requests,
            ..VersionCounters::default()
        };
        ReceivedReport {
            received_at: at,
            report: Report {
                id: None,
                replica: "r".into(),
                interval_seconds: 5.0,
                revision: None,
                versions: BTreeMap::from([(version, counters)]),
                load_error: None,
            },
        }
    }

    #[test]
    fn each_report_counts_in_the_one_step_it_arrived_in() {
        let end = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = |n: i64| end - TimeDelta::seconds(n);
        let reports = vec![
            report(s(0), 1, 1),   // the last step's end: in it
            report(s(5), 1, 2),   // the last step
            report(s(10), 1, 4),  // the second step's end
            report(s(29), 1, 8),  // the first step
            report(s(30), 1, 16), // the first step's start: outside
            report(s(3), 2, 32),  // a version the policy no longer names
        ];
        let profiles = BTreeMap::<i64, Profile>::new();
        let series = analysis_series(
            "e",
            &policy(),
            &reports,
            &profiles,
            end,
            Duration::from_secs(30),
            Duration::from_secs(10),
        );
        assert_eq!(series.step_seconds, 10.0);
        let requests = |p: &SeriesPoint, v: i64| {
            p.versions
                .iter()
                .find(|x| x.version == v)
                .map(|x| x.requests)
        };
        let ats: Vec<&str> = series.points.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            ats,
            [
                "2026-12-06T11:59:40.000Z",
                "2026-12-06T11:59:50.000Z",
                "2026-12-06T12:00:00.000Z"
            ]
        );
        let stable: Vec<_> = series.points.iter().map(|p| requests(p, 1)).collect();
        assert_eq!(stable, [Some(8), Some(4), Some(3)]);
        assert_eq!(requests(&series.points[2], 2), Some(32));
        assert_eq!(series.points[2].versions[1].role, "retired");
        assert_eq!(requests(&series.points[0], 2), None);
        assert_eq!(series.points[2].versions[0].requests_per_second, 0.3);
    }

    #[test]
    fn a_step_is_checked_against_the_window() {
        let hour = Duration::from_secs(3600);
        assert_eq!(parse_step(None, hour).unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_step(None, Duration::from_secs(10)).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            parse_step(Some("15s"), hour).unwrap(),
            Duration::from_secs(15)
        );
        for (bad, names) in [
            ("0s", "between 1 s"),
            ("2h", "between 1 s and the window (3600 s)"),
            ("5s", "720 points"),
            ("soon", "invalid step `soon`"),
        ] {
            let e = parse_step(Some(bad), hour).unwrap_err().to_string();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }
}
