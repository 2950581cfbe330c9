//! The judgments behind a model's life after release, without I/O: when a stable version is too
//! old (a *perishable* model: `model.stale` / `model.refreshed`), and when its answers got worse
//! while its inputs may look the same (*performance decay*, concept drift:
//! `performance.degraded` / `performance.recovered`). The registry's lifecycle monitor reads the
//! versions and reports, calls these, and writes the incidents with their events.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::lineage::Lineage;
use crate::records::{DecayMetric, DecayPolicy};
use crate::traffic::{FeedbackCounters, ReceivedReport};

/// What a version's age is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeSource {
    /// The newest `as_of` of its training data (lineage).
    Data,
    /// Its creation in the registry.
    Created,
}

impl AgeSource {
    /// The spelling in events and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            AgeSource::Data => "data",
            AgeSource::Created => "created",
        }
    }
}

/// When a version's age starts: the newest training dataset's `as_of` when the lineage gives
/// one (the model knows the world up to then), else the version's creation.
pub fn age_origin(created_at: DateTime<Utc>, lineage: &Lineage) -> (DateTime<Utc>, AgeSource) {
    match lineage.data.iter().filter_map(|d| d.as_of).max() {
        Some(as_of) => (as_of, AgeSource::Data),
        None => (created_at, AgeSource::Created),
    }
}

/// How old a version whose age starts at `origin` is at `now` (zero for an origin in the
/// future: a clock ahead of the registry's).
pub fn age(origin: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - origin).to_std().unwrap_or(Duration::ZERO)
}

/// Whether a version of that age is stale under `max_age`: strictly older.
pub fn is_stale(age: Duration, max_age: Duration) -> bool {
    age > max_age
}

/// Where a decay reference came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceSource {
    /// The policy's `reference`.
    Policy,
    /// The version's recorded lineage metric of the same name (`--metric accuracy=0.93`).
    Lineage,
    /// The version's first full window in production, remembered by the monitor.
    FirstWindow,
}

impl ReferenceSource {
    /// The spelling in events and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferenceSource::Policy => "policy",
            ReferenceSource::Lineage => "lineage",
            ReferenceSource::FirstWindow => "first_window",
        }
    }

    /// Reads [`ReferenceSource::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ReferenceSource::Policy,
            ReferenceSource::Lineage,
            ReferenceSource::FirstWindow,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The value a version's window is compared with, by precedence: the policy's `reference`, the
/// version's lineage metric named like the policy's metric, the first full window remembered
/// before. `None`: no reference yet (the first full window will be it).
pub fn decay_reference(
    policy: &DecayPolicy,
    lineage_metric: Option<f64>,
    first_window: Option<f64>,
) -> Option<(f64, ReferenceSource)> {
    policy
        .reference
        .map(|r| (r, ReferenceSource::Policy))
        .or_else(|| {
            lineage_metric
                .filter(|m| m.is_finite())
                .map(|m| (m, ReferenceSource::Lineage))
        })
        .or_else(|| {
            first_window
                .filter(|m| m.is_finite())
                .map(|m| (m, ReferenceSource::FirstWindow))
        })
}

/// A rolling window of a version's feedback: the newest reports summed until they hold the
/// policy's `window` samples of its metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackWindow {
    /// The feedback counters summed.
    pub counters: FeedbackCounters,
    /// When the oldest report used arrived.
    pub start: Option<DateTime<Utc>>,
}

impl FeedbackWindow {
    /// Labels (accuracy) or rewards (reward) in the window.
    pub fn samples(&self, metric: DecayMetric) -> u64 {
        match metric {
            DecayMetric::Accuracy => self.counters.labels,
            DecayMetric::Reward => self.counters.rewards,
        }
    }

    /// Accuracy or mean reward; `None` without samples.
    pub fn value(&self, metric: DecayMetric) -> Option<f64> {
        let c = &self.counters;
        match metric {
            DecayMetric::Accuracy if c.labels > 0 => Some(c.correct as f64 / c.labels as f64),
            DecayMetric::Reward if c.rewards > 0 => Some(c.reward_sum / c.rewards as f64),
            _ => None,
        }
    }
}

