//! Feature views: one definition of the features a model is trained and served with, so that
//! the training pipeline and the online lookup cannot compute them differently (the
//! training–serving skew feature stores exist for). A view names its entity key (e.g.
//! `customer_id`), the ordered features with their types, and the data it was materialized
//! from. The registry keeps every version of a view; a model version's lineage names the view
//! version (and its hash) it was trained with.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, ValidationError};
use crate::lineage::{DataRef, is_hex_of_len};
use crate::names;

/// Most features one view may hold.
pub const MAX_FEATURES: usize = 4096;

/// Longest description.
const MAX_DESCRIPTION: usize = 4096;

/// A feature's type: the tensor element type it is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeatureDtype {
    /// 32-bit float.
    #[serde(rename = "FP32")]
    Fp32,
    /// 64-bit float.
    #[serde(rename = "FP64")]
    Fp64,
    /// 32-bit integer.
    #[serde(rename = "INT32")]
    Int32,
    /// 64-bit integer.
    #[serde(rename = "INT64")]
    Int64,
    /// Boolean.
    #[serde(rename = "BOOL")]
    Bool,
}

impl FeatureDtype {
    /// The OIP spelling (`FP32`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureDtype::Fp32 => "FP32",
            FeatureDtype::Fp64 => "FP64",
            FeatureDtype::Int32 => "INT32",
            FeatureDtype::Int64 => "INT64",
            FeatureDtype::Bool => "BOOL",
        }
    }

    /// Reads the OIP spelling, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        [
            FeatureDtype::Fp32,
            FeatureDtype::Fp64,
            FeatureDtype::Int32,
            FeatureDtype::Int64,
            FeatureDtype::Bool,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }
}

/// One feature of a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureField {
    /// Its name: the column in the materialized data.
    pub name: String,
    /// Its type.
    pub dtype: FeatureDtype,
}

