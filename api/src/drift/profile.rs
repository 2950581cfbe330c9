//! The training profile: per input feature, histogram bin edges and counts taken from the
//! training data, against which live inputs are compared.
//!
//! A profile is plain, versioned JSON (`format: 1`) stored with the model version
//! (`VersionMetadata.profile`). [`bucket`] is the one rule that puts a value into a bin; the
//! profile builder and serving's live counters both call it, so a value lands in the same bin on
//! both sides.
//!
//! # Bins
//! A feature with edges `e[0] < e[1] < … < e[n-1]` has `n + 1` buckets:
//! - bucket `0` is the underflow: `x < e[0]`;
//! - bucket `i` (1 ≤ i < n) is `[e[i-1], e[i])`: a value equal to an edge goes to the bin that
//!   starts at that edge (bins are closed on the left, open on the right);
//! - bucket `n` is the overflow: `x ≥ e[n-1]`.
//!
//! The builder puts `e[0]` at the training minimum and `e[n-1]` just above the training maximum
//! (the next representable `f64`), so every training value is inside a bin and the under- and
//! overflow buckets count only live values outside the training range.
//!
//! NaN has no place on the line: it counts in the **overflow** bucket, on both sides. A feature
//! that starts arriving as NaN in production therefore shows up as drift instead of silently
//! disappearing from the histogram. `-∞` falls in the underflow and `+∞` in the overflow by the
//! same rule as any other value.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ValidationError};

/// The profile format this registry writes and reads.
pub const PROFILE_FORMAT: u32 = 1;

/// Bins per feature when the builder is not told otherwise.
pub const DEFAULT_BINS: usize = 10;

/// Fewest bins the builder makes per feature.
pub const MIN_BINS: usize = 2;

/// Most bins the builder makes per feature.
pub const MAX_BINS: usize = 50;

/// Values kept per column to place the quantile edges: with 100,000 values a quantile is
/// within about ±0.3% of rank of the truth at 95% confidence, at 800 KB of memory per column.
pub const DEFAULT_RESERVOIR: usize = 100_000;

/// The default seed of the reservoir sample: a fixed seed makes the same data give the same
/// profile, byte for byte.
pub const DEFAULT_SEED: u64 = 0x5EED_F022_D21F_7001;

/// Most inputs a stored profile may describe.
pub const MAX_INPUTS: usize = 64;

/// Most features a stored profile may describe per input: every feature costs every serving
/// replica a histogram per version, and every analysis a score.
pub const MAX_FEATURES: usize = 4096;

/// Most edges a stored feature may have (profiles made by other tools may use more bins than
/// the builder's [`MAX_BINS`]).
pub const MAX_EDGES: usize = 256;

/// Longest input or feature name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// The bucket of `x` on `edges` (strictly increasing, finite): `0` is the underflow,
/// `edges.len()` the overflow. A value equal to an edge goes to the bin starting at that edge;
/// NaN goes to the overflow. See the [module docs](self) for why.
#[inline]
pub fn bucket(edges: &[f64], x: f64) -> usize {
    if x.is_nan() {
        return edges.len();
    }
    edges.partition_point(|e| *e <= x)
}

/// A training profile: what the training inputs looked like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The format version, [`PROFILE_FORMAT`].
    pub format: u32,
    /// One entry per profiled model input.
    pub inputs: Vec<InputProfile>,
}

/// The profile of one model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputProfile {
    /// The input's name in the model's signature.
    pub input: String,
    /// For a tabular `[N, F]` input: one histogram per feature (column).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureProfile>,
    /// For other shapes: a summary of all of the input's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// The histogram of one feature (column) of a tabular input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    /// The feature's name (from `feature_names`, the CSV header, or `f<column>`).
    pub name: String,
    /// Its column in the input's rows, from 0.
    pub column: usize,
    /// Bin edges, strictly increasing and finite (see [`bucket`]).
    pub edges: Vec<f64>,
    /// Training values per bucket: underflow, the bins, overflow (`edges.len() + 1` entries).
    pub counts: Vec<u64>,
    /// Moments and range of the training values.
    pub summary: Summary,
}

