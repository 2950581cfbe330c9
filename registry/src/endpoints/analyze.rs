//! Summing the reports of every replica inside a window into an endpoint's analysis.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::policy::referenced_versions;
use crate::analysis::{EndpointAnalysis, Report, VersionAnalysis, VersionCounters};
use crate::drift::Profile;
use crate::records::EndpointPolicy;

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

/// A stored report with when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedReport {
    /// When the registry received it.
    pub received_at: DateTime<Utc>,
    /// The report.
    pub report: Report,
}

/// Sums `reports` (all inside the window; order does not matter except for which load error is
/// the newest) per version, and labels each version with its role in `policy`: stable, canary,
/// shadows in policy order, then versions no longer in the policy (`retired`) by number.
/// Versions of the policy nobody reported on still appear, with zero counts.
pub fn analyze(
    endpoint: &str,
    window_seconds: f64,
    policy: &EndpointPolicy,
    reports: &[ReceivedReport],
) -> EndpointAnalysis {
    analyze_with_profiles(endpoint, window_seconds, policy, reports, &BTreeMap::new())
}

/// Like [`analyze`], and scores the drift of every version of the policy that has a training
/// profile in `profiles` (by version number) from its summed live histograms. Retired versions
/// are not scored: their numbers may belong to the model the endpoint served before.
pub fn analyze_with_profiles(
    endpoint: &str,
    window_seconds: f64,
    policy: &EndpointPolicy,
    reports: &[ReceivedReport],
    profiles: &BTreeMap<i64, Profile>,
) -> EndpointAnalysis {
    let mut replicas = BTreeSet::new();
    let mut sums: BTreeMap<i64, VersionCounters> = BTreeMap::new();
    let mut newest_error: Option<(DateTime<Utc>, &str)> = None;
    for received in reports {
        let report = &received.report;
        replicas.insert(report.replica.clone());
        for (version, counters) in &report.versions {
            sums.entry(*version).or_default().merge(counters);
        }
        if let Some(error) = report.load_error.as_deref().filter(|e| !e.is_empty())
            && newest_error.is_none_or(|(at, _)| received.received_at >= at)
        {
            newest_error = Some((received.received_at, error));
        }
    }
    let mut versions = Vec::with_capacity(sums.len() + 2);
    for used in referenced_versions(policy) {
        let counters = sums.remove(&used.version).unwrap_or_default();
        versions.push(VersionAnalysis::from_counters_with_profile(
            used.version,
            used.role.as_str(),
            &counters,
            profiles.get(&used.version),
        ));
    }
    for (version, counters) in &sums {
        versions.push(VersionAnalysis::from_counters(
            *version,
            TrafficRole::Retired.as_str(),
            counters,
        ));
    }
    EndpointAnalysis {
        endpoint: endpoint.to_string(),
        window_seconds,
        replicas: replicas.into_iter().collect(),
        versions,
        load_error: newest_error.map(|(_, e)| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CanaryPolicy, ShadowPolicy};

    fn policy() -> EndpointPolicy {
        EndpointPolicy {
            model: "m".into(),
            stable: 5,
            canary: Some(CanaryPolicy {
                version: 7,
                weight: 0.1,
            }),
            shadows: vec![
                ShadowPolicy {
                    version: 9,
                    sample_rate: 1.0,
                },
                ShadowPolicy {
                    version: 2,
                    sample_rate: 1.0,
                },
            ],
            sticky_header: None,
            drift: None,
        }
    }

    fn report(
        replica: &str,
        seconds: i64,
        versions: &[(i64, u64)],
        error: Option<&str>,
    ) -> ReceivedReport {
        ReceivedReport {
            received_at: DateTime::from_timestamp(seconds, 0).unwrap(),
            report: Report {
                replica: replica.into(),
                interval_seconds: 5.0,
                revision: None,
                versions: versions
                    .iter()
                    .map(|(v, requests)| {
                        (
                            *v,
                            VersionCounters {
                                requests: *requests,
                                ..VersionCounters::default()
                            },
                        )
                    })
                    .collect(),
                load_error: error.map(String::from),
            },
        }
    }

    #[test]
    fn versions_come_stable_canary_shadows_then_retired_and_unreported_ones_show_zero() {
        let reports = [
            report("b", 10, &[(5, 10), (3, 1), (1, 2)], None),
            report("a", 11, &[(5, 20), (7, 4)], None),
        ];
        let analysis = analyze("e", 300.0, &policy(), &reports);
        let got: Vec<(i64, &str, u64)> = analysis
            .versions
            .iter()
            .map(|v| (v.version, v.role.as_str(), v.requests))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, "stable", 30),
                (7, "canary", 4),
                (9, "shadow", 0),
                (2, "shadow", 0),
                (1, "retired", 2),
                (3, "retired", 1),
            ]
        );
        assert_eq!(analysis.replicas, vec!["a", "b"]);
        assert_eq!(analysis.window_seconds, 300.0);
        assert_eq!(analysis.versions[2].error_rate, None);
    }

    #[test]
    fn the_load_error_is_the_newest_one_whatever_the_order_of_reports() {
        let reports = [
            report("a", 30, &[], Some("new")),
            report("b", 10, &[], Some("old")),
            report("b", 40, &[], None),
        ];
        assert_eq!(
            analyze("e", 60.0, &policy(), &reports)
                .load_error
                .as_deref(),
            Some("new")
        );
        assert_eq!(
            analyze("e", 60.0, &policy(), &reports[2..]).load_error,
            None
        );
    }

    #[test]
    fn no_reports_is_an_analysis_of_zeros_for_the_policy() {
        let analysis = analyze("e", 60.0, &policy(), &[]);
        assert!(analysis.replicas.is_empty());
        assert_eq!(analysis.versions.len(), 4);
        assert!(analysis.versions.iter().all(|v| v.requests == 0));
    }
}
