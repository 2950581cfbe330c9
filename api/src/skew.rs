//! Training–serving skew: the features serving read online for an entity, compared with the
//! values materialized for the same entity from the offline source.
//!
//! A materialization keeps a **sample** of its rows: the [`SAMPLE_ROWS`] entities with the
//! smallest [`entity_hash`] (a bottom-k sample: the same entities whatever the order of the file,
//! and serving can tell whether an entity is in it from the hash and the sample's
//! [`OfflineSample::bound`] alone). Serving sends the rows it read for sampled entities; the
//! registry compares them feature by feature ([`compare`]) and judges windows of
//! [`WINDOW_ROWS`] compared rows ([`judge`]): a feature whose values differ in more than
//! [`MAX_MISMATCH_SHARE`] of a window's rows is skewed (a unit change, a default filled in online,
//! a different computation), and `skew.detected` names it, once per incident.
//!
//! Values are compared as the online store holds them (the offline sample is rounded to the
//! view's types the same way), so a FP32 feature read back is equal to its offline value, not
//! merely close.

use serde::{Deserialize, Serialize};

use crate::error::{Result, ValidationError};
use crate::names;

/// Entities a materialization's sample keeps.
pub const SAMPLE_ROWS: usize = 512;

/// Rows serving sends per request at most (the sampled entities among a request's).
pub const ROWS_PER_REQUEST: usize = 8;

/// Most rows one `served` report may hold.
pub const MAX_REPORT_ROWS: usize = 1000;

/// Compared rows per judged window.
pub const WINDOW_ROWS: u64 = 50;

/// Share of a window's rows in which a feature may differ before it is called skewed.
pub const MAX_MISMATCH_SHARE: f64 = 0.1;

/// Relative difference two values may have and still be equal (both went through the same
/// rounding: this only absorbs the text round trip of JSON).
const TOLERANCE: f64 = 1e-9;

/// Most skewed features named in an event.
pub const EVENT_FEATURES: usize = 10;

/// A stable 64-bit hash of an entity key (FNV-1a): the same in the CLI, serving and the
/// registry, on every platform and in every release.
pub fn entity_hash(entity: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entity.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One entity's feature values, in the view's order; `None` for a missing value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledRow {
    /// The entity key.
    pub entity: String,
    /// The values as numbers (BOOL as 0 or 1).
    pub values: Vec<Option<f64>>,
}

/// A materialization's sample of its rows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OfflineSample {
    /// The largest [`entity_hash`] in the sample when it is full (entities hashing above it are
    /// not in it); `u64::MAX` when every entity is.
    pub bound: u64,
    /// The sampled rows.
    pub rows: Vec<SampledRow>,
}

impl OfflineSample {
    /// Checks the sample against a view of `width` features.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming the problem.
    pub fn validate(&self, width: usize) -> Result<()> {
        check_rows(&self.rows, width, SAMPLE_ROWS, "sample")?;
        let mut seen = std::collections::HashSet::with_capacity(self.rows.len());
        if let Some(row) = self.rows.iter().find(|r| !seen.insert(r.entity.as_str())) {
            return Err(ValidationError::BadRequest(format!(
                "sample: entity {} is listed more than once",
                names::printable(&row.entity)
            )));
        }
        if let Some(row) = self
            .rows
            .iter()
            .find(|r| entity_hash(&r.entity) > self.bound)
        {
            return Err(ValidationError::BadRequest(format!(
                "sample: entity `{}` hashes above the sample's bound",
                names::printable(&row.entity)
            )));
        }
        Ok(())
    }
}

/// What serving sends: rows it read online for sampled entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedRows {
    /// The rows.
    pub rows: Vec<SampledRow>,
}

impl ServedRows {
    /// Checks the report against a view of `width` features.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming the problem.
    pub fn validate(&self, width: usize) -> Result<()> {
        check_rows(&self.rows, width, MAX_REPORT_ROWS, "rows")
    }
}