/// Count, mean, standard deviation and range of the finite values of a feature or input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Finite values summarized.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Their population standard deviation (divided by `count`, not `count - 1`).
    pub std: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Values left out of the summary because they were NaN or infinite (they are in the
    /// histogram: NaN and `+∞` in the overflow, `-∞` in the underflow).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub non_finite: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Profile {
    /// A profile of these inputs in the current format.
    pub fn new(inputs: Vec<InputProfile>) -> Self {
        Profile {
            format: PROFILE_FORMAT,
            inputs,
        }
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&InputProfile> {
        self.inputs.iter().find(|i| i.input == name)
    }

    /// The profile as the JSON object `VersionMetadata.profile` holds.
    pub fn to_metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            // A struct of strings and numbers always serializes to an object; non-finite
            // numbers (which would not) are refused by `validate`.
            _ => serde_json::Map::new(),
        }
    }

    /// Reads and validates a profile from upload metadata (`VersionMetadata.profile`).
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming the field at fault, e.g.
    /// ``metadata field `profile.inputs[0].features[2].edges` must be strictly increasing…``.
    pub fn from_metadata(value: &serde_json::Value) -> Result<Profile> {
        let profile: Profile = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ValidationError::BadRequest(format!(
                    "metadata field `profile` is not valid: {inner}"
                ))
            } else {
                ValidationError::BadRequest(format!(
                    "metadata field `profile.{path}` is not valid: {inner}"
                ))
            }
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// Checks what the types cannot: the format, names, edges, counts and summaries.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming the first field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| {
            Err(ValidationError::BadRequest(format!(
                "metadata field `profile.{field}` {why}"
            )))
        };
        if self.format != PROFILE_FORMAT {
            return bad(
                "format",
                format!(
                    "is {}; this registry reads profile format {PROFILE_FORMAT}",
                    self.format
                ),
            );
        }
        if self.inputs.is_empty() {
            return bad("inputs", "must describe at least one input".into());
        }
        if self.inputs.len() > MAX_INPUTS {
            return bad(
                "inputs",
                format!(
                    "describes {} inputs; the limit is {MAX_INPUTS}",
                    self.inputs.len()
                ),
            );
        }
        let mut inputs = BTreeSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let at = format!("inputs[{i}]");
            if let Err(why) = check_name(&input.input) {
                return bad(&format!("{at}.input"), why);
            }
            if !inputs.insert(input.input.as_str()) {
                return bad(
                    &format!("{at}.input"),
                    format!(
                        "names input {} a second time",
                        crate::names::printable(&input.input)
                    ),
                );
            }
            if input.features.is_empty() && input.summary.is_none() {
                return bad(
                    &at,
                    "has neither `features` (tabular inputs) nor a `summary`".into(),
                );
            }
            if input.features.len() > MAX_FEATURES {
                return bad(
                    &format!("{at}.features"),
                    format!(
                        "has {} features; the limit is {MAX_FEATURES}",
                        input.features.len()
                    ),
                );
            }
            if let Some(summary) = &input.summary
                && let Err(why) = check_summary(summary)
            {
                return bad(&format!("{at}.summary{}", why.0), why.1);
            }
            let mut names = BTreeSet::new();
            let mut columns = BTreeSet::new();
            for (f, feature) in input.features.iter().enumerate() {
                let at = format!("{at}.features[{f}]");
                if let Err(why) = check_name(&feature.name) {
                    return bad(&format!("{at}.name"), why);
                }
                if !names.insert(feature.name.as_str()) {
                    return bad(
                        &format!("{at}.name"),
                        format!(
                            "names feature {} a second time",
                            crate::names::printable(&feature.name)
                        ),
                    );
                }
                if !columns.insert(feature.column) {
                    return bad(
                        &format!("{at}.column"),
                        format!("is column {} a second time", feature.column),
                    );
                }
                if let Err((field, why)) = check_feature(feature) {
                    return bad(&format!("{at}.{field}"), why);
                }
            }
        }
        Ok(())
    }
}

