//! Per-version traffic statistics that add up: serving replicas count requests, errors,
//! latencies, shadow comparisons and business feedback in [`VersionCounters`] over short
//! intervals; the registry sums the intervals of every replica inside a window and turns the sum
//! into a [`VersionAnalysis`] that rollouts are judged on.
//!
//! Everything here is plain data and pure functions: counters merge by addition (so the order of
//! reports does not matter), and percentiles come from a fixed-bucket histogram that merges the
//! same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drift::profile::{InputProfile, Profile, bucket};
use crate::drift::{DriftAnalysis, analyze_drift};

/// Upper bounds of the latency buckets, in microseconds: 10 µs to ~100 s, each 25% wider than
/// the one before, so a percentile read from them is within 12.5% of the truth.
pub fn latency_bounds_us() -> &'static [f64] {
    static BOUNDS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut bounds = Vec::new();
        let mut b = 10.0_f64;
        while b < 100_000_000.0 {
            bounds.push(b);
            b *= 1.25;
        }
        bounds
    })
}

/// A latency histogram on [`latency_bounds_us`]; the last bucket counts everything above the
/// largest bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Counts per bucket (trailing zero buckets may be omitted).
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, micros: f64) {
        let bounds = latency_bounds_us();
        let index = bounds.partition_point(|b| *b < micros);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Number of observations.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0..=1) in milliseconds, interpolated inside its bucket; `None` when
    /// empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let bounds = latency_bounds_us();
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0.0;
        for (i, count) in self.counts.iter().enumerate() {
            let next = seen + *count as f64;
            if next >= rank && *count > 0 {
                let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
                let upper = bounds.get(i).copied().unwrap_or(lower * 1.25);
                let fraction = (rank - seen) / *count as f64;
                return Some((lower + fraction * (upper - lower)) / 1000.0);
            }
            seen = next;
        }
        None
    }
}

/// How a shadow version's outputs compared with the primary's on the same requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowCounters {
    /// Requests mirrored and compared.
    pub compared: u64,
    /// Of those, where the argmax (predicted class) of every classification output agreed.
    pub agreed: u64,
    /// Requests whose outputs could be compared as classes (had a class axis).
    pub classified: u64,
    /// Sum over compared requests of the mean absolute difference of all output elements.
    pub abs_diff_sum: f64,
    /// Sum over compared requests of the mean relative difference (|a−b| / max(|a|, ε)).
    pub rel_diff_sum: f64,
    /// Distribution of the per-request mean absolute difference: counts per decade bucket
    /// `[0, 1e-6), [1e-6, 1e-5), … [1e-1, 1), [1, ∞)`.
    pub abs_diff_buckets: Vec<u64>,
    /// Mirrored requests dropped because the shadow's queue was full (never compared).
    pub dropped: u64,
    /// Mirrored requests the shadow failed on.
    pub errors: u64,
    /// Compared requests whose difference could not be measured (outputs of another shape or
    /// type, NaN): counted as disagreements, left out of the difference sums and means.
    #[serde(default)]
    pub unmeasured: u64,
}

/// Decade bucket index of a mean absolute difference, for [`ShadowCounters::abs_diff_buckets`].
pub fn diff_bucket(value: f64) -> usize {
    const EDGES: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];
    let v = if value.is_finite() {
        value.abs()
    } else {
        f64::MAX
    };
    EDGES
        .iter()
        .position(|e| v < *e)
        .unwrap_or(EDGES.len() + usize::from(v >= 1.0))
}

impl ShadowCounters {
    /// Adds another's counts.
    pub fn merge(&mut self, o: &ShadowCounters) {
        self.compared += o.compared;
        self.agreed += o.agreed;
        self.classified += o.classified;
        self.abs_diff_sum += o.abs_diff_sum;
        self.rel_diff_sum += o.rel_diff_sum;
        self.dropped += o.dropped;
        self.errors += o.errors;
        self.unmeasured += o.unmeasured;
        if self.abs_diff_buckets.len() < o.abs_diff_buckets.len() {
            self.abs_diff_buckets.resize(o.abs_diff_buckets.len(), 0);
        }
        for (a, b) in self.abs_diff_buckets.iter_mut().zip(&o.abs_diff_buckets) {
            *a += b;
        }
    }
}

