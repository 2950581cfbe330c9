//! How a shadow version's outputs differ from the primary's on the same request.
//!
//! Outputs are matched by name. Each pair is compared two ways: as classes (the argmax of a score
//! vector, or a label output taken as it is), which gives agreement; and element by element,
//! which gives the mean absolute and relative differences. [`Comparison::record`] folds one
//! request's result into the [`ShadowCounters`] the registry aggregates.
//!
//! Things that cannot be compared are disagreements, never panics: an output of a different
//! dtype or shape, no output name in common, or a NaN anywhere the two sides are not identical
//! make the request *classified and not agreed* with an infinite difference. Infinities never
//! enter the counters' sums (JSON has no infinity, and one would poison every mean after it):
//! [`Comparison::record`] counts such a request as compared, in the agreement denominator, and
//! in the top difference bucket `[1, ∞)`, but adds nothing to the difference sums.

use ferry_api::traffic::{ShadowCounters, diff_bucket};

use crate::runtime::{Tensor, TensorData};

/// Smallest denominator of a relative difference, so an exact zero in the primary's output does
/// not divide by zero.
const REL_EPSILON: f64 = 1e-12;

/// One request's shadow output compared with the primary's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Whether any output could be read as classes (score vectors, labels), or the outputs did
    /// not match at all (which counts against agreement).
    pub classified: bool,
    /// Whether every class read from every classification output agreed; false when not
    /// `classified`.
    pub agreed: bool,
    /// Whether some shared output differed in dtype or shape, or no output name was shared.
    pub mismatched: bool,
    /// Mean of |primary − shadow| over every compared element (0 or 1 per element for labels
    /// and strings); infinite when `mismatched` or when a NaN made an element incomparable.
    pub mean_abs_diff: f64,
    /// Mean of |primary − shadow| / max(|primary|, 1e-12); infinite like `mean_abs_diff`.
    pub mean_rel_diff: f64,
}

impl Comparison {
    /// Adds this request to a shadow version's counters (see the module docs for how
    /// infinite differences are counted).
    pub fn record(&self, counters: &mut ShadowCounters) {
        counters.compared += 1;
        if self.classified {
            counters.classified += 1;
            if self.agreed {
                counters.agreed += 1;
            }
        }
        if !self.mean_abs_diff.is_finite() {
            counters.unmeasured += 1;
        }
        add_finite(&mut counters.abs_diff_sum, self.mean_abs_diff);
        add_finite(&mut counters.rel_diff_sum, self.mean_rel_diff);
        let bucket = diff_bucket(self.mean_abs_diff);
        if counters.abs_diff_buckets.len() <= bucket {
            // Every bucket at once, so a counter is resized once, not once per new bucket.
            let all = diff_bucket(f64::INFINITY) + 1;
            counters.abs_diff_buckets.resize(all.max(bucket + 1), 0);
        }
        if let Some(count) = counters.abs_diff_buckets.get_mut(bucket) {
            *count += 1;
        }
    }
}

/// Adds `value` to `sum` when it is finite, saturating at `f64::MAX` so a sum stays finite too.
fn add_finite(sum: &mut f64, value: f64) {
    if value.is_finite() {
        let next = *sum + value;
        *sum = if next.is_finite() { next } else { f64::MAX };
    }
}

/// Compares the shadow's outputs with the primary's for one request.
///
/// Outputs present on one side only are ignored (a shadow may add outputs); when no name is
/// shared at all, the comparison is a mismatch unless both sides are empty.
#[must_use]
pub fn compare(primary: &[Tensor], shadow: &[Tensor]) -> Comparison {
    // Element by element over whole output tensors: CPU work, kept off the reactor.
    ferry_api::blocking::assert_off_reactor("comparing shadow outputs");
    let mut acc = Accumulator::default();
    let mut shared = 0usize;
    for p in primary {
        if let Some(s) = shadow.iter().find(|s| s.name() == p.name()) {
            shared += 1;
            compare_output(p, s, &mut acc);
        }
    }
    if shared == 0 && !(primary.is_empty() && shadow.is_empty()) {
        acc.mismatch();
    }
    acc.finish()
}