impl InputProfile {
    /// The narrowest row this input's features fit in (highest column + 1): serving checks it
    /// once against the input's shape when it loads the version, because
    /// [`crate::traffic::DriftCounters::record_rows`] skips features outside the row.
    pub fn min_row_width(&self) -> usize {
        self.features
            .iter()
            .map(|f| f.column.saturating_add(1))
            .max()
            .unwrap_or(0)
    }
}

pub(crate) fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty() {
        Err("must not be empty".into())
    } else if name.len() > MAX_NAME_LEN {
        Err(format!(
            "is {} bytes; the limit is {MAX_NAME_LEN}",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        // Names end up in events and log lines.
        Err(format!(
            "{} contains control characters",
            crate::names::printable(name)
        ))
    } else {
        Ok(())
    }
}

/// The error is (field path below the feature, what is wrong with it).
fn check_feature(feature: &FeatureProfile) -> std::result::Result<(), (String, String)> {
    let edges = &feature.edges;
    if edges.is_empty() || edges.len() > MAX_EDGES {
        return Err((
            "edges".into(),
            format!("must have 1 to {MAX_EDGES} edges, got {}", edges.len()),
        ));
    }
    if let Some(i) = edges.iter().position(|e| !e.is_finite()) {
        return Err((format!("edges[{i}]"), "must be a finite number".into()));
    }
    if let Some(i) = edges.windows(2).position(|w| w[1] <= w[0]) {
        return Err((
            "edges".into(),
            format!(
                "must be strictly increasing: edges[{}] = {} is not above edges[{i}] = {}",
                i + 1,
                edges[i + 1],
                edges[i]
            ),
        ));
    }
    if feature.counts.len() != edges.len() + 1 {
        return Err((
            "counts".into(),
            format!(
                "must have one entry per bucket, edges.len() + 1 = {} (underflow, {} bins, overflow), got {}",
                edges.len() + 1,
                edges.len() - 1,
                feature.counts.len()
            ),
        ));
    }
    check_summary(&feature.summary).map_err(|(field, why)| (format!("summary{field}"), why))?;
    let total = feature
        .counts
        .iter()
        .try_fold(0u64, |sum, c| sum.checked_add(*c));
    let summarized = feature
        .summary
        .count
        .checked_add(feature.summary.non_finite);
    if total.is_none() || total != summarized {
        return Err((
            "counts".into(),
            format!(
                "add up to {}, but summary.count + summary.non_finite = {}: the histogram and the summary must describe the same values",
                total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string()),
                summarized.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string()),
            ),
        ));
    }
    Ok(())
}