/// What `PUT /api/v1/feature-views/{name}` takes: the definition of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewSpec {
    /// The entity key: the column that identifies a row (e.g. `customer_id`).
    pub entity: String,
    /// The features, in the order the model takes them.
    pub features: Vec<FeatureField>,
    /// The data the view was (or will be) materialized from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataRef>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl FeatureViewSpec {
    /// Checks the definition, naming every problem's field.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] listing the problems.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if let Err(e) = names::validate("entity", &self.entity) {
            problems.push(e.to_string());
        }
        if self.features.is_empty() {
            problems.push("features: a view needs at least one feature".to_string());
        }
        if self.features.len() > MAX_FEATURES {
            problems.push(format!(
                "features: at most {MAX_FEATURES} features, got {}",
                self.features.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in self.features.iter().enumerate().take(MAX_FEATURES) {
            if let Err(e) = names::validate("feature", &f.name) {
                problems.push(format!("features[{i}].name: {e}"));
            } else if f.name == self.entity {
                problems.push(format!(
                    "features[{i}].name: `{}` is the entity key, not a feature",
                    f.name
                ));
            } else if !seen.insert(f.name.as_str()) {
                problems.push(format!(
                    "features[{i}].name: `{}` is listed more than once",
                    f.name
                ));
            }
        }
        if let Some(source) = &self.source {
            if source.uri.trim().is_empty() {
                problems.push("source.uri is empty".to_string());
            }
            if !is_hex_of_len(&source.sha256, 64) {
                problems.push(format!(
                    "source.sha256 must be 64 lowercase hex characters, got {}",
                    names::printable(&source.sha256)
                ));
            }
        }
        if let Some(d) = &self.description
            && d.len() > MAX_DESCRIPTION
        {
            problems.push(format!(
                "description is {} bytes long, the limit is {MAX_DESCRIPTION}",
                d.len()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError::BadRequest(format!(
                "invalid feature view: {}",
                problems.join("; ")
            )))
        }
    }

    /// The definition's SHA-256 (lowercase hex): of the entity key, the features in order and
    /// the source, as canonical JSON. The description is not part of it. Two registrations with
    /// the same hash are the same version.
    pub fn sha256(&self) -> String {
        let canonical = serde_json::json!({
            "entity": self.entity,
            "features": self.features,
            "source": self.source,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// A registered version of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureViewRecord {
    /// The view's name.
    pub name: String,
    /// Its version, from 1; a new definition makes a new version.
    pub version: i64,
    /// The definition's hash ([`FeatureViewSpec::sha256`]).
    pub sha256: String,
    /// The definition.
    #[serde(flatten)]
    pub spec: FeatureViewSpec,
    /// When this version was registered.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The bound of its last materialization's sample ([`crate::skew::OfflineSample::bound`]):
    /// serving sends the rows it reads for entities hashing at or below it. Given when one
    /// version is read; absent before the first materialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_bound: Option<u64>,
}

impl FeatureViewRecord {
    /// The reference a model version's lineage keeps.
    pub fn reference(&self) -> FeatureViewRef {
        FeatureViewRef {
            name: self.name.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
        }
    }
}

/// Longest `source` and `store` in a [`Materialization`].
const MAX_LOCATION: usize = 1024;

/// A materialization into the online store, done (the `feature_view.materialized` event's
/// data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Materialization {
    /// The file that was read, as it was named.
    pub source: String,
    /// SHA-256 of its bytes (lowercase hex).
    pub source_sha256: String,
    /// Rows read and written (an entity's last row is the one kept).
    pub rows: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The online store written to, without credentials (`redis://host:port/db`).
    pub store: String,
    /// How long it took.
    pub seconds: f64,
}

impl Materialization {
    /// Checks the report, naming every problem's field.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] listing the problems.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (field, value) in [("source", &self.source), ("store", &self.store)] {
            if value.trim().is_empty() || value.len() > MAX_LOCATION {
                problems.push(format!("{field} must be 1 to {MAX_LOCATION} bytes"));
            }
        }
        if self.store.contains('@') {
            problems.push("store must not hold credentials (drop the `user:password@`)".into());
        }
        if !is_hex_of_len(&self.source_sha256, 64) {
            problems.push(format!(
                "source_sha256 must be 64 lowercase hex characters, got {}",
                names::printable(&self.source_sha256)
            ));
        }
        if !self.seconds.is_finite() || self.seconds < 0.0 {
            problems.push(format!(
                "seconds must be a finite number of 0 or more, got {}",
                self.seconds
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError::BadRequest(format!(
                "invalid materialization: {}",
                problems.join("; ")
            )))
        }
    }
}

/// What `POST /api/v1/feature-views/{name}/versions/{version}/materializations` takes: the
/// materialization, and a sample of its rows the skew check compares served features with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterializationBody {
    /// What was materialized.
    #[serde(flatten)]
    pub report: Materialization,
    /// The rows of the sampled entities ([`crate::skew`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<crate::skew::OfflineSample>,
}

/// Which view version a model was trained with, in its lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewRef {
    /// The view.
    pub name: String,
    /// Its version.
    pub version: i64,
    /// Its definition's hash: the registry checks it against the version it names.
    pub sha256: String,
}

impl FeatureViewRef {
    /// Checks the reference's shape (the registry checks that it exists).
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming the field.
    pub fn validate(&self) -> Result<()> {
        names::validate("feature view", &self.name)?;
        if self.version < 1 {
            return Err(ValidationError::BadRequest(format!(
                "metadata field `feature_view.version` must be 1 or more, got {}",
                self.version
            )));
        }
        if !is_hex_of_len(&self.sha256, 64) {
            return Err(ValidationError::BadRequest(format!(
                "metadata field `feature_view.sha256` must be 64 lowercase hex characters, got {}",
                names::printable(&self.sha256)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec() -> FeatureViewSpec {
        FeatureViewSpec {
            entity: "customer_id".into(),
            features: vec![
                FeatureField {
                    name: "age".into(),
                    dtype: FeatureDtype::Fp32,
                },
                FeatureField {
                    name: "orders_30d".into(),
                    dtype: FeatureDtype::Int64,
                },
            ],
            source: Some(DataRef {
                uri: "s3://lake/customers.parquet".into(),
                sha256: "a".repeat(64),
                as_of: None,
            }),
            description: Some("customer features".into()),
        }
    }

    #[test]
    fn a_definition_reads_with_oip_types_and_its_hash_ignores_the_description() {
        let json = serde_json::json!({
            "entity": "customer_id",
            "features": [{"name": "age", "dtype": "FP32"}, {"name": "orders_30d", "dtype": "INT64"}],
            "source": {"uri": "s3://lake/customers.parquet", "sha256": "a".repeat(64)},
            "description": "customer features",
        });
        let parsed: FeatureViewSpec = serde_json::from_value(json).unwrap();
        assert_eq!(parsed, spec());
        assert!(parsed.validate().is_ok());
        let mut other = spec();
        other.description = None;
        assert_eq!(other.sha256(), spec().sha256());
        // Order, types and source are the definition.
        other.features.swap(0, 1);
        assert_ne!(other.sha256(), spec().sha256());
        let mut other = spec();
        other.features[0].dtype = FeatureDtype::Fp64;
        assert_ne!(other.sha256(), spec().sha256());
        let mut other = spec();
        other.source = None;
        assert_ne!(other.sha256(), spec().sha256());
        assert_eq!(FeatureDtype::parse("int64"), Some(FeatureDtype::Int64));
        assert_eq!(FeatureDtype::parse("STRING"), None);
    }

    #[test]
    fn every_problem_is_named_with_its_field() {
        let mut s = spec();
        s.entity = "customer id".into();
        s.features.push(FeatureField {
            name: "age".into(),
            dtype: FeatureDtype::Bool,
        });
        s.features.push(FeatureField {
            name: "customer id".into(),
            dtype: FeatureDtype::Bool,
        });
        s.source.as_mut().unwrap().sha256 = "xyz".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("invalid entity name"), "{err}");
        assert!(
            err.contains("features[2].name: `age` is listed more than once"),
            "{err}"
        );
        assert!(err.contains("features[3].name"), "{err}");
        assert!(err.contains("source.sha256 must be 64"), "{err}");
        let mut s = spec();
        s.features.clear();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("at least one feature")
        );
        let mut s = spec();
        s.features[1].name = "customer_id".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("is the entity key")
        );
        let unknown =
            serde_json::json!({"entity": "c", "features": [{"name": "a", "dtype": "STRING"}]});
        assert!(serde_json::from_value::<FeatureViewSpec>(unknown).is_err());
    }

    #[test]
    fn a_reference_is_checked_for_shape() {
        let r = FeatureViewRef {
            name: "customers".into(),
            version: 1,
            sha256: spec().sha256(),
        };
        assert!(r.validate().is_ok());
        let bad = FeatureViewRef {
            version: 0,
            ..r.clone()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("feature_view.version")
        );
        let bad = FeatureViewRef {
            sha256: "abc".into(),
            ..r
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("feature_view.sha256")
        );
    }
}
