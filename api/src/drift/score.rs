//! Distances between a feature's training histogram and its live histogram on the same bins.
//!
//! - **PSI**, the population stability index: `Σ (pᵢ − qᵢ) · ln(pᵢ / qᵢ)`. Symmetric; the usual
//!   reading is < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 large shift.
//! - **KL**, the Kullback–Leibler divergence **KL(live ‖ training)** = `Σ pᵢ · ln(pᵢ / qᵢ)`, in
//!   nats: how surprising live data is under the training distribution. This direction weighs
//!   most where live data goes (a new region of inputs), which is what drift monitoring is for.
//! - **JS**, the Jensen–Shannon **distance**: the square root of the JS divergence with base-2
//!   logarithms, `√(½ KL₂(p ‖ m) + ½ KL₂(q ‖ m))` with `m = (p + q) / 2`; symmetric, bounded
//!   to [0, 1] (1 = no overlap at all) and a metric.
//!
//! Here `p` is the live distribution and `q` the training one. PSI and KL divide by bucket
//! shares, so both histograms are smoothed first (additive smoothing): the smaller histogram
//! gets [`SMOOTHING`] (half a count) added to every bucket, and the larger one the same
//! *share* of its total, `ε = SMOOTHING / min(total_live, total_training)` per bucket. That keeps
//! an empty bucket (common: training data never reaches the underflow or overflow bucket) from
//! dividing by zero, barely moves buckets with real counts, and — unlike adding half a count to
//! both — cannot make two histograms of the same shape but different sizes (1,000 live rows
//! against a million training rows) look drifted: identical distributions score exactly 0.
//! JS needs no smoothing (`m` is never zero where `p` or `q` is not), so it is computed on the
//! raw shares and keeps its exact bounds: identical histograms score 0 and disjoint ones 1.

use serde::{Deserialize, Serialize};

use crate::records::DriftMetric;

/// Pseudo-count added to every bucket of the smaller histogram before PSI and KL (additive,
/// "Jeffreys" smoothing); the larger one gets the same share of its total.
pub const SMOOTHING: f64 = 0.5;

/// The three distances of one histogram pair (or the worst of several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Population stability index.
    pub psi: f64,
    /// KL(live ‖ training), in nats.
    pub kl: f64,
    /// Jensen–Shannon distance, 0 to 1.
    pub js: f64,
}

impl Scores {
    /// The score of `metric`.
    pub fn get(&self, metric: DriftMetric) -> f64 {
        match metric {
            DriftMetric::Psi => self.psi,
            DriftMetric::Kl => self.kl,
            DriftMetric::Js => self.js,
        }
    }

    /// Each metric's larger value.
    pub fn max(&self, other: &Scores) -> Scores {
        Scores {
            psi: self.psi.max(other.psi),
            kl: self.kl.max(other.kl),
            js: self.js.max(other.js),
        }
    }
}

/// The three distances between `expected` (training) and `actual` (live) counts on the same
/// buckets; `None` when the lengths differ or either histogram is empty.
pub fn scores(expected: &[u64], actual: &[u64]) -> Option<Scores> {
    Some(Scores {
        psi: psi(expected, actual)?,
        kl: kl(expected, actual)?,
        js: js_distance(expected, actual)?,
    })
}

/// PSI of `actual` against `expected`, on smoothed shares; `None` as for [`scores`].
pub fn psi(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let (q, p) = (smoothed(expected, actual)?, smoothed(actual, expected)?);
    Some(q.iter().zip(&p).map(|(q, p)| (p - q) * (p / q).ln()).sum())
}

/// KL(actual ‖ expected) in nats, on smoothed shares; `None` as for [`scores`].
pub fn kl(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let (q, p) = (smoothed(expected, actual)?, smoothed(actual, expected)?);
    // Never negative in exact arithmetic; rounding can leave a -1e-17.
    Some(
        q.iter()
            .zip(&p)
            .map(|(q, p)| p * (p / q).ln())
            .sum::<f64>()
            .max(0.0),
    )
}