/// The newest feedback of `version` in `reports` (any order): whole reports, newest first, until
/// they hold at least `window` samples of `metric` or run out. Reports without such feedback for
/// the version are skipped and do not move the window's start.
pub fn newest_feedback(
    reports: &[ReceivedReport],
    version: i64,
    metric: DecayMetric,
    window: u64,
) -> FeedbackWindow {
    let mut newest_first: Vec<&ReceivedReport> = reports.iter().collect();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.received_at));
    let mut sum = FeedbackWindow::default();
    for received in newest_first {
        if sum.samples(metric) >= window {
            break;
        }
        let Some(counters) = received.report.versions.get(&version) else {
            continue;
        };
        let one = FeedbackWindow {
            counters: counters.feedback.clone(),
            start: None,
        };
        if one.samples(metric) == 0 {
            continue;
        }
        sum.counters.merge(&counters.feedback);
        sum.start = Some(received.received_at);
    }
    sum
}

/// How a window was judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DecayVerdict {
    /// Fewer samples than the window asks for: no verdict.
    TooFewSamples {
        /// Samples found.
        have: u64,
        /// The policy's window.
        need: u64,
    },
    /// A full window and no reference yet: this window's value becomes the reference.
    Reference(f64),
    /// Within `max_drop` of the reference.
    Healthy(f64),
    /// More than `max_drop` below the reference.
    Degraded(f64),
}

/// Judges a full window against the reference: degraded when `value < reference - max_drop`.
pub fn judge_decay(
    policy: &DecayPolicy,
    reference: Option<f64>,
    window: &FeedbackWindow,
) -> DecayVerdict {
    let have = window.samples(policy.metric);
    let value = match window.value(policy.metric) {
        Some(v) if have >= policy.window && v.is_finite() => v,
        _ => {
            return DecayVerdict::TooFewSamples {
                have,
                need: policy.window,
            };
        }
    };
    match reference {
        None => DecayVerdict::Reference(value),
        Some(reference) if value < reference - policy.max_drop => DecayVerdict::Degraded(value),
        Some(_) => DecayVerdict::Healthy(value),
    }
}

/// An incident of one kind, opening or closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Emit the opening event (`model.stale`, `performance.degraded`).
    Opens,
    /// Emit the closing event (`model.refreshed`, `performance.recovered`).
    Closes,
}