/// Business feedback joined to this version's predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackCounters {
    /// Feedbacks that carried a reward.
    pub rewards: u64,
    /// Sum of those rewards.
    pub reward_sum: f64,
    /// Feedbacks that carried a label.
    pub labels: u64,
    /// Of those, where the prediction's class equalled the label.
    pub correct: u64,
}

impl FeedbackCounters {
    /// Adds another's counts.
    pub fn merge(&mut self, o: &FeedbackCounters) {
        self.rewards += o.rewards;
        self.reward_sum += o.reward_sum;
        self.labels += o.labels;
        self.correct += o.correct;
    }
}

/// A value a live histogram can count: the element types of tabular model inputs.
pub trait DriftValue: Copy {
    /// The value on the profile's axis.
    fn to_f64(self) -> f64;
}

macro_rules! drift_value {
    ($($t:ty),*) => {
        $(impl DriftValue for $t {
            #[inline]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
        })*
    };
}

drift_value!(f32, f64, i8, i16, i32, u8, u16, u32, bool);

impl DriftValue for i64 {
    #[inline]
    fn to_f64(self) -> f64 {
        // Precision beyond f64's 53 bits does not matter for binning.
        self as f64
    }
}

impl DriftValue for u64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// Live input histograms of one version, on the bin edges of its training profile: what drift
/// is scored on. Serving fills them with [`DriftCounters::record_rows`]; they merge by addition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCounters {
    /// Rows recorded, added up over inputs (a model with two profiled inputs counts each request
    /// row twice); drift is judged on [`DriftAnalysis::samples`] instead, the per-feature count.
    pub samples: u64,
    /// Per input name: per feature, in the order of the profile's `features`, the counts per
    /// bucket (underflow, bins, overflow: `edges.len() + 1` entries; see
    /// [`crate::drift::bucket`]).
    #[serde(default)]
    pub inputs: BTreeMap<String, Vec<Vec<u64>>>,
}

impl DriftCounters {
    /// Counts the rows of a tabular input into its features' histograms and returns how many
    /// rows were counted. `values` is the input's data in row-major order, `row_width` values
    /// per row (the `F` of an `[N, F]` input); a trailing partial row is ignored. Each feature
    /// reads its `column` of the row; a feature whose column is outside the row is skipped, so
    /// check [`InputProfile::min_row_width`] once when loading the version.
    ///
    /// Cheap on the request path: one binary search over at most a few dozen edges per value,
    /// and no allocation once the input's histograms exist (the first call sizes them).
    pub fn record_rows<T: DriftValue>(
        &mut self,
        profile: &InputProfile,
        values: &[T],
        row_width: usize,
    ) -> u64 {
        if profile.features.is_empty() || row_width == 0 {
            return 0;
        }
        // Look up before inserting: `entry` would allocate the key on every call.
        if !self.inputs.contains_key(profile.input.as_str()) {
            self.inputs.insert(profile.input.clone(), Vec::new());
        }
        let Some(histograms) = self.inputs.get_mut(profile.input.as_str()) else {
            return 0;
        };
        if histograms.len() != profile.features.len() {
            histograms.resize(profile.features.len(), Vec::new());
        }
        for (h, f) in histograms.iter_mut().zip(&profile.features) {
            if h.len() != f.edges.len() + 1 {
                h.resize(f.edges.len() + 1, 0);
            }
        }
        let mut rows = 0;
        for row in values.chunks_exact(row_width) {
            for (h, f) in histograms.iter_mut().zip(&profile.features) {
                if let Some(x) = row.get(f.column)
                    && let Some(count) = h.get_mut(bucket(&f.edges, x.to_f64()))
                {
                    *count += 1;
                }
            }
            rows += 1;
        }
        self.samples += rows;
        rows
    }

