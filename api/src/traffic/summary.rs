//! Summing traffic counters into the per-version numbers an endpoint is judged on.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::counters::{EndpointAnalysis, Report, VersionAnalysis, VersionCounters};
use super::policy::{TrafficRole, referenced_versions};
use crate::drift::Profile;
use crate::records::EndpointPolicy;

/// A stored report with when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedReport {
    /// When the registry received it.
    pub received_at: DateTime<Utc>,
    /// The report.
    pub report: Report,
}

/// Sums the reports of every replica inside a window (order does not matter except for which
/// load error is the newest) per version, then [`summarize`]s them; the analysis names the
/// replicas that reported. What the registry's `GET …/analysis` answers.
pub fn summarize_reports<P: Borrow<Profile>>(
    endpoint: &str,
    window_seconds: f64,
    policy: &EndpointPolicy,
    reports: &[ReceivedReport],
    profiles: &BTreeMap<i64, P>,
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
    let mut analysis = summarize(endpoint, window_seconds, Some(policy), &sums, profiles);
    analysis.replicas = replicas.into_iter().collect();
    analysis.load_error = newest_error.map(|(_, e)| e.to_string());
    analysis
}

/// The per-version numbers of an endpoint from counters summed over a window: every version
/// `policy` names, in its order (stable, canary, shadows; with zero counts when nothing was
/// counted), then versions it no longer names (`retired`) by number. Versions of the policy with
/// a training profile in `profiles` get their drift scored; retired ones do not (their numbers
/// may belong to the model the endpoint served before). Without a policy every version is
/// retired. `replicas` and `load_error` are left for the caller.
///
/// Serving's `/stats` (one replica's window) and the registry's analysis (every replica's
/// reports, [`summarize_reports`]) are this one function.
pub fn summarize<P: Borrow<Profile>>(
    endpoint: &str,
    window_seconds: f64,
    policy: Option<&EndpointPolicy>,
    counters: &BTreeMap<i64, VersionCounters>,
    profiles: &BTreeMap<i64, P>,
) -> EndpointAnalysis {
    let empty = VersionCounters::default();
    let used = policy.map(referenced_versions).unwrap_or_default();
    let mut versions = Vec::with_capacity(counters.len() + used.len());
    for u in &used {
        versions.push(VersionAnalysis::from_counters_with_profile(
            u.version,
            u.role.as_str(),
            counters.get(&u.version).unwrap_or(&empty),
            profiles.get(&u.version).map(Borrow::borrow),
        ));
    }
    for (version, c) in counters {
        if !used.iter().any(|u| u.version == *version) {
            versions.push(VersionAnalysis::from_counters(
                *version,
                TrafficRole::Retired.as_str(),
                c,
            ));
        }
    }
    EndpointAnalysis {
        endpoint: endpoint.to_string(),
        window_seconds,
        replicas: Vec::new(),
        versions,
        load_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CanaryPolicy, ShadowPolicy};
    use std::collections::BTreeMap;

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
            max_age_seconds: None,
            decay: None,
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
                id: None,
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
        let analysis = summarize_reports(
            "e",
            300.0,
            &policy(),
            &reports,
            &BTreeMap::<i64, Profile>::new(),
        );
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
            summarize_reports(
                "e",
                60.0,
                &policy(),
                &reports,
                &BTreeMap::<i64, Profile>::new()
            )
            .load_error
            .as_deref(),
            Some("new")
        );
        assert_eq!(
            summarize_reports(
                "e",
                60.0,
                &policy(),
                &reports[2..],
                &BTreeMap::<i64, Profile>::new()
            )
            .load_error,
            None
        );
    }

    #[test]
    fn without_a_policy_every_counted_version_is_retired_in_version_order() {
        let counters: BTreeMap<i64, VersionCounters> = [(3, 2), (1, 5)]
            .into_iter()
            .map(|(v, requests)| {
                (
                    v,
                    VersionCounters {
                        requests,
                        ..VersionCounters::default()
                    },
                )
            })
            .collect();
        let analysis = summarize("e", 60.0, None, &counters, &BTreeMap::<i64, Profile>::new());
        let got: Vec<(i64, &str, u64)> = analysis
            .versions
            .iter()
            .map(|v| (v.version, v.role.as_str(), v.requests))
            .collect();
        assert_eq!(got, vec![(1, "retired", 5), (3, "retired", 2)]);
    }

    #[test]
    fn no_reports_is_an_analysis_of_zeros_for_the_policy() {
        let analysis =
            summarize_reports("e", 60.0, &policy(), &[], &BTreeMap::<i64, Profile>::new());
        assert!(analysis.replicas.is_empty());
        assert_eq!(analysis.versions.len(), 4);
        assert!(analysis.versions.iter().all(|v| v.requests == 0));
    }
}