/// The error is (field path below the summary, e.g. `.std`, and what is wrong).
fn check_summary(summary: &Summary) -> std::result::Result<(), (String, String)> {
    for (field, value) in [
        ("mean", summary.mean),
        ("std", summary.std),
        ("min", summary.min),
        ("max", summary.max),
    ] {
        if !value.is_finite() {
            return Err((format!(".{field}"), "must be a finite number".into()));
        }
    }
    if summary.std < 0.0 {
        return Err((
            ".std".into(),
            format!("must be at least 0, got {}", summary.std),
        ));
    }
    if summary.min > summary.max {
        return Err((
            ".min".into(),
            format!(
                "({}) must not be above summary.max ({})",
                summary.min, summary.max
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn valid() -> serde_json::Value {
        json!({"format": 1, "inputs": [{"input": "x", "features": [
            {"name": "a", "column": 0, "edges": [0.0, 1.0, 2.0], "counts": [0, 3, 4, 1],
             "summary": {"count": 8, "mean": 1.0, "std": 0.5, "min": 0.0, "max": 2.0}}
        ]}]})
    }

    fn invalid(patch: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = valid();
        patch(&mut v);
        Profile::from_metadata(&v).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_profile_reads_back_and_round_trips() {
        let p = Profile::from_metadata(&valid()).unwrap();
        assert_eq!(p.inputs[0].min_row_width(), 1);
        assert_eq!(serde_json::Value::Object(p.to_metadata()), valid());
        let summary_only = json!({"format": 1, "inputs": [{"input": "image",
            "summary": {"count": 10, "mean": 0.5, "std": 0.1, "min": 0.0, "max": 1.0}}]});
        Profile::from_metadata(&summary_only).unwrap();
    }

    #[test]
    fn malformed_profiles_are_refused_naming_the_field() {
        let f = "/inputs/0/features/0";
        type Patch = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Patch, &str)> = vec![
            (
                Box::new(|v| v["format"] = json!(2)),
                "`profile.format` is 2; this registry reads profile format 1",
            ),
            (
                Box::new(|v| v["inputs"] = json!([])),
                "`profile.inputs` must describe at least one input",
            ),
            (
                Box::new(move |v| {
                    *v.pointer_mut(&format!("{f}/edges")).unwrap() = json!([0.0, 2.0, 1.0])
                }),
                "`profile.inputs[0].features[0].edges` must be strictly increasing: edges[2] = 1 is not above edges[1] = 2",
            ),
            (
                Box::new(move |v| {
                    *v.pointer_mut(&format!("{f}/edges")).unwrap() = json!([0.0, 1.0, 1.0])
                }),
                "strictly increasing",
            ),
            (
                Box::new(move |v| {
                    *v.pointer_mut(&format!("{f}/counts")).unwrap() = json!([3, 4, 1])
                }),
                "`profile.inputs[0].features[0].counts` must have one entry per bucket, edges.len() + 1 = 4",
            ),
            (
                Box::new(move |v| {
                    *v.pointer_mut(&format!("{f}/counts")).unwrap() = json!([0, 3, 4, 2])
                }),
                "`profile.inputs[0].features[0].counts` add up to 9, but summary.count + summary.non_finite = 8",
            ),
            (
                Box::new(move |v| {
                    *v.pointer_mut(&format!("{f}/summary/std")).unwrap() = json!(-1.0)
                }),
                "`profile.inputs[0].features[0].summary.std` must be at least 0",
            ),
            (
                Box::new(move |v| *v.pointer_mut(&format!("{f}/edges")).unwrap() = json!([])),
                "`profile.inputs[0].features[0].edges` must have 1 to 256 edges, got 0",
            ),
            (
                Box::new(move |v| *v.pointer_mut(&format!("{f}/counts/1")).unwrap() = json!(-3)),
                "`profile.inputs[0].features[0].counts[1]` is not valid",
            ),
            (
                Box::new(move |v| *v.pointer_mut(&format!("{f}/name")).unwrap() = json!("")),
                "`profile.inputs[0].features[0].name` must not be empty",
            ),
            (
                Box::new(|v| v["inputs"][0]["colour"] = json!("red")),
                "unknown field `colour`",
            ),
            (
                Box::new(|v| {
                    let dup = v["inputs"][0]["features"][0].clone();
                    v["inputs"][0]["features"].as_array_mut().unwrap().push(dup);
                }),
                "`profile.inputs[0].features[1].name` names feature `a` a second time",
            ),
            (
                Box::new(|v| v["inputs"][0] = json!({"input": "x"})),
                "`profile.inputs[0]` has neither `features`",
            ),
        ];
        for (patch, says) in cases {
            let err = invalid(patch);
            assert!(err.contains(says), "wanted `{says}` in: {err}");
        }
    }
}