    /// Adds another's counts, bucket by bucket.
    pub fn merge(&mut self, o: &DriftCounters) {
        self.samples += o.samples;
        for (input, theirs) in &o.inputs {
            let ours = self.inputs.entry(input.clone()).or_default();
            if ours.len() < theirs.len() {
                ours.resize(theirs.len(), Vec::new());
            }
            for (a, b) in ours.iter_mut().zip(theirs) {
                if a.len() < b.len() {
                    a.resize(b.len(), 0);
                }
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            }
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
            && self
                .inputs
                .values()
                .flatten()
                .all(|h| h.iter().all(|c| *c == 0))
    }
}

/// Everything counted for one model version over an interval, on one replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionCounters {
    /// Requests answered by this version as primary (stable or canary).
    pub requests: u64,
    /// Failed requests by class (`invalid`, `overloaded`, `deadline`, `model_error`, …).
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Latencies of successful requests.
    #[serde(default)]
    pub latency: LatencyHistogram,
    /// Present when this version ran as a shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowCounters>,
    /// Business feedback on its predictions.
    #[serde(default)]
    pub feedback: FeedbackCounters,
    /// Live input histograms, when the version has a training profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftCounters>,
}

impl VersionCounters {
    /// Adds another interval's (or replica's) counts.
    pub fn merge(&mut self, o: &VersionCounters) {
        self.requests += o.requests;
        for (class, n) in &o.errors {
            *self.errors.entry(class.clone()).or_default() += n;
        }
        self.latency.merge(&o.latency);
        match (&mut self.shadow, &o.shadow) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.shadow = Some(b.clone()),
            _ => {}
        }
        self.feedback.merge(&o.feedback);
        match (&mut self.drift, &o.drift) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.drift = Some(b.clone()),
            _ => {}
        }
    }

    /// Errors of every class.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Whether anything at all was counted.
    pub fn is_empty(&self) -> bool {
        self.requests == 0
            && self.error_count() == 0
            && self
                .shadow
                .as_ref()
                .is_none_or(|s| s.compared + s.dropped + s.errors == 0)
            && self.feedback.rewards + self.feedback.labels == 0
            && self.drift.as_ref().is_none_or(DriftCounters::is_empty)
    }
}

/// One replica's counters for an endpoint over one interval:
/// `POST /api/v1/endpoints/{name}/reports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique per report (a UUID): a replica that did not get the answer to a report sends it
    /// again with the same id, and the registry stores it once and answers as it did the first
    /// time, so a lost answer never counts a report twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A stable id of the reporting replica (pod name, hostname:port…).
    pub replica: String,
    /// The interval's length in seconds.
    pub interval_seconds: f64,
    /// The endpoint revision the replica was routing by.
    #[serde(default)]
    pub revision: Option<i64>,
    /// Counters by version number.
    pub versions: BTreeMap<i64, VersionCounters>,
    /// Why the replica could not apply the newest policy, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

/// The analysis of one version over a window, across replicas: what rollouts are judged on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionAnalysis {
    /// The version number.
    pub version: i64,
    /// Its role in the endpoint's current policy: `stable`, `canary`, `shadow`, or `retired`.
    pub role: String,
    /// Requests it answered as primary.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by class.
    pub errors_by_class: BTreeMap<String, u64>,
    /// `errors / (requests + errors)`, when there was any traffic.
    pub error_rate: Option<f64>,
    /// Median latency of successful requests, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency, in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Share of compared requests whose predicted classes agreed with the primary's.
    pub shadow_agreement: Option<f64>,
    /// Mean absolute difference between its outputs and the primary's.
    pub shadow_mean_abs_diff: Option<f64>,
    /// Mean relative difference.
    pub shadow_mean_rel_diff: Option<f64>,
    /// Requests compared as a shadow.
    pub shadow_compared: u64,
    /// Mirrored requests dropped before comparison.
    pub shadow_dropped: u64,
    /// Distribution of per-request mean absolute differences (decade buckets, see
    /// [`ShadowCounters::abs_diff_buckets`]).
    pub shadow_diff_buckets: Vec<u64>,
    /// Mean reward over the feedback received.
    pub reward_mean: Option<f64>,
    /// Number of rewards.
    pub reward_count: u64,
    /// Share of labelled predictions that were right.
    pub accuracy: Option<f64>,
    /// Number of labels.
    pub label_count: u64,
    /// How far its live inputs drifted from its training profile; absent for a version without
    /// a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftAnalysis>,
}