/// The classes predicted for each row, for joining label feedback: the values of the first
/// integer (or boolean) label output (`[N]` or `[N, 1]`), else the per-row argmax of the first
/// float score output (`[…, K]`, K ≥ 2).
///
/// Labels come first because they are the model's own class ids: a classifier whose classes are
/// `[3, 7, 9]` outputs label 7 where the argmax of its probabilities is 1. `None` when no output
/// reads as classes, a label does not fit an `i64`, or a score row contains NaN.
#[must_use]
pub fn predicted_classes(outputs: &[Tensor]) -> Option<Vec<i64>> {
    let labels = outputs
        .iter()
        .find(|t| is_label_shape(t.shape()) && !t.data().is_empty() && integer_like(t.data()));
    if let Some(labels) = labels {
        return match labels.data() {
            TensorData::Bool(v) => Some(v.iter().map(|b| i64::from(*b)).collect()),
            TensorData::U8(v) => Some(v.iter().map(|x| i64::from(*x)).collect()),
            TensorData::U16(v) => Some(v.iter().map(|x| i64::from(*x)).collect()),
            TensorData::U32(v) => Some(v.iter().map(|x| i64::from(*x)).collect()),
            TensorData::U64(v) => v.iter().map(|x| i64::try_from(*x).ok()).collect(),
            TensorData::I8(v) => Some(v.iter().map(|x| i64::from(*x)).collect()),
            TensorData::I16(v) => Some(v.iter().map(|x| i64::from(*x)).collect()),
            TensorData::I32(v) => Some(v.iter().map(|x| i64::from(*x)).collect()),
            TensorData::I64(v) => Some(v.clone()),
            _ => None,
        };
    }
    let scores = outputs.iter().find(|t| {
        is_score_shape(t.shape())
            && !t.data().is_empty()
            && matches!(
                t.data(),
                TensorData::F32(_) | TensorData::F64(_) | TensorData::F16(_) | TensorData::BF16(_)
            )
    })?;
    let width = scores.shape().last().copied()?;
    let argmaxes: Option<Vec<usize>> = match scores.data() {
        TensorData::F32(v) => v.chunks(width).map(argmax).collect(),
        TensorData::F64(v) => v.chunks(width).map(argmax).collect(),
        TensorData::F16(v) => v.chunks(width).map(argmax).collect(),
        TensorData::BF16(v) => v.chunks(width).map(argmax).collect(),
        _ => None,
    };
    argmaxes?
        .into_iter()
        .map(|i| i64::try_from(i).ok())
        .collect()
}

/// A float output `[…, K]` with K ≥ 2 whose last axis holds one score per class.
fn is_score_shape(shape: &[usize]) -> bool {
    shape.len() >= 2 && shape.last().is_some_and(|k| *k >= 2)
}

/// A non-float output `[]`, `[N]` or `[N, 1]`: one class label per row.
fn is_label_shape(shape: &[usize]) -> bool {
    shape.len() <= 1 || (shape.len() == 2 && shape[1] == 1)
}

fn integer_like(data: &TensorData) -> bool {
    !matches!(
        data,
        TensorData::F32(_)
            | TensorData::F64(_)
            | TensorData::F16(_)
            | TensorData::BF16(_)
            | TensorData::String(_)
    )
}

/// Index of the largest element (the first on ties, as numpy does); `None` for an empty row or
/// one with a NaN, which has no meaningful maximum.
fn argmax<T: Element>(row: &[T]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, x) in row.iter().enumerate() {
        let x = x.to_f64();
        if x.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Running totals over the outputs of one request.
struct Accumulator {
    classified: bool,
    agreed: bool,
    mismatched: bool,
    incomparable: bool,
    abs_sum: f64,
    rel_sum: f64,
    elements: usize,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            classified: false,
            agreed: true,
            mismatched: false,
            incomparable: false,
            abs_sum: 0.0,
            rel_sum: 0.0,
            elements: 0,
        }
    }
}

impl Accumulator {
    fn mismatch(&mut self) {
        self.mismatched = true;
        self.classify(false);
    }

    fn classify(&mut self, agreed: bool) {
        self.classified = true;
        self.agreed &= agreed;
    }

    /// One element pair, numerically; equal values (infinities included) differ by zero.
    fn numeric(&mut self, a: f64, b: f64, equal: bool) {
        self.elements += 1;
        if equal {
            return;
        }
        let diff = (a - b).abs();
        if diff.is_finite() {
            self.abs_sum += diff;
            self.rel_sum += diff / a.abs().max(REL_EPSILON);
        } else {
            self.incomparable = true;
        }
    }