/// Jensen–Shannon distance (base 2, in [0, 1]) between the raw shares; `None` as for
/// [`scores`].
pub fn js_distance(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let (q, p) = (shares(expected, actual)?, shares(actual, expected)?);
    let mut divergence = 0.0;
    for (q, p) in q.iter().zip(&p) {
        let m = (p + q) / 2.0;
        if *p > 0.0 {
            divergence += 0.5 * p * (p / m).log2();
        }
        if *q > 0.0 {
            divergence += 0.5 * q * (q / m).log2();
        }
    }
    Some(divergence.clamp(0.0, 1.0).sqrt())
}

/// Shares of `counts` after additive smoothing against `other` (see the module docs); `None`
/// unless `other` has the same length and both have counts.
fn smoothed(counts: &[u64], other: &[u64]) -> Option<Vec<f64>> {
    check(counts, other)?;
    let total = sum(counts);
    let epsilon = SMOOTHING / total.min(sum(other));
    let k = counts.len() as f64;
    Some(
        counts
            .iter()
            .map(|c| (*c as f64 / total + epsilon) / (1.0 + k * epsilon))
            .collect(),
    )
}

fn sum(counts: &[u64]) -> f64 {
    counts.iter().map(|c| *c as f64).sum()
}

/// Raw shares of `counts`; `None` as for [`smoothed`].
fn shares(counts: &[u64], other: &[u64]) -> Option<Vec<f64>> {
    check(counts, other)?;
    let total = sum(counts);
    Some(counts.iter().map(|c| *c as f64 / total).collect())
}