fn check_rows(rows: &[SampledRow], width: usize, most: usize, what: &str) -> Result<()> {
    if rows.len() > most {
        return Err(ValidationError::BadRequest(format!(
            "{what}: at most {most} rows, got {}",
            rows.len()
        )));
    }
    for (i, row) in rows.iter().enumerate() {
        if row.entity.is_empty() || row.entity.len() > 256 {
            return Err(ValidationError::BadRequest(format!(
                "{what}[{i}].entity must be 1 to 256 bytes"
            )));
        }
        if row.values.len() != width {
            return Err(ValidationError::BadRequest(format!(
                "{what}[{i}] has {} values, the view has {width} features",
                row.values.len()
            )));
        }
    }
    Ok(())
}

/// One feature's tally in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureTally {
    /// Rows in which it differed.
    pub mismatched: u64,
    /// The first difference seen: entity, offline value, served value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<(String, Option<f64>, Option<f64>)>,
}

/// The window being filled, and whether an incident is open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkewState {
    /// Rows compared in the window.
    pub rows: u64,
    /// Per feature (by position in the view), its tally.
    pub features: Vec<FeatureTally>,
    /// The id of the `skew.detected` event of the open incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_event: Option<i64>,
}

/// Whether two values are the same value.
fn same(offline: Option<f64>, served: Option<f64>) -> bool {
    match (offline, served) {
        (None, None) => true,
        (Some(a), Some(b)) if a.is_nan() && b.is_nan() => true,
        (Some(a), Some(b)) => (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0),
        _ => false,
    }
}

/// Adds the comparison of `served` with `offline` (the same entity's rows) to `state`'s
/// window.
pub fn compare(state: &mut SkewState, offline: &SampledRow, served: &SampledRow) {
    let width = offline.values.len();
    if state.features.len() != width {
        state.features.resize(width, FeatureTally::default());
    }
    state.rows += 1;
    for (i, tally) in state.features.iter_mut().enumerate() {
        let (a, b) = (offline.values[i], served.values.get(i).copied().flatten());
        if !same(a, b) {
            tally.mismatched += 1;
            if tally.example.is_none() {
                tally.example = Some((served.entity.clone(), a, b));
            }
        }
    }
}

/// A skewed feature of a judged window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkewedFeature {
    /// The feature.
    pub feature: String,
    /// Rows in which it differed.
    pub mismatched: u64,
    /// Rows compared.
    pub compared: u64,
    /// An entity where it differed.
    pub entity: String,
    /// That entity's offline value.
    pub offline: Option<f64>,
    /// The value serving read.
    pub served: Option<f64>,
}

/// What judging a full window decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgment {
    /// Not full yet, or nothing changed (still skewed with an incident open, still clean).
    Nothing,
    /// Skewed features and no incident open: raise one.
    Detected(Vec<SkewedFeature>),
    /// No feature skewed while an incident is open: close it.
    Recovered,
}