impl VersionAnalysis {
    /// Summarizes summed counters.
    pub fn from_counters(version: i64, role: &str, c: &VersionCounters) -> Self {
        let errors = c.error_count();
        let attempts = c.requests + errors;
        let shadow = c.shadow.clone().unwrap_or_default();
        let measured = shadow.compared.saturating_sub(shadow.unmeasured);
        VersionAnalysis {
            version,
            role: role.to_string(),
            requests: c.requests,
            errors,
            errors_by_class: c.errors.clone(),
            error_rate: (attempts > 0).then(|| errors as f64 / attempts as f64),
            latency_p50_ms: c.latency.quantile_ms(0.5),
            latency_p99_ms: c.latency.quantile_ms(0.99),
            shadow_agreement: (shadow.classified > 0)
                .then(|| shadow.agreed as f64 / shadow.classified as f64),
            shadow_mean_abs_diff: (measured > 0).then(|| shadow.abs_diff_sum / measured as f64),
            shadow_mean_rel_diff: (measured > 0).then(|| shadow.rel_diff_sum / measured as f64),
            shadow_compared: shadow.compared,
            shadow_dropped: shadow.dropped,
            shadow_diff_buckets: shadow.abs_diff_buckets.clone(),
            reward_mean: (c.feedback.rewards > 0)
                .then(|| c.feedback.reward_sum / c.feedback.rewards as f64),
            reward_count: c.feedback.rewards,
            accuracy: (c.feedback.labels > 0)
                .then(|| c.feedback.correct as f64 / c.feedback.labels as f64),
            label_count: c.feedback.labels,
            drift: None,
        }
    }

    /// Like [`VersionAnalysis::from_counters`], with the drift of the live inputs from
    /// `profile` when the version has one (no live histograms then score as no samples).
    pub fn from_counters_with_profile(
        version: i64,
        role: &str,
        c: &VersionCounters,
        profile: Option<&Profile>,
    ) -> Self {
        let mut analysis = Self::from_counters(version, role, c);
        analysis.drift = profile.map(|p| match &c.drift {
            Some(drift) => analyze_drift(p, drift),
            None => analyze_drift(p, &DriftCounters::default()),
        });
        analysis
    }
}

