//! A version's drift: its live histograms (summed [`DriftCounters`]) scored against its training
//! profile, per feature and overall.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::profile::{FeatureProfile, InputProfile, Profile};
use super::score::{Scores, scores};
use crate::records::DriftMetric;
use crate::traffic::DriftCounters;

/// How far one feature's live inputs are from its training profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// The model input the feature belongs to.
    pub input: String,
    /// Live values counted for it.
    pub samples: u64,
    /// Its distances.
    pub scores: Scores,
}

/// The drift of one version's live inputs from its training profile: part of
/// [`crate::traffic::VersionAnalysis`], and what the drift monitor judges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftAnalysis {
    /// The fewest live values behind any profiled feature (0 when some feature got none): what
    /// `min_samples` is compared with.
    pub samples: u64,
    /// Overall scores: for each metric, the worst (highest) feature's. Absent when no feature
    /// had live data to score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    /// The feature with the highest PSI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_feature: Option<String>,
    /// Scores per feature, by name (`input/name` when the profile has several tabular inputs).
    /// Features without live data are left out.
    #[serde(default)]
    pub features: BTreeMap<String, FeatureDrift>,
}

impl DriftAnalysis {
    /// The overall score of `metric`, if any feature was scored.
    pub fn score(&self, metric: DriftMetric) -> Option<f64> {
        self.scores.map(|s| s.get(metric))
    }

    /// Features and their `metric` scores, worst first (ties by name).
    pub fn ranked(&self, metric: DriftMetric) -> Vec<(&str, f64)> {
        let mut ranked: Vec<(&str, f64)> = self
            .features
            .iter()
            .map(|(name, f)| (name.as_str(), f.scores.get(metric)))
            .collect();
        // The map is in name order and the sort is stable, so ties stay in name order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked
    }
}

/// A profiled feature with its live counts, as [`analyze_drift`] and [`feature_histograms`]
/// walk them.
struct Profiled<'a> {
    /// `name`, or `input/name` when the profile has several tabular inputs.
    key: String,
    /// The model input it belongs to.
    input: &'a str,
    /// Its training profile.
    feature: &'a FeatureProfile,
    /// Its live histogram, when one was counted on the same buckets.
    live: Option<&'a [u64]>,
}

/// Every profiled feature of `profile` in profile order, matched to its live counts in
/// `counters` by input name and position (as [`DriftCounters::record_rows`] lays them out); a
/// live histogram with another number of buckets is not a match.
fn profiled_features<'a>(
    profile: &'a Profile,
    counters: &'a DriftCounters,
) -> impl Iterator<Item = Profiled<'a>> + 'a {
    let tabular: Vec<&InputProfile> = profile
        .inputs
        .iter()
        .filter(|i| !i.features.is_empty())
        .collect();
    let several = tabular.len() > 1;
    tabular.into_iter().flat_map(move |input| {
        let live = counters.inputs.get(&input.input);
        input
            .features
            .iter()
            .enumerate()
            .map(move |(i, feature)| Profiled {
                key: if several {
                    format!("{}/{}", input.input, feature.name)
                } else {
                    feature.name.clone()
                },
                input: &input.input,
                feature,
                live: live
                    .and_then(|l| l.get(i))
                    .map(Vec::as_slice)
                    .filter(|c| c.len() == feature.counts.len()),
            })
    })
}

/// Scores the live histograms in `counters` against `profile`, feature by feature. Live counts
/// are matched to the profile's features by input name and position (as
/// [`DriftCounters::record_rows`] lays them out); a feature whose live histogram is missing or
/// has another number of buckets is not scored. Pure, and cheap enough for serving's `/stats`.
pub fn analyze_drift(profile: &Profile, counters: &DriftCounters) -> DriftAnalysis {
    let mut least: Option<u64> = None;
    let mut features = BTreeMap::new();
    for profiled in profiled_features(profile, counters) {
        let samples = profiled.live.map_or(0, |c| c.iter().sum::<u64>());
        least = Some(least.map_or(samples, |l| l.min(samples)));
        let Some(scores) = profiled
            .live
            .and_then(|c| scores(&profiled.feature.counts, c))
        else {
            continue;
        };
        features.insert(
            profiled.key,
            FeatureDrift {
                input: profiled.input.to_string(),
                samples,
                scores,
            },
        );
    }
    let overall = features.values().map(|f| f.scores).reduce(|a, b| a.max(&b));
    let mut analysis = DriftAnalysis {
        samples: least.unwrap_or(0),
        scores: overall,
        worst_feature: None,
        features,
    };
    analysis.worst_feature = analysis
        .ranked(DriftMetric::Psi)
        .first()
        .map(|(name, _)| name.to_string());
    analysis
}