/// Judges `state`'s window when it holds [`WINDOW_ROWS`] rows (starting a new window), naming
/// features by `names`. Pure: the caller writes the state and the event together.
pub fn judge(state: &mut SkewState, names: &[String]) -> Judgment {
    if state.rows < WINDOW_ROWS {
        return Judgment::Nothing;
    }
    let rows = state.rows;
    let mut skewed: Vec<SkewedFeature> = state
        .features
        .iter()
        .enumerate()
        .filter(|(_, t)| t.mismatched as f64 > MAX_MISMATCH_SHARE * rows as f64)
        .map(|(i, t)| {
            let (entity, offline, served) = t.example.clone().unwrap_or_default();
            SkewedFeature {
                feature: names.get(i).cloned().unwrap_or_else(|| format!("#{i}")),
                mismatched: t.mismatched,
                compared: rows,
                entity,
                offline,
                served,
            }
        })
        .collect();
    skewed.sort_by_key(|f| std::cmp::Reverse(f.mismatched));
    skewed.truncate(EVENT_FEATURES);
    state.rows = 0;
    state
        .features
        .iter_mut()
        .for_each(|t| *t = FeatureTally::default());
    match (skewed.is_empty(), state.incident_event.is_some()) {
        (false, false) => Judgment::Detected(skewed),
        (true, true) => Judgment::Recovered,
        _ => Judgment::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(entity: &str, values: &[Option<f64>]) -> SampledRow {
        SampledRow {
            entity: entity.into(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn the_hash_is_fnv1a() {
        assert_eq!(entity_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(entity_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_feature_served_in_another_unit_is_named_once_per_incident() {
        let names = vec!["age".to_string(), "income".to_string()];
        let mut state = SkewState::default();
        let window = |state: &mut SkewState, factor: f64| {
            for i in 0..WINDOW_ROWS {
                let v = i as f64;
                let offline = row(&format!("c{i}"), &[Some(v), Some(1000.0 + v)]);
                let served = row(&format!("c{i}"), &[Some(v), Some((1000.0 + v) * factor)]);
                compare(state, &offline, &served);
            }
        };
        window(&mut state, 1.0);
        assert_eq!(judge(&mut state, &names), Judgment::Nothing);
        window(&mut state, 0.001);
        let Judgment::Detected(skewed) = judge(&mut state, &names) else {
            panic!("not detected")
        };
        assert_eq!(skewed.len(), 1);
        assert_eq!(skewed[0].feature, "income");
        assert_eq!(skewed[0].mismatched, WINDOW_ROWS);
        assert_eq!(skewed[0].entity, "c0");
        assert_eq!(skewed[0].offline, Some(1000.0));
        assert_eq!(skewed[0].served, Some(1.0));
        state.incident_event = Some(7);
        // Still skewed: the incident is open, nothing new.
        window(&mut state, 0.001);
        assert_eq!(judge(&mut state, &names), Judgment::Nothing);
        window(&mut state, 1.0);
        assert_eq!(judge(&mut state, &names), Judgment::Recovered);
    }

    #[test]
    fn a_few_differences_missing_values_and_partial_windows_are_not_skew() {
        let names = vec!["a".to_string()];
        let mut state = SkewState::default();
        for i in 0..WINDOW_ROWS - 1 {
            // One row in ten differs: at the limit, not past it.
            let served = if i % 10 == 0 { Some(5.0) } else { None };
            compare(&mut state, &row("x", &[None]), &row("x", &[served]));
        }
        assert_eq!(judge(&mut state, &names), Judgment::Nothing);
        assert_eq!(state.rows, WINDOW_ROWS - 1);
        compare(
            &mut state,
            &row("x", &[Some(f64::NAN)]),
            &row("x", &[Some(f64::NAN)]),
        );
        assert_eq!(judge(&mut state, &names), Judgment::Nothing);
        assert_eq!(state.rows, 0);
        assert!(same(Some(0.1 + 0.2), Some(0.3)));
        assert!(!same(Some(1.0), None));
    }

    #[test]
    fn samples_and_reports_are_checked() {
        let ok = OfflineSample {
            bound: u64::MAX,
            rows: vec![row("c1", &[Some(1.0)])],
        };
        assert!(ok.validate(1).is_ok());
        assert!(ok.validate(2).unwrap_err().to_string().contains("1 values"));
        let bad = OfflineSample {
            bound: 0,
            ..ok.clone()
        };
        assert!(bad.validate(1).unwrap_err().to_string().contains("bound"));
        let twice = OfflineSample {
            bound: u64::MAX,
            rows: vec![row("c1", &[None]), row("c1", &[None])],
        };
        assert!(
            twice
                .validate(1)
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
        let many = ServedRows {
            rows: vec![row("c1", &[None]); MAX_REPORT_ROWS + 1],
        };
        assert!(many.validate(1).is_err());
    }
}
