//! Building a training profile from data, in two streaming passes whatever the format: the
//! first keeps a bounded reservoir sample of each column (for the quantile edges) and its exact
//! summary, the second counts every row into the bins ([`profile_rows`]). Memory is
//! `columns × reservoir_size × 8` bytes, whatever the file's size.
//!
//! The formats are readers of rows on top: [`csv`] and, with feature `parquet`, [`parquet`];
//! [`profile_file`] picks by the file's content. The CLI (`ferry profile`, `ferry model push
//! --profile-data`) builds profiles with this; the registry only validates them
//! ([`super::profile`]).

pub mod csv;
#[cfg(feature = "parquet")]
pub mod parquet;

use std::collections::BTreeSet;
use std::path::Path;

use super::profile::{
    DEFAULT_BINS, DEFAULT_RESERVOIR, DEFAULT_SEED, FeatureProfile, InputProfile, MAX_BINS,
    MAX_NAME_LEN, MIN_BINS, Summary, bucket, check_name,
};

pub use csv::{profile_csv, profile_csv_file};

/// Builds the profile of input `input` from the file at `path`: Parquet when it starts with the
/// `PAR1` magic (with feature `parquet`), CSV otherwise.
///
/// # Errors
/// As [`csv::profile_csv`] or [`parquet::profile_parquet_file`].
pub fn profile_file(
    path: &Path,
    input: &str,
    options: &ProfileOptions,
) -> std::result::Result<InputProfile, ProfileError> {
    #[cfg(feature = "parquet")]
    if parquet::is_parquet(path) {
        return parquet::profile_parquet_file(path, input, options);
    }
    profile_csv_file(path, input, options)
}

/// Exact count, mean, standard deviation (Welford's one-pass update, stable where the naive sum
/// of squares cancels), minimum and maximum of a stream of values.
#[derive(Debug, Clone, Default)]
pub struct SummaryBuilder {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    non_finite: u64,
}

impl SummaryBuilder {
    /// Adds one value; NaN and infinities are only counted (as `non_finite`).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            self.non_finite += 1;
            return;
        }
        self.count += 1;
        if self.count == 1 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// The summary; `None` before the first finite value.
    pub fn finish(&self) -> Option<Summary> {
        (self.count > 0).then(|| Summary {
            count: self.count,
            mean: self.mean,
            std: (self.m2 / self.count as f64).max(0.0).sqrt(),
            min: self.min,
            max: self.max,
            non_finite: self.non_finite,
        })
    }
}

/// SplitMix64: a tiny generator with a fixed, documented output, so that a seed gives the same
/// sample on every platform and with every version of every crate.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-32 for any n a reservoir sees).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// A uniform sample of at most `capacity` values of a stream (Vitter's algorithm R).
#[derive(Debug, Clone)]
pub struct Reservoir {
    capacity: usize,
    seen: u64,
    values: Vec<f64>,
    rng: SplitMix64,
}

impl Reservoir {
    /// An empty reservoir; the same seed and stream give the same sample.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Reservoir {
            capacity: capacity.max(1),
            seen: 0,
            values: Vec::new(),
            rng: SplitMix64(seed),
        }
    }

    /// Offers one value.
    pub fn push(&mut self, x: f64) {
        self.seen += 1;
        if self.values.len() < self.capacity {
            self.values.push(x);
        } else {
            let j = self.rng.below(self.seen);
            if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.values.get_mut(j)) {
                *slot = x;
            }
        }
    }

    /// The sample, in the order it is held.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The sample, sorted.
    pub fn into_sorted(mut self) -> Vec<f64> {
        self.values.sort_by(f64::total_cmp);
        self.values
    }
}