fn check(counts: &[u64], other: &[u64]) -> Option<()> {
    let nonempty = |c: &[u64]| c.iter().any(|n| *n > 0);
    (counts.len() == other.len() && !counts.is_empty() && nonempty(counts) && nonempty(other))
        .then_some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() < 1e-12
    }

    #[test]
    fn scores_match_the_hand_computed_values() {
        // Training 50/50, live 90/10: both totals are 100, so ε = 0.5 / 100 and smoothing adds
        // half a count to every bucket of both.
        // Smoothed: q = (50.5/101, 50.5/101) = (0.5, 0.5); p = (90.5/101, 10.5/101).
        let (p1, p2) = (90.5 / 101.0, 10.5 / 101.0);
        let s = scores(&[50, 50], &[90, 10]).unwrap();
        // PSI = (p1 − ½)·ln(2·p1) + (p2 − ½)·ln(2·p2) = 0.853059…
        let psi = (p1 - 0.5) * (p1 / 0.5f64).ln() + (p2 - 0.5) * (p2 / 0.5f64).ln();
        assert!(close(s.psi, psi), "{}", s.psi);
        assert!((s.psi - 0.853_059_244_967).abs() < 1e-9);
        // KL(live ‖ training) = p1·ln(2·p1) + p2·ln(2·p2) = 0.359448…
        let kl = p1 * (p1 / 0.5f64).ln() + p2 * (p2 / 0.5f64).ln();
        assert!(close(s.kl, kl), "{}", s.kl);
        assert!((s.kl - 0.359_448_462_621).abs() < 1e-9);
        // JS on raw shares p = (0.9, 0.1), q = (0.5, 0.5), m = (0.7, 0.3):
        // ½[0.9·log₂(0.9/0.7) + 0.1·log₂(0.1/0.3)] + ½[0.5·log₂(0.5/0.7) + 0.5·log₂(0.5/0.3)]
        // = 0.146793…, and the distance is its square root, 0.383136…
        let div = 0.5 * (0.9 * (0.9f64 / 0.7).log2() + 0.1 * (0.1f64 / 0.3).log2())
            + 0.5 * (0.5 * (0.5f64 / 0.7).log2() + 0.5 * (0.5f64 / 0.3).log2());
        assert!(close(s.js, div.sqrt()), "{}", s.js);
        assert!((s.js - 0.383_135_879_860).abs() < 1e-9);
    }

    #[test]
    fn kl_is_live_against_training_not_the_reverse() {
        // Live puts 40% where training had nothing: KL(live ‖ training) weighs that heavily.
        let training = [90, 10, 0];
        let live = [50, 10, 40];
        // Both totals are 100: half a count on every bucket of both.
        // Smoothed: q = (90.5, 10.5, 0.5) / 101.5, p = (50.5, 10.5, 40.5) / 101.5.
        let q: [f64; 3] = [90.5 / 101.5, 10.5 / 101.5, 0.5 / 101.5];
        let p: [f64; 3] = [50.5 / 101.5, 10.5 / 101.5, 40.5 / 101.5];
        let want: f64 = (0..3).map(|i| p[i] * (p[i] / q[i]).ln()).sum();
        let reverse: f64 = (0..3).map(|i| q[i] * (q[i] / p[i]).ln()).sum();
        let forward = kl(&training, &live).unwrap();
        assert!(close(forward, want), "{forward} vs {want}");
        assert!(close(kl(&live, &training).unwrap(), reverse));
        assert!(forward > 2.0 * reverse, "{forward} vs {reverse}");
    }

    #[test]
    fn identical_distributions_score_zero_and_disjoint_ones_score_high() {
        // Same shape, very different totals (and empty buckets in both): still ~0.
        let s = scores(&[10_000, 20_000, 30_000, 0], &[2, 4, 6, 0]).unwrap();
        assert!(s.psi < 1e-12 && s.kl < 1e-12 && s.js < 1e-12, "{s:?}");
        let s = scores(&[5, 7, 0], &[5, 7, 0]).unwrap();
        assert!(s.psi == 0.0 && s.kl == 0.0 && s.js == 0.0, "{s:?}");
        let s = scores(&[10, 0], &[0, 10]).unwrap();
        assert!(close(s.js, 1.0), "{s:?}");
        assert!(s.psi > 2.0 && s.kl > 1.0, "{s:?}");
    }

    #[test]
    fn the_smaller_histogram_gets_half_a_count_and_the_larger_the_same_share() {
        // Training 1000 rows (900/100/0), live 10 rows (5/5/0): ε = 0.5/10 = 0.05 per bucket.
        // q = (0.9 + 0.05, 0.1 + 0.05, 0 + 0.05) / 1.15, p = (0.5 + 0.05, 0.5 + 0.05, 0.05) / 1.15.
        let q: [f64; 3] = [0.95 / 1.15, 0.15 / 1.15, 0.05 / 1.15];
        let p: [f64; 3] = [0.55 / 1.15, 0.55 / 1.15, 0.05 / 1.15];
        let want: f64 = (0..3).map(|i| (p[i] - q[i]) * (p[i] / q[i]).ln()).sum();
        assert!(close(psi(&[900, 100, 0], &[5, 5, 0]).unwrap(), want));
        // Symmetric in which side is smaller.
        assert!(close(
            psi(&[900, 100, 0], &[5, 5, 0]).unwrap(),
            psi(&[5, 5, 0], &[900, 100, 0]).unwrap()
        ));
    }

    #[test]
    fn empty_buckets_never_divide_by_zero_and_mismatches_have_no_score() {
        let s = scores(&[100, 0, 0], &[0, 0, 100]).unwrap();
        assert!(s.psi.is_finite() && s.kl.is_finite() && s.js.is_finite());
        assert_eq!(scores(&[1, 2], &[1, 2, 3]), None);
        assert_eq!(scores(&[0, 0], &[1, 2]), None);
        assert_eq!(scores(&[1, 2], &[0, 0]), None);
        assert_eq!(scores(&[], &[]), None);
    }

    #[test]
    fn a_metric_reads_its_own_score() {
        let s = Scores {
            psi: 1.0,
            kl: 2.0,
            js: 0.5,
        };
        assert_eq!(s.get(DriftMetric::Psi), 1.0);
        assert_eq!(s.get(DriftMetric::Kl), 2.0);
        assert_eq!(s.get(DriftMetric::Js), 0.5);
    }
}