/// `GET /api/v1/endpoints/{name}/analysis?window=…` (and serving's `/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointAnalysis {
    /// The endpoint.
    pub endpoint: String,
    /// The window, in seconds.
    pub window_seconds: f64,
    /// Replicas that reported inside the window.
    pub replicas: Vec<String>,
    /// Per version, stable first, then canary, shadows, retired.
    pub versions: Vec<VersionAnalysis>,
    /// The newest load error any replica reported in the window, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_histogram_are_within_a_bucket_of_the_truth() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000 {
            h.record(f64::from(i) * 10.0); // 10 µs .. 10 ms
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 5.0).abs() / 5.0 < 0.125, "{p50}");
        assert!((p99 - 9.9).abs() / 9.9 < 0.125, "{p99}");
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn merging_counters_is_adding_them_in_any_order() {
        let mut a = VersionCounters {
            requests: 3,
            ..VersionCounters::default()
        };
        a.errors.insert("model_error".into(), 1);
        a.latency.record(100.0);
        a.feedback.rewards = 2;
        a.feedback.reward_sum = 1.5;
        let mut b = VersionCounters {
            requests: 5,
            ..VersionCounters::default()
        };
        b.errors.insert("model_error".into(), 2);
        b.errors.insert("deadline".into(), 1);
        b.latency.record(1e6);
        b.shadow = Some(ShadowCounters {
            compared: 4,
            agreed: 3,
            classified: 4,
            abs_diff_buckets: vec![0, 4],
            ..ShadowCounters::default()
        });
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.requests, 8);
        assert_eq!(ab.error_count(), 4);
        assert_eq!(ab.latency.total(), 2);
        let analysis = VersionAnalysis::from_counters(2, "canary", &ab);
        assert_eq!(analysis.error_rate, Some(4.0 / 12.0));
        assert_eq!(analysis.shadow_agreement, Some(0.75));
        assert_eq!(analysis.reward_mean, Some(0.75));
        assert_eq!(analysis.accuracy, None);
    }

    fn input_profile() -> InputProfile {
        use crate::drift::profile::{FeatureProfile, Summary};
        let summary = Summary {
            count: 1,
            mean: 0.0,
            std: 0.0,
            min: 0.0,
            max: 0.0,
            non_finite: 0,
        };
        InputProfile {
            input: "x".into(),
            features: vec![
                FeatureProfile {
                    name: "a".into(),
                    column: 0,
                    edges: vec![0.0, 1.0, 2.0],
                    counts: vec![0, 1, 0, 0],
                    summary,
                },
                FeatureProfile {
                    name: "c".into(),
                    column: 2,
                    edges: vec![10.0],
                    counts: vec![0, 1],
                    summary,
                },
            ],
            summary: None,
        }
    }

    #[test]
    fn live_rows_are_counted_on_the_profile_edges_without_reallocating() {
        let profile = input_profile();
        let mut drift = DriftCounters::default();
        // Rows of width 3; column 1 is not profiled. The trailing 7.0 is a partial row.
        let values: [f32; 10] = [
            -1.0,
            0.0,
            10.0, // a underflows; c = 10 sits on its edge: bucket 1
            1.0,
            0.0,
            9.0, // a = 1 on an edge: bucket 2; c underflows
            f32::NAN,
            0.0,
            11.0, // NaN overflows
            7.0,
        ];
        assert_eq!(drift.record_rows(&profile, &values, 3), 3);
        assert_eq!(drift.samples, 3);
        assert_eq!(drift.inputs["x"], vec![vec![1, 0, 1, 1], vec![1, 2]]);
        let buffer = drift.inputs["x"][0].as_ptr();
        assert_eq!(drift.record_rows(&profile, &[0.5f64, 0.0, 20.0], 3), 1);
        assert_eq!(drift.inputs["x"], vec![vec![1, 1, 1, 1], vec![1, 3]]);
        assert_eq!(drift.inputs["x"][0].as_ptr(), buffer);
        // Rows too narrow for column 2: only `a` is counted.
        assert_eq!(drift.record_rows(&profile, &[1i64, 1], 2), 1);
        assert_eq!(drift.inputs["x"], vec![vec![1, 1, 2, 1], vec![1, 3]]);
        assert_eq!(drift.record_rows(&profile, &[1.0f32], 0), 0);
    }

    #[test]
    fn drift_counters_merge_by_adding_and_count_as_traffic() {
        let profile = input_profile();
        let mut a = VersionCounters::default();
        let mut live = DriftCounters::default();
        live.record_rows(&profile, &[0.5f32, 0.0, 10.0], 3);
        a.drift = Some(live);
        assert!(!a.is_empty());
        let b = a.clone();
        let mut ab = a.clone();
        ab.merge(&b);
        let drift = ab.drift.as_ref().unwrap();
        assert_eq!(drift.samples, 2);
        assert_eq!(drift.inputs["x"], vec![vec![0, 2, 0, 0], vec![0, 2]]);
        let mut none = VersionCounters::default();
        none.merge(&a);
        assert_eq!(none.drift, a.drift);
        assert!(
            VersionCounters {
                drift: Some(DriftCounters::default()),
                ..VersionCounters::default()
            }
            .is_empty()
        );
        // Absent drift stays absent on the wire.
        let json = serde_json::to_value(VersionCounters::default()).unwrap();
        assert!(json.get("drift").is_none(), "{json}");
        let back: VersionCounters =
            serde_json::from_value(serde_json::to_value(&ab).unwrap()).unwrap();
        assert_eq!(back, ab);
    }

    #[test]
    fn differences_fall_in_decade_buckets() {
        assert_eq!(diff_bucket(0.0), 0);
        assert_eq!(diff_bucket(5e-6), 1);
        assert_eq!(diff_bucket(0.05), 5);
        assert_eq!(diff_bucket(0.5), 6);
        assert_eq!(diff_bucket(3.0), 7);
        assert_eq!(diff_bucket(f64::NAN), 7);
    }
}