/// Edges of `bins` equal-frequency bins: the exact minimum, the `k/bins` quantiles of the
/// (sorted, finite) `sample` for `k = 1…bins-1`, and the value just above the exact maximum.
/// Equal quantiles collapse into one edge, so a column with few distinct values gets fewer bins
/// and a constant column exactly one.
pub fn quantile_edges(sorted_sample: &[f64], min: f64, max: f64, bins: usize) -> Vec<f64> {
    let mut edges = Vec::with_capacity(bins + 1);
    edges.push(min);
    let m = sorted_sample.len();
    if m > 0 {
        for k in 1..bins {
            // The lower quantile: always a value of the data, so that ties sit on an edge and
            // stay together in the bin that starts there.
            let index = (k * m / bins).min(m - 1);
            let q = sorted_sample[index];
            if q > min && q <= max {
                edges.push(q);
            }
        }
    }
    // Just above the maximum, so that the maximum is inside the last bin ([lo, hi) bins); at
    // the very top of the f64 range the maximum itself, which then counts as overflow.
    let top = max.next_up();
    edges.push(if top.is_finite() { top } else { max });
    edges.dedup();
    edges
}

/// Whether a CSV file starts with a header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Header {
    /// A header when any cell of the first row is not a number.
    #[default]
    Auto,
    /// The first row is a header.
    Present,
    /// Every row is data.
    Absent,
}

/// How [`profile_csv`] reads the data and bins it.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Bins per feature, [`MIN_BINS`] to [`MAX_BINS`].
    pub bins: usize,
    /// Whether the first row is a header.
    pub header: Header,
    /// Feature names, one per column, overriding the header (or the default `f0, f1, …`).
    pub feature_names: Option<Vec<String>>,
    /// Values sampled per column to place the quantile edges.
    pub reservoir_size: usize,
    /// Seed of the sample.
    pub seed: u64,
    /// The field delimiter, `b','` by default.
    pub delimiter: u8,
    /// Profile each value as the `f32` it becomes in a float32 input tensor (the default: ONNX
    /// tabular inputs are almost always float32). Without it, a training value like 0.7 sits on
    /// an edge as f64 0.7 while live data arrives as f32 0.69999999, one bin lower, and a
    /// discrete feature looks drifted. Turn it off for float64 (or integer) inputs.
    pub round_to_f32: bool,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            bins: DEFAULT_BINS,
            header: Header::Auto,
            feature_names: None,
            reservoir_size: DEFAULT_RESERVOIR,
            seed: DEFAULT_SEED,
            delimiter: b',',
            round_to_f32: true,
        }
    }
}