    /// One element pair that is only equal or not (labels, strings).
    fn discrete(&mut self, equal: bool) {
        self.elements += 1;
        if !equal {
            self.abs_sum += 1.0;
            self.rel_sum += 1.0;
        }
    }

    fn finish(self) -> Comparison {
        let mean = |sum: f64| {
            if self.mismatched || self.incomparable {
                f64::INFINITY
            } else if self.elements == 0 {
                0.0
            } else {
                sum / self.elements as f64
            }
        };
        Comparison {
            classified: self.classified,
            agreed: self.classified && self.agreed,
            mismatched: self.mismatched,
            mean_abs_diff: mean(self.abs_sum),
            mean_rel_diff: mean(self.rel_sum),
        }
    }
}

/// A numeric element type, seen as `f64` for differences.
trait Element: Copy + PartialEq {
    const FLOAT: bool;
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($float:expr => $($ty:ty),+) => {
        $(impl Element for $ty {
            const FLOAT: bool = $float;
            fn to_f64(self) -> f64 {
                // Lossy only past 2^53, where a difference is large anyway.
                self as f64
            }
        })+
    };
}

element!(true => f32, f64);
element!(false => u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! half_element {
    ($($ty:ty),+) => {
        $(impl Element for $ty {
            const FLOAT: bool = true;
            fn to_f64(self) -> f64 {
                <$ty>::to_f64(self)
            }
        })+
    };
}

half_element!(half::f16, half::bf16);

impl Element for bool {
    const FLOAT: bool = false;
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}

fn compare_output(p: &Tensor, s: &Tensor, acc: &mut Accumulator) {
    if p.datatype() != s.datatype() || p.shape() != s.shape() {
        acc.mismatch();
        return;
    }
    let shape = p.shape();
    match (p.data(), s.data()) {
        (TensorData::Bool(a), TensorData::Bool(b)) => elements(a, b, shape, acc),
        (TensorData::U8(a), TensorData::U8(b)) => elements(a, b, shape, acc),
        (TensorData::U16(a), TensorData::U16(b)) => elements(a, b, shape, acc),
        (TensorData::U32(a), TensorData::U32(b)) => elements(a, b, shape, acc),
        (TensorData::U64(a), TensorData::U64(b)) => elements(a, b, shape, acc),
        (TensorData::I8(a), TensorData::I8(b)) => elements(a, b, shape, acc),
        (TensorData::I16(a), TensorData::I16(b)) => elements(a, b, shape, acc),
        (TensorData::I32(a), TensorData::I32(b)) => elements(a, b, shape, acc),
        (TensorData::I64(a), TensorData::I64(b)) => elements(a, b, shape, acc),
        (TensorData::F32(a), TensorData::F32(b)) => elements(a, b, shape, acc),
        (TensorData::F64(a), TensorData::F64(b)) => elements(a, b, shape, acc),
        (TensorData::F16(a), TensorData::F16(b)) => elements(a, b, shape, acc),
        (TensorData::BF16(a), TensorData::BF16(b)) => elements(a, b, shape, acc),
        (TensorData::String(a), TensorData::String(b)) => {
            if is_label_shape(shape) && !a.is_empty() {
                acc.classify(a == b);
            }
            for (x, y) in a.iter().zip(b) {
                acc.discrete(x == y);
            }
        }
        // Same datatype but a variant added later: nothing to compare it by yet.
        _ => acc.mismatch(),
    }
}

/// Compares one pair of same-shaped numeric outputs.
fn elements<T: Element>(a: &[T], b: &[T], shape: &[usize], acc: &mut Accumulator) {
    if T::FLOAT {
        if is_score_shape(shape) && !a.is_empty() {
            let width = shape.last().copied().unwrap_or(1);
            let rows_agree = a.chunks(width).zip(b.chunks(width)).all(|(x, y)| {
                // A NaN row has no argmax: it agrees with nothing.
                matches!((argmax(x), argmax(y)), (Some(i), Some(j)) if i == j)
            });
            acc.classify(rows_agree);
        }
        for (x, y) in a.iter().zip(b) {
            acc.numeric(x.to_f64(), y.to_f64(), x == y);
        }
    } else if is_label_shape(shape) {
        if !a.is_empty() {
            acc.classify(a == b);
        }
        for (x, y) in a.iter().zip(b) {
            acc.discrete(x == y);
        }
    } else {
        for (x, y) in a.iter().zip(b) {
            acc.numeric(x.to_f64(), y.to_f64(), x == y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::traffic::{VersionAnalysis, VersionCounters};

    fn f32s(name: &str, shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor::new(name, shape, values.to_vec()).unwrap()
    }

    fn i64s(name: &str, shape: Vec<usize>, values: &[i64]) -> Tensor {
        Tensor::new(name, shape, values.to_vec()).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn identical_outputs_agree_with_no_difference() {
        let outputs = vec![
            i64s("label", vec![2], &[1, 0]),
            f32s("probabilities", vec![2, 2], &[0.3, 0.7, 0.9, 0.1]),
        ];
        let c = compare(&outputs, &outputs);
        assert_eq!(
            c,
            Comparison {
                classified: true,
                agreed: true,
                mismatched: false,
                mean_abs_diff: 0.0,
                mean_rel_diff: 0.0,
            }
        );
    }

    #[test]
    fn a_flipped_argmax_is_a_disagreement() {
        let primary = [f32s("p", vec![1, 3], &[0.2, 0.5, 0.3])];
        let shadow = [f32s("p", vec![1, 3], &[0.2, 0.3, 0.5])];
        let c = compare(&primary, &shadow);
        assert!(c.classified);
        assert!(!c.agreed);
        // |0.2|, |0.2| over three elements; the values are f32, hence the tolerance.
        assert!((c.mean_abs_diff - 0.4 / 3.0).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn differences_are_means_over_every_element() {
        let primary = [f32s("y", vec![3], &[1.0, 2.0, 4.0])];
        let shadow = [f32s("y", vec![3], &[1.5, 2.0, 3.0])];
        let c = compare(&primary, &shadow);
        assert!(!c.classified, "a rank-1 float output is a regression");
        assert!(!c.agreed);
        // |diffs| 0.5, 0, 1 → 0.5; relative 0.5/1, 0, 1/4 → 0.25.
        assert!(close(c.mean_abs_diff, 0.5), "{c:?}");
        assert!(close(c.mean_rel_diff, 0.25), "{c:?}");
    }

    #[test]
    fn the_relative_difference_to_an_exact_zero_divides_by_epsilon() {
        let primary = [Tensor::new("y", vec![1], vec![0.0_f64]).unwrap()];
        let shadow = [Tensor::new("y", vec![1], vec![1e-12_f64]).unwrap()];
        let c = compare(&primary, &shadow);
        assert!(close(c.mean_abs_diff, 1e-12));
        assert!(close(c.mean_rel_diff, 1.0));
    }

    #[test]
    fn differences_are_weighted_by_elements_across_outputs() {
        let primary = [
            f32s("a", vec![1], &[1.0]),
            f32s("b", vec![3], &[0.0, 0.0, 0.0]),
        ];
        let shadow = [
            f32s("a", vec![1], &[3.0]),
            f32s("b", vec![3], &[0.0, 0.0, 0.0]),
        ];
        let c = compare(&primary, &shadow);
        assert!(close(c.mean_abs_diff, 0.5), "{c:?}");
    }

    #[test]
    fn a_batch_agrees_only_when_every_row_agrees() {
        let primary = [f32s("p", vec![3, 2], &[0.9, 0.1, 0.2, 0.8, 0.6, 0.4])];
        let same = [f32s("p", vec![3, 2], &[0.7, 0.3, 0.4, 0.6, 0.51, 0.49])];
        let one_row_flipped = [f32s("p", vec![3, 2], &[0.9, 0.1, 0.2, 0.8, 0.4, 0.6])];
        let agreeing = compare(&primary, &same);
        assert!(agreeing.classified && agreeing.agreed);
        assert!(agreeing.mean_abs_diff > 0.0);
        let flipped = compare(&primary, &one_row_flipped);
        assert!(flipped.classified && !flipped.agreed);
    }

    #[test]
    fn scores_of_a_higher_rank_are_compared_along_the_last_axis() {
        // Two sequences of two tokens over three classes: argmax per (sequence, token).
        let primary = [f32s(
            "p",
            vec![2, 2, 3],
            &[1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 0., 0.],
        )];
        let shadow = [f32s(
            "p",
            vec![2, 2, 3],
            &[1., 0., 0., 0., 1., 0., 0., 0., 1., 0., 1., 0.],
        )];
        assert!(!compare(&primary, &shadow).agreed);
        assert!(compare(&primary, &primary).agreed);
    }

    #[test]
    fn integer_labels_are_compared_as_classes() {
        let primary = [i64s("label", vec![3], &[4, 7, 9])];
        let same = compare(&primary, &primary);
        assert!(same.classified && same.agreed);
        assert_eq!(same.mean_abs_diff, 0.0);
        let one_differs = compare(&primary, &[i64s("label", vec![3], &[4, 7, 1])]);
        assert!(one_differs.classified && !one_differs.agreed);
        // A differing label counts 1, whatever the numeric distance between class ids.
        assert!(close(one_differs.mean_abs_diff, 1.0 / 3.0));
        let column = [i64s("label", vec![2, 1], &[1, 2])];
        let column_flipped = [i64s("label", vec![2, 1], &[2, 1])];
        assert!(!compare(&column, &column_flipped).agreed);
        assert!(compare(&column, &column).agreed);
    }

    #[test]
    fn string_labels_are_compared_as_classes() {
        let labels = |v: &[&str]| {
            Tensor::new(
                "label",
                vec![v.len()],
                v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let c = compare(&[labels(&["cat", "dog"])], &[labels(&["cat", "cow"])]);
        assert!(c.classified && !c.agreed);
        assert!(close(c.mean_abs_diff, 0.5));
    }

    #[test]
    fn integer_outputs_that_are_not_labels_differ_numerically() {
        let primary = [i64s("counts", vec![1, 2], &[10, 20])];
        let shadow = [i64s("counts", vec![1, 2], &[10, 23])];
        let c = compare(&primary, &shadow);
        assert!(!c.classified);
        assert!(close(c.mean_abs_diff, 1.5));
        assert!(close(c.mean_rel_diff, 3.0 / 20.0 / 2.0));
    }

    #[test]
    fn nan_is_a_disagreement_with_an_infinite_difference_and_never_panics() {
        let scores = [f32s("p", vec![1, 2], &[0.9, 0.1])];
        let nan_scores = [f32s("p", vec![1, 2], &[f32::NAN, 0.1])];
        for (a, b) in [
            (&scores, &nan_scores),
            (&nan_scores, &scores),
            (&nan_scores, &nan_scores),
        ] {
            let c = compare(a, b);
            assert!(c.classified && !c.agreed, "{c:?}");
            assert_eq!(c.mean_abs_diff, f64::INFINITY);
            assert_eq!(c.mean_rel_diff, f64::INFINITY);
        }
        let regression = compare(
            &[f32s("y", vec![2], &[1.0, f32::NAN])],
            &[f32s("y", vec![2], &[1.0, 2.0])],
        );
        assert!(!regression.classified);
        assert_eq!(regression.mean_abs_diff, f64::INFINITY);
    }

    #[test]
    fn equal_infinities_do_not_differ_and_opposite_ones_differ_infinitely() {
        let plus = [f32s("y", vec![1], &[f32::INFINITY])];
        let minus = [f32s("y", vec![1], &[f32::NEG_INFINITY])];
        assert_eq!(compare(&plus, &plus).mean_abs_diff, 0.0);
        assert_eq!(compare(&plus, &minus).mean_abs_diff, f64::INFINITY);
    }

    #[test]
    fn outputs_of_a_different_shape_or_dtype_are_a_mismatch() {
        let primary = [f32s("p", vec![1, 2], &[0.9, 0.1])];
        let wider = [f32s("p", vec![1, 3], &[0.9, 0.1, 0.0])];
        let doubles = [Tensor::new("p", vec![1, 2], vec![0.9_f64, 0.1]).unwrap()];
        for shadow in [&wider[..], &doubles[..]] {
            let c = compare(&primary, shadow);
            assert!(c.mismatched && c.classified && !c.agreed, "{c:?}");
            assert_eq!(c.mean_abs_diff, f64::INFINITY);
        }
    }

    #[test]
    fn outputs_only_one_side_has_are_ignored_but_none_in_common_is_a_mismatch() {
        let primary = [f32s("y", vec![1], &[1.0])];
        let shadow_with_extra = [f32s("y", vec![1], &[1.0]), f32s("debug", vec![1], &[5.0])];
        let c = compare(&primary, &shadow_with_extra);
        assert!(!c.mismatched);
        assert_eq!(c.mean_abs_diff, 0.0);
        let renamed = [f32s("z", vec![1], &[1.0])];
        assert!(compare(&primary, &renamed).mismatched);
        assert!(compare(&primary, &[]).mismatched);
        assert!(!compare(&[], &[]).mismatched);
    }

    #[test]
    fn empty_outputs_are_not_classified() {
        let empty = [f32s("p", vec![0, 3], &[])];
        let c = compare(&empty, &empty);
        assert!(!c.classified && !c.mismatched);
        assert_eq!(c.mean_abs_diff, 0.0);
    }

    #[test]
    fn recording_comparisons_fills_the_shadow_counters_consistently() {
        let mut counters = ShadowCounters::default();
        let primary = [f32s("p", vec![1, 2], &[0.9, 0.1])];
        let close_call = [f32s("p", vec![1, 2], &[0.85, 0.15])];
        let flipped = [f32s("p", vec![1, 2], &[0.1, 0.9])];
        let nan = [f32s("p", vec![1, 2], &[f32::NAN, 0.1])];
        compare(&primary, &primary).record(&mut counters);
        compare(&primary, &close_call).record(&mut counters);
        compare(&primary, &flipped).record(&mut counters);
        compare(&primary, &nan).record(&mut counters);
        compare(&primary, &[f32s("other", vec![1], &[0.0])]).record(&mut counters);
        assert_eq!(counters.compared, 5);
        assert_eq!(counters.unmeasured, 2);
        assert_eq!(counters.classified, 5);
        assert_eq!(counters.agreed, 2);
        // 0 + 0.05 + 0.8 (f32 rounding aside); the NaN and the mismatch add nothing to the sums…
        assert!((counters.abs_diff_sum - 0.85).abs() < 1e-6, "{counters:?}");
        assert!(counters.rel_diff_sum.is_finite());
        // …but land in the top bucket, so the distribution still shows them.
        assert_eq!(counters.abs_diff_buckets, vec![1, 0, 0, 0, 0, 1, 1, 2]);
        assert_eq!(
            counters.abs_diff_buckets.iter().sum::<u64>(),
            counters.compared
        );
        // The counters still travel as JSON.
        let json = serde_json::to_string(&counters).unwrap();
        assert_eq!(
            serde_json::from_str::<ShadowCounters>(&json).unwrap(),
            counters
        );

        let analysis = VersionAnalysis::from_counters(
            2,
            "shadow",
            &VersionCounters {
                shadow: Some(counters),
                ..VersionCounters::default()
            },
        );
        assert_eq!(analysis.shadow_agreement, Some(0.4));
        assert_eq!(analysis.shadow_compared, 5);
        // The mean is over the three measured comparisons, not all five.
        let mean = analysis.shadow_mean_abs_diff.unwrap();
        assert!((mean - 0.85 / 3.0).abs() < 1e-6, "{mean}");
    }

    #[test]
    fn predicted_classes_prefer_labels_over_the_argmax_of_scores() {
        let outputs = [
            f32s("probabilities", vec![2, 3], &[0.1, 0.7, 0.2, 0.5, 0.2, 0.3]),
            i64s("label", vec![2], &[7, 3]),
        ];
        assert_eq!(predicted_classes(&outputs), Some(vec![7, 3]));
        assert_eq!(predicted_classes(&outputs[..1]), Some(vec![1, 0]));
        let bools = [Tensor::new("is_fraud", vec![2, 1], vec![true, false]).unwrap()];
        assert_eq!(predicted_classes(&bools), Some(vec![1, 0]));
        let top_k_then_scores = [
            i64s("top_k", vec![1, 2], &[2, 0]),
            f32s("scores", vec![1, 3], &[0.3, 0.2, 0.5]),
        ];
        assert_eq!(predicted_classes(&top_k_then_scores), Some(vec![2]));
    }

    #[test]
    fn predicted_classes_are_absent_for_regressions_nan_scores_and_huge_labels() {
        assert_eq!(
            predicted_classes(&[f32s("y", vec![2, 1], &[0.5, 0.7])]),
            None
        );
        assert_eq!(
            predicted_classes(&[f32s("p", vec![1, 2], &[f32::NAN, 0.1])]),
            None
        );
        let huge = Tensor::new("label", vec![1], vec![u64::MAX]).unwrap();
        assert_eq!(predicted_classes(&[huge]), None);
        assert_eq!(predicted_classes(&[]), None);
    }

    #[test]
    fn ties_go_to_the_first_maximum_as_in_numpy() {
        assert_eq!(
            predicted_classes(&[f32s("p", vec![1, 3], &[0.4, 0.4, 0.2])]),
            Some(vec![0])
        );
    }
}