/// A feature's training histogram beside its live one, on the same buckets: what a person
/// looks at to see how a feature drifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureHistogram {
    /// The feature, keyed as in [`DriftAnalysis::features`] (`input/name` when the profile has
    /// several tabular inputs).
    pub feature: String,
    /// The model input it belongs to.
    pub input: String,
    /// Bin edges; bucket `i` is `[edges[i-1], edges[i])`, bucket 0 everything below `edges[0]`
    /// and the last everything from the last edge up (see [`super::bucket`]).
    pub edges: Vec<f64>,
    /// Training values per bucket (`edges.len() + 1` entries).
    pub training: Vec<u64>,
    /// Live values per bucket, zeros when none were counted.
    pub live: Vec<u64>,
    /// The distances, when there were live values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
}

/// `GET /api/v1/endpoints/{name}/histograms`: a version's features, training beside live,
/// over a window of the endpoint's reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionHistograms {
    /// The endpoint.
    pub endpoint: String,
    /// The version.
    pub version: i64,
    /// The window, in seconds.
    pub window_seconds: f64,
    /// Every profiled feature, worst PSI first ([`feature_histograms`]).
    pub features: Vec<FeatureHistogram>,
}

/// Every profiled feature of `profile` with its training and live histograms (from the summed
/// `counters`), worst PSI first (features without live values last, by name).
pub fn feature_histograms(profile: &Profile, counters: &DriftCounters) -> Vec<FeatureHistogram> {
    let mut out: Vec<FeatureHistogram> = profiled_features(profile, counters)
        .map(|profiled| {
            let training = &profiled.feature.counts;
            let live = profiled
                .live
                .map_or_else(|| vec![0; training.len()], <[u64]>::to_vec);
            FeatureHistogram {
                feature: profiled.key,
                input: profiled.input.to_string(),
                edges: profiled.feature.edges.clone(),
                scores: scores(training, &live),
                training: training.clone(),
                live,
            }
        })
        .collect();
    let psi = |h: &FeatureHistogram| h.scores.map_or(f64::NEG_INFINITY, |s| s.psi);
    out.sort_by(|a, b| {
        psi(b)
            .total_cmp(&psi(a))
            .then_with(|| a.feature.cmp(&b.feature))
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::drift::profile::{FeatureProfile, InputProfile, Summary};

    fn feature(name: &str, column: usize, counts: Vec<u64>) -> FeatureProfile {
        let n: u64 = counts.iter().sum();
        FeatureProfile {
            name: name.into(),
            column,
            edges: (0..counts.len() - 1).map(|e| e as f64).collect(),
            counts,
            summary: Summary {
                count: n,
                mean: 0.0,
                std: 1.0,
                min: 0.0,
                max: 1.0,
                non_finite: 0,
            },
        }
    }

    fn profile() -> Profile {
        Profile::new(vec![InputProfile {
            input: "x".into(),
            features: vec![
                feature("age", 0, vec![0, 2500, 2500, 2500, 2500, 0]),
                feature("income", 1, vec![0, 2500, 2500, 2500, 2500, 0]),
                feature("score", 2, vec![0, 5000, 5000, 0]),
            ],
            summary: None,
        }])
    }

    fn live(rows: &[Vec<u64>]) -> DriftCounters {
        DriftCounters {
            samples: rows[0].iter().sum(),
            inputs: [("x".to_string(), rows.to_vec())].into(),
        }
    }

    #[test]
    fn a_shifted_feature_scores_high_and_is_the_one_named() {
        let counters = live(&[
            vec![0, 250, 250, 250, 250, 0],
            vec![0, 0, 0, 100, 700, 200],
            vec![0, 500, 500, 0],
        ]);
        let analysis = analyze_drift(&profile(), &counters);
        assert_eq!(analysis.samples, 1000);
        assert_eq!(analysis.worst_feature.as_deref(), Some("income"));
        let income = analysis.features["income"].scores;
        assert!(income.psi > 1.0 && income.js > 0.5, "{income:?}");
        for calm in ["age", "score"] {
            let s = analysis.features[calm].scores;
            assert!(s.psi < 0.01 && s.js < 0.01, "{calm}: {s:?}");
        }
        // Overall is the worst feature's, metric by metric.
        assert_eq!(analysis.scores, Some(income));
        let ranked = analysis.ranked(DriftMetric::Js);
        assert_eq!(ranked[0].0, "income");
        assert_eq!(ranked.len(), 3);
    }

    #[test]
    fn identical_distributions_score_about_zero() {
        let counters = live(&[
            vec![0, 25, 25, 25, 25, 0],
            vec![0, 25, 25, 25, 25, 0],
            vec![0, 50, 50, 0],
        ]);
        let analysis = analyze_drift(&profile(), &counters);
        let s = analysis.scores.unwrap();
        assert!(s.psi < 1e-9 && s.kl < 1e-9 && s.js < 1e-9, "{s:?}");
        assert_eq!(analysis.samples, 100);
    }

    #[test]
    fn without_live_data_nothing_is_scored_and_samples_is_zero() {
        let analysis = analyze_drift(&profile(), &DriftCounters::default());
        assert_eq!(analysis.samples, 0);
        assert_eq!(analysis.scores, None);
        assert_eq!(analysis.worst_feature, None);
        assert!(analysis.features.is_empty());
        // A histogram of the wrong shape is not scored either, and counts as no samples.
        let counters = live(&[vec![0, 25, 25, 25, 25, 0], vec![1, 2], vec![0, 50, 50, 0]]);
        let analysis = analyze_drift(&profile(), &counters);
        assert_eq!(analysis.samples, 0);
        assert!(!analysis.features.contains_key("income"));
        assert_eq!(analysis.features.len(), 2);
    }

    #[test]
    fn features_of_several_inputs_are_named_with_their_input() {
        let mut p = profile();
        p.inputs.push(InputProfile {
            input: "y".into(),
            features: vec![feature("age", 0, vec![0, 10, 10, 0])],
            summary: None,
        });
        let mut counters = live(&[
            vec![0, 25, 25, 25, 25, 0],
            vec![0, 25, 25, 25, 25, 0],
            vec![0, 50, 50, 0],
        ]);
        counters.inputs.insert("y".into(), vec![vec![0, 0, 0, 20]]);
        let analysis = analyze_drift(&p, &counters);
        assert_eq!(analysis.worst_feature.as_deref(), Some("y/age"));
        assert!(analysis.features.contains_key("x/age"));
        assert_eq!(analysis.features["y/age"].input, "y");
        assert_eq!(analysis.samples, 20);
    }

    #[test]
    fn histograms_pair_training_and_live_buckets_worst_first() {
        let counters = live(&[
            vec![0, 2500, 2500, 2500, 2500, 0],
            vec![0, 0, 0, 5000, 5000, 0],
        ]);
        let h = feature_histograms(&profile(), &counters);
        let names: Vec<&str> = h.iter().map(|f| f.feature.as_str()).collect();
        // income moved, age did not, score got no live values.
        assert_eq!(names, ["income", "age", "score"]);
        assert_eq!(h[0].training, [0, 2500, 2500, 2500, 2500, 0]);
        assert_eq!(h[0].live, [0, 0, 0, 5000, 5000, 0]);
        assert_eq!(h[0].edges, [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert!(h[0].scores.unwrap().psi > 1.0);
        assert!(h[1].scores.unwrap().psi.abs() < 1e-9);
        assert_eq!(h[2].live, [0, 0, 0, 0]);
        assert_eq!(h[2].scores, None);
    }
}