/// Why a profile could not be built from data.
///
/// The builder runs in the CLI and in scripts, never behind an HTTP route, so it has its own
/// error type whose messages point into the file instead of mapping to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The data could not be opened or read.
    #[error("reading the data failed: {0}")]
    Io(#[from] std::io::Error),
    /// The CSV is malformed (bad quoting, invalid UTF-8…).
    #[error("the CSV is malformed: {0}")]
    Csv(String),
    /// A cell is not a number.
    #[error("line {line}, column {column}: {message}")]
    Cell {
        /// The 1-based line in the file.
        line: u64,
        /// The column's name and number, e.g. `` `age` (2) ``.
        column: String,
        /// What is wrong with it.
        message: String,
    },
    /// The options or the data as a whole are unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Builds the profile of tabular input `input` from rows of numbers (one per feature, NaN for a
/// missing value) that `open` yields afresh for each of the two passes, as [`profile_csv`] does
/// for CSV: any other tabular format (Parquet, a database cursor…) plugs in here. `header`
/// names the columns when the source carries names (overridden by
/// [`ProfileOptions::feature_names`]); the CSV-only [`ProfileOptions::header`] and
/// [`ProfileOptions::delimiter`] are ignored.
///
/// # Errors
/// As [`profile_csv`]; a row of another width than the first is [`ProfileError::Invalid`], and
/// the source's own errors pass through.
pub fn profile_rows<I>(
    mut open: impl FnMut() -> std::result::Result<I, ProfileError>,
    header: Option<Vec<String>>,
    input: &str,
    options: &ProfileOptions,
) -> std::result::Result<InputProfile, ProfileError>
where
    I: Iterator<Item = std::result::Result<Vec<f64>, ProfileError>>,
{
    check_options(input, options)?;
    let round = |values: &mut Vec<f64>| {
        if options.round_to_f32 {
            for x in values.iter_mut() {
                *x = f64::from(*x as f32);
            }
        }
    };
    let check_width = |values: &[f64], width: usize, row: u64| {
        if values.len() == width {
            Ok(())
        } else {
            Err(ProfileError::Invalid(format!(
                "row {row} has {} values; the first row has {width}",
                values.len()
            )))
        }
    };
    let mut pass: Option<FirstPass> = None;
    let mut width = 0;
    for row in open()? {
        let mut values = row?;
        round(&mut values);
        let pass = pass.get_or_insert_with(|| {
            width = values.len();
            FirstPass::new(width, options)
        });
        check_width(&values, width, pass.rows + 1)?;
        pass.push(&values);
    }
    let Some(pass) = pass else {
        return Err(ProfileError::Invalid(
            "the data has no rows to profile".into(),
        ));
    };
    let rows = pass.rows;
    let names = feature_names(options, header, width)?;
    let mut features = pass.features(names, options.bins)?;
    let mut seen: u64 = 0;
    for row in open()? {
        let mut values = row?;
        round(&mut values);
        check_width(&values, width, seen + 1)?;
        count_row(&mut features, &values);
        seen += 1;
    }
    finish(input, features, rows, seen)
}

/// The bins and the input name are usable.
pub(super) fn check_options(
    input: &str,
    options: &ProfileOptions,
) -> std::result::Result<(), ProfileError> {
    if !(MIN_BINS..=MAX_BINS).contains(&options.bins) {
        return Err(ProfileError::Invalid(format!(
            "bins must be between {MIN_BINS} and {MAX_BINS}, got {}",
            options.bins
        )));
    }
    if check_name(input).is_err() {
        return Err(ProfileError::Invalid(format!(
            "input name {} is not usable: it must be 1 to {MAX_NAME_LEN} printable bytes",
            crate::names::printable(input)
        )));
    }
    Ok(())
}

/// The first pass over the rows: per column an exact summary and a bounded sample for the
/// quantile edges.
pub(super) struct FirstPass {
    summaries: Vec<SummaryBuilder>,
    samples: Vec<Reservoir>,
    rows: u64,
}

impl FirstPass {
    pub(super) fn new(width: usize, options: &ProfileOptions) -> Self {
        FirstPass {
            summaries: vec![SummaryBuilder::default(); width],
            samples: (0..width)
                .map(|c| {
                    // One stream per column, so a column's sample does not depend on the
                    // others' non-finite values.
                    let seed = options.seed ^ (c as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                    Reservoir::new(options.reservoir_size, seed)
                })
                .collect(),
            rows: 0,
        }
    }

    pub(super) fn push(&mut self, values: &[f64]) {
        for ((x, summary), sample) in values
            .iter()
            .zip(&mut self.summaries)
            .zip(&mut self.samples)
        {
            summary.push(*x);
            if x.is_finite() {
                sample.push(*x);
            }
        }
        self.rows += 1;
    }

    /// The features with their edges and empty counts.
    pub(super) fn features(
        self,
        names: Vec<String>,
        bins: usize,
    ) -> std::result::Result<Vec<FeatureProfile>, ProfileError> {
        let mut features = Vec::with_capacity(names.len());
        for (column, ((name, summary), sample)) in names
            .into_iter()
            .zip(self.summaries)
            .zip(self.samples)
            .enumerate()
        {
            let Some(summary) = summary.finish() else {
                return Err(ProfileError::Invalid(format!(
                    "column `{name}` ({column}) has no finite value to profile; drop it"
                )));
            };
            if !(summary.mean.is_finite() && summary.std.is_finite()) {
                return Err(ProfileError::Invalid(format!(
                    "column `{name}` ({column}) has values too large to summarize in f64"
                )));
            }
            let edges = quantile_edges(&sample.into_sorted(), summary.min, summary.max, bins);
            features.push(FeatureProfile {
                name,
                column,
                counts: vec![0; edges.len() + 1],
                edges,
                summary,
            });
        }
        Ok(features)
    }
}

/// Counts one row into the bins, by the same rule serving uses.
pub(super) fn count_row(features: &mut [FeatureProfile], values: &[f64]) {
    for (x, feature) in values.iter().zip(features) {
        let b = bucket(&feature.edges, *x);
        if let Some(count) = feature.counts.get_mut(b) {
            *count += 1;
        }
    }
}

/// The profile, once the second pass saw as many rows as the first.
pub(super) fn finish(
    input: &str,
    features: Vec<FeatureProfile>,
    rows: u64,
    seen: u64,
) -> std::result::Result<InputProfile, ProfileError> {
    if seen != rows {
        return Err(ProfileError::Invalid(format!(
            "the data changed while it was read: {rows} rows in the first pass, {seen} in the second"
        )));
    }
    Ok(InputProfile {
        input: input.to_string(),
        features,
        summary: None,
    })
}

/// The features' names: the override, else the header, else `f0, f1, …`.
pub(super) fn feature_names(
    options: &ProfileOptions,
    header: Option<Vec<String>>,
    width: usize,
) -> std::result::Result<Vec<String>, ProfileError> {
    let (names, from) = match (&options.feature_names, header) {
        (Some(names), _) => (names.clone(), "feature_names"),
        (None, Some(header)) => (header, "the header"),
        (None, None) => return Ok((0..width).map(|c| format!("f{c}")).collect()),
    };
    if names.len() != width {
        return Err(ProfileError::Invalid(format!(
            "{from} names {} features, but the data has {width} columns",
            names.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for name in &names {
        if let Err(why) = check_name(name) {
            return Err(ProfileError::Invalid(format!(
                "{from}: feature name {} {why}",
                crate::names::printable(name)
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(ProfileError::Invalid(format!(
                "{from} names feature {} twice",
                crate::names::printable(name)
            )));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::drift::profile::Profile;

    fn build(
        csv: &str,
        options: &ProfileOptions,
    ) -> std::result::Result<InputProfile, ProfileError> {
        profile_csv(|| Ok(csv.as_bytes()), "x", options)
    }

    #[test]
    fn rows_from_any_source_profile_like_csv_and_are_checked_the_same_way() {
        let rows: Vec<Vec<f64>> = (0..200)
            .map(|i| vec![f64::from(i), f64::from(i % 3), f64::NAN])
            .map(|mut r| {
                if r[0] as i32 % 5 != 0 {
                    r[2] = r[0] * 0.25;
                }
                r
            })
            .collect();
        let csv: String = std::iter::once("a,b,c\n".to_string())
            .chain(rows.iter().map(|r| format!("{},{},{}\n", r[0], r[1], r[2])))
            .collect();
        let open =
            |rows: Vec<Vec<f64>>| move || Ok(rows.clone().into_iter().map(Ok::<_, ProfileError>));
        let header = Some(vec!["a".to_string(), "b".to_string(), "c".to_string()]);
        let options = ProfileOptions::default();
        let from_rows = profile_rows(open(rows.clone()), header.clone(), "x", &options).unwrap();
        assert_eq!(from_rows, build(&csv, &options).unwrap());

        let mut ragged = rows.clone();
        ragged[7].pop();
        let err = profile_rows(open(ragged), header.clone(), "x", &options).unwrap_err();
        assert_eq!(err.to_string(), "row 8 has 2 values; the first row has 3");
        let err = profile_rows(open(Vec::new()), header.clone(), "x", &options).unwrap_err();
        assert!(err.to_string().contains("no rows"), "{err}");
        let err = profile_rows(open(rows), Some(vec!["a".into()]), "x", &options).unwrap_err();
        assert!(err.to_string().contains("names 1 features"), "{err}");
    }

    fn options(bins: usize) -> ProfileOptions {
        ProfileOptions {
            bins,
            ..ProfileOptions::default()
        }
    }

    #[test]
    fn a_value_on_an_edge_goes_to_the_bin_that_starts_there_and_nan_overflows() {
        let edges = [1.0, 2.0, 3.0];
        assert_eq!(bucket(&edges, 0.5), 0);
        assert_eq!(bucket(&edges, 1.0), 1);
        assert_eq!(bucket(&edges, 1.5), 1);
        assert_eq!(bucket(&edges, 2.0), 2);
        assert_eq!(bucket(&edges, 2.999), 2);
        assert_eq!(bucket(&edges, 3.0), 3);
        assert_eq!(bucket(&edges, 1e9), 3);
        assert_eq!(bucket(&edges, f64::NAN), 3);
        assert_eq!(bucket(&edges, f64::INFINITY), 3);
        assert_eq!(bucket(&edges, f64::NEG_INFINITY), 0);
        assert_eq!(bucket(&[], 5.0), 0);
    }

    #[test]
    fn ten_values_in_five_bins_are_two_per_bin_and_the_maximum_is_inside() {
        let csv = "v\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
        let p = build(csv, &options(5)).unwrap();
        let f = &p.features[0];
        assert_eq!(f.name, "v");
        assert_eq!(f.column, 0);
        // Sorted sample 1..=10; the k/5 lower quantiles are at indexes 2, 4, 6, 8.
        assert_eq!(f.edges, vec![1.0, 3.0, 5.0, 7.0, 9.0, 10f64.next_up()]);
        assert_eq!(f.counts, vec![0, 2, 2, 2, 2, 2, 0]);
        assert_eq!(f.summary.count, 10);
        assert_eq!(f.summary.mean, 5.5);
        // Population variance of 1..=10 is (10² − 1) / 12 = 8.25.
        assert!((f.summary.std - 8.25f64.sqrt()).abs() < 1e-12);
        assert_eq!((f.summary.min, f.summary.max), (1.0, 10.0));
    }

    #[test]
    fn duplicate_edges_collapse_and_a_constant_column_is_one_bin() {
        // Column a: eight zeros and two ones. Column b: constant.
        let csv = "a,b\n0,3\n0,3\n0,3\n0,3\n0,3\n0,3\n0,3\n0,3\n1,3\n1,3\n";
        let p = build(csv, &options(10)).unwrap();
        let a = &p.features[0];
        assert_eq!(a.edges, vec![0.0, 1.0, 1f64.next_up()]);
        assert_eq!(a.counts, vec![0, 8, 2, 0]);
        let b = &p.features[1];
        assert_eq!(b.edges, vec![3.0, 3f64.next_up()]);
        assert_eq!(b.counts, vec![0, 10, 0]);
        assert_eq!(b.summary.std, 0.0);
    }

    #[test]
    fn without_a_header_features_are_named_by_column_or_by_the_override() {
        let csv = "1,10\n2,20\n3,30\n";
        let p = build(csv, &options(2)).unwrap();
        let names: Vec<&str> = p.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["f0", "f1"]);
        assert_eq!(p.features[1].column, 1);
        let named = ProfileOptions {
            feature_names: Some(vec!["age".into(), "income".into()]),
            ..options(2)
        };
        let p = build("a,b\n1,10\n2,20\n", &named).unwrap();
        assert_eq!(p.features[0].name, "age");
        assert_eq!(p.features[0].summary.count, 2, "the header is not data");
        let absent = ProfileOptions {
            header: Header::Absent,
            ..options(2)
        };
        let err = build("a,b\n1,2\n", &absent).unwrap_err().to_string();
        assert!(
            err.contains("line 1, column 0: `a` is not a number"),
            "{err}"
        );
    }

    #[test]
    fn csv_errors_name_the_line_and_the_column() {
        let err = build("age,income\n1,2\n3,abc\n", &options(2))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "line 3, column `income` (1): `abc` is not a number");
        let err = build("age,income\n1,2\n,4\n", &options(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("line 3, column `age` (0): the cell is empty"),
            "{err}"
        );
        let err = build("age,income\n1,2\n3\n", &options(2))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "line 3 has 1 columns; the first row has 2");
        let err = build("age,income\n", &options(2)).unwrap_err().to_string();
        assert!(err.contains("no rows"), "{err}");
        let err = build("a\nNaN\nNaN\n", &options(2)).unwrap_err().to_string();
        assert!(err.contains("column `a` (0) has no finite value"), "{err}");
        let wrong = ProfileOptions {
            feature_names: Some(vec!["only".into()]),
            ..options(2)
        };
        let err = build("1,2\n", &wrong).unwrap_err().to_string();
        assert!(err.contains("feature_names names 1 features, but the data has 2 columns"));
        for bins in [1, 51] {
            let err = build("1\n", &options(bins)).unwrap_err().to_string();
            assert!(err.contains("bins must be between 2 and 50"), "{err}");
        }
    }

    #[test]
    fn non_finite_training_values_are_counted_like_live_ones_and_left_out_of_the_summary() {
        let p = build("v\n1\n2\nNaN\ninf\n-inf\n3\n", &options(2)).unwrap();
        let f = &p.features[0];
        assert_eq!(f.summary.count, 3);
        assert_eq!(f.summary.non_finite, 3);
        assert_eq!(f.summary.mean, 2.0);
        // Edges 1, 2, 3⁺: -inf underflows, NaN and +inf overflow.
        assert_eq!(f.edges, vec![1.0, 2.0, 3f64.next_up()]);
        assert_eq!(f.counts, vec![1, 1, 2, 2]);
        Profile::new(vec![p]).validate().unwrap();
    }

    #[test]
    fn values_are_profiled_as_the_float32_the_model_receives() {
        // 0.7 is 0.699999988… as f32: a live f32 0.7 must land where the training 0.7 did.
        let p = build("v\n0.3\n0.7\n0.7\n0.9\n", &options(4)).unwrap();
        let f = &p.features[0];
        assert!(f.edges.contains(&f64::from(0.7f32)), "{:?}", f.edges);
        let mut live = crate::traffic::DriftCounters::default();
        live.record_rows(&p, &[0.3f32, 0.7, 0.7, 0.9], 1);
        assert_eq!(live.inputs["x"][0], f.counts);
        let exact = ProfileOptions {
            round_to_f32: false,
            ..options(4)
        };
        let p = build("v\n0.3\n0.7\n0.7\n0.9\n", &exact).unwrap();
        assert!(
            p.features[0].edges.contains(&0.7),
            "{:?}",
            p.features[0].edges
        );
    }

    #[test]
    fn data_that_changes_between_the_passes_is_refused() {
        let mut pass = 0;
        let err = profile_csv(
            || {
                pass += 1;
                Ok(if pass == 1 { "1\n2\n" } else { "1\n2\n3\n" }.as_bytes())
            },
            "x",
            &options(2),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("2 rows in the first pass, 3 in the second"),
            "{err}"
        );
    }

    #[test]
    fn the_reservoir_is_deterministic_and_uniform() {
        let fill = |seed| {
            let mut r = Reservoir::new(1000, seed);
            for i in 0..100_000 {
                r.push(f64::from(i));
            }
            r
        };
        let a = fill(7);
        assert_eq!(a.values(), fill(7).values());
        assert_ne!(a.values(), fill(8).values());
        assert_eq!(a.values().len(), 1000);
        // A uniform sample of 0..100000 has a mean near 50000 (σ of the mean ≈ 913).
        let mean = a.values().iter().sum::<f64>() / 1000.0;
        assert!((mean - 50_000.0).abs() < 4_000.0, "{mean}");
        // Small inputs are kept whole.
        let mut small = Reservoir::new(10, 1);
        for i in 0..5 {
            small.push(f64::from(i));
        }
        assert_eq!(small.into_sorted(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn the_same_data_gives_the_same_profile_and_edges_follow_the_quantiles() {
        // 20,000 rows with a reservoir of 1,000: edges come from the sample, counts from all rows.
        let mut csv = String::from("u\n");
        for i in 0..20_000 {
            csv.push_str(&format!("{}\n", (i * 7919) % 20_000));
        }
        let small = ProfileOptions {
            reservoir_size: 1000,
            ..options(4)
        };
        let a = build(&csv, &small).unwrap();
        assert_eq!(a, build(&csv, &small).unwrap());
        let f = &a.features[0];
        assert_eq!(f.counts.iter().sum::<u64>(), 20_000);
        // Uniform data in 4 quantile bins: each within a few percent of 5,000.
        for count in &f.counts[1..5] {
            assert!((4_000..=6_000).contains(count), "{:?}", f.counts);
        }
        assert_eq!((f.counts[0], f.counts[5]), (0, 0));
    }
}