/// Once per incident: a breach outside an incident opens one, a non-breach inside one closes it,
/// no verdict (`None`) changes nothing.
pub fn incident_step(open: bool, breached: Option<bool>) -> Option<Transition> {
    match (open, breached) {
        (false, Some(true)) => Some(Transition::Opens),
        (true, Some(false)) => Some(Transition::Closes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::lineage::DataRef;
    use crate::traffic::{Report, VersionCounters};
    use chrono::TimeDelta;

    fn accuracy(window: u64, max_drop: f64) -> DecayPolicy {
        DecayPolicy {
            metric: DecayMetric::Accuracy,
            max_drop,
            window,
            reference: None,
        }
    }

    fn feedback(labels: u64, correct: u64) -> FeedbackWindow {
        FeedbackWindow {
            counters: FeedbackCounters {
                labels,
                correct,
                ..FeedbackCounters::default()
            },
            start: None,
        }
    }

    #[test]
    fn age_counts_from_the_newest_data_snapshot_else_from_creation() {
        let created = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let mut lineage = Lineage::default();
        assert_eq!(age_origin(created, &lineage), (created, AgeSource::Created));
        let data = |as_of: Option<&str>| DataRef {
            uri: "s3://d".into(),
            sha256: "0".repeat(64),
            as_of: as_of.map(|t| DateTime::parse_from_rfc3339(t).unwrap().to_utc()),
        };
        lineage.data = vec![
            data(Some("2026-10-01T00:00:00Z")),
            data(None),
            data(Some("2026-11-01T00:00:00Z")),
        ];
        let (origin, source) = age_origin(created, &lineage);
        assert_eq!(source, AgeSource::Data);
        assert_eq!(origin.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        let now = created + TimeDelta::days(1);
        assert_eq!(age(origin, now), Duration::from_secs(31 * 86_400));
        assert_eq!(age(now, created), Duration::ZERO);
        assert!(is_stale(Duration::from_secs(31), Duration::from_secs(30)));
        assert!(!is_stale(Duration::from_secs(30), Duration::from_secs(30)));
    }

    #[test]
    fn the_reference_is_the_policy_then_the_lineage_then_the_first_window() {
        let mut p = accuracy(100, 0.05);
        assert_eq!(decay_reference(&p, None, None), None);
        assert_eq!(
            decay_reference(&p, None, Some(0.9)),
            Some((0.9, ReferenceSource::FirstWindow))
        );
        assert_eq!(
            decay_reference(&p, Some(0.93), Some(0.9)),
            Some((0.93, ReferenceSource::Lineage))
        );
        p.reference = Some(0.8);
        assert_eq!(
            decay_reference(&p, Some(0.93), Some(0.9)),
            Some((0.8, ReferenceSource::Policy))
        );
        for r in [
            ReferenceSource::Policy,
            ReferenceSource::Lineage,
            ReferenceSource::FirstWindow,
        ] {
            assert_eq!(ReferenceSource::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn a_window_is_judged_only_when_full_and_degrades_past_the_drop() {
        let p = accuracy(100, 0.05);
        assert_eq!(
            judge_decay(&p, Some(0.9), &feedback(99, 10)),
            DecayVerdict::TooFewSamples {
                have: 99,
                need: 100
            }
        );
        assert_eq!(
            judge_decay(&p, None, &feedback(100, 90)),
            DecayVerdict::Reference(0.9)
        );
        assert_eq!(
            judge_decay(&p, Some(0.9), &feedback(100, 86)),
            DecayVerdict::Healthy(0.86)
        );
        assert_eq!(
            judge_decay(&p, Some(0.9), &feedback(200, 168)),
            DecayVerdict::Degraded(0.84)
        );
        let reward = DecayPolicy {
            metric: DecayMetric::Reward,
            max_drop: 2.0,
            window: 2,
            reference: None,
        };
        let w = FeedbackWindow {
            counters: FeedbackCounters {
                rewards: 2,
                reward_sum: 15.0,
                ..FeedbackCounters::default()
            },
            start: None,
        };
        assert_eq!(
            judge_decay(&reward, Some(10.0), &w),
            DecayVerdict::Degraded(7.5)
        );
        assert_eq!(
            judge_decay(&reward, Some(9.0), &w),
            DecayVerdict::Healthy(7.5)
        );
    }

    #[test]
    fn the_window_takes_the_newest_reports_with_feedback_until_full() {
        let base = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let report = |k: i64, labels: u64, correct: u64| ReceivedReport {
            received_at: base + TimeDelta::seconds(k),
            report: Report {
                id: None,
                replica: "r".into(),
                interval_seconds: 1.0,
                revision: None,
                versions: [(
                    7,
                    VersionCounters {
                        feedback: FeedbackCounters {
                            labels,
                            correct,
                            ..FeedbackCounters::default()
                        },
                        ..VersionCounters::default()
                    },
                )]
                .into(),
                load_error: None,
            },
        };
        // Given out of order; the newest are 4 (all wrong) and 3 (none: skipped), then 2.
        let reports = vec![
            report(1, 50, 50),
            report(4, 60, 0),
            report(2, 50, 50),
            report(3, 0, 0),
        ];
        let w = newest_feedback(&reports, 7, DecayMetric::Accuracy, 100);
        assert_eq!((w.counters.labels, w.counters.correct), (110, 50));
        assert_eq!(w.start, Some(base + TimeDelta::seconds(2)));
        // Another version has nothing.
        assert_eq!(
            newest_feedback(&reports, 8, DecayMetric::Accuracy, 100),
            FeedbackWindow::default()
        );
        // Rewards are not labels.
        assert_eq!(
            newest_feedback(&reports, 7, DecayMetric::Reward, 1).samples(DecayMetric::Reward),
            0
        );
    }

    #[test]
    fn an_incident_opens_and_closes_once() {
        use Transition::{Closes, Opens};
        let table = [
            (false, None, None),
            (false, Some(false), None),
            (false, Some(true), Some(Opens)),
            (true, Some(true), None),
            (true, None, None),
            (true, Some(false), Some(Closes)),
        ];
        for (open, breached, want) in table {
            assert_eq!(incident_step(open, breached), want, "{open} {breached:?}");
        }
    }
}
