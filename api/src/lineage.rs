//! What a version came from: the `metadata` part of an upload, validated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ValidationError};

/// Where the training code lives and which commit produced the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// The full 40-hex commit of the training code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The repository URL the commit belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<String>,
    /// The datasets the model was trained on, each with a content hash.
    #[serde(default)]
    pub data: Vec<DataRef>,
    /// The feature view (version and definition hash) the model was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_view: Option<crate::features::FeatureViewRef>,
}

/// One training dataset: where it is and the SHA-256 of its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    /// Where the data lives (`s3://…`, `file://…`, a table name…).
    pub uri: String,
    /// Lowercase hex SHA-256 of the data (for a folder, of its sorted file list and hashes).
    pub sha256: String,
    /// When the data was taken (the snapshot or extraction time): a perishable model's age is
    /// counted from its newest dataset's `as_of`, else from the version's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

/// A parameter value: the scalar types training frameworks log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `true`/`false`.
    Bool(bool),
    /// Any JSON number.
    Number(serde_json::Number),
    /// Any string.
    Text(String),
}

/// The JSON `metadata` part of an upload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionMetadata {
    /// The full 40-hex commit of the training code.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// The repository URL.
    #[serde(default)]
    pub git_repo: Option<String>,
    /// Training datasets with their hashes.
    #[serde(default)]
    pub data: Vec<DataRef>,
    /// The feature view version the model was trained with; the registry checks that it exists
    /// with that hash.
    #[serde(default)]
    pub feature_view: Option<crate::features::FeatureViewRef>,
    /// Hyper-parameters.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    /// Evaluation metrics (finite numbers).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Free-form labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A human description of the version.
    #[serde(default)]
    pub description: Option<String>,
    /// The training-data profile used for drift monitoring: a [`crate::drift::Profile`] as JSON,
    /// checked by [`VersionMetadata::validate`] and stored as sent.
    #[serde(default)]
    pub profile: Option<serde_json::Map<String, serde_json::Value>>,
    /// The SHA-256 the client computed for the model bytes; when given before the `model` part it
    /// is checked, and lets the registry skip writing bytes it already holds.
    #[serde(default)]
    pub sha256: Option<String>,
}

const MAX_ENTRIES: usize = 1_000;
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 4_096;
const MAX_DESCRIPTION_LEN: usize = 16_384;

impl VersionMetadata {
    /// Parses the metadata part, naming the field at fault when the JSON has the wrong shape.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] with the JSON path and serde's explanation.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        // serde would also accept a JSON array for a struct; metadata is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ValidationError::BadRequest(
                "metadata is not valid: expected a JSON object".into(),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ValidationError::BadRequest(format!("metadata is not valid: {inner}"))
            } else {
                ValidationError::BadRequest(format!(
                    "metadata field `{path}` is not valid: {inner}"
                ))
            }
        })?;
        de.end()
            .map_err(|e| ValidationError::BadRequest(format!("metadata is not valid: {e}")))?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks the values serde cannot: hash formats, sizes, finiteness.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(commit) = &self.git_commit
            && !is_hex_of_len(commit, 40)
        {
            return Err(ValidationError::BadRequest(format!(
                "metadata field `git_commit` must be the full 40-character lowercase hex commit SHA, got {}",
                crate::names::printable(commit)
            )));
        }
        if let Some(repo) = &self.git_repo {
            check_len("git_repo", repo, MAX_VALUE_LEN)?;
        }
        if let Some(view) = &self.feature_view {
            view.validate()?;
        }
        if self.data.len() > MAX_ENTRIES {
            return Err(ValidationError::BadRequest(format!(
                "metadata field `data` lists {} datasets; the limit is {MAX_ENTRIES}",
                self.data.len()
            )));
        }
        for (i, d) in self.data.iter().enumerate() {
            if d.uri.trim().is_empty() {
                return Err(ValidationError::BadRequest(format!(
                    "metadata field `data[{i}].uri` is empty"
                )));
            }
            check_len(&format!("data[{i}].uri"), &d.uri, MAX_VALUE_LEN)?;
            if !is_hex_of_len(&d.sha256, 64) {
                return Err(ValidationError::BadRequest(format!(
                    "metadata field `data[{i}].sha256` must be 64 lowercase hex characters, got {}",
                    crate::names::printable(&d.sha256)
                )));
            }
        }
        for (field, len) in [
            ("params", self.params.len()),
            ("metrics", self.metrics.len()),
            ("tags", self.tags.len()),
        ] {
            if len > MAX_ENTRIES {
                return Err(ValidationError::BadRequest(format!(
                    "metadata field `{field}` has {len} entries; the limit is {MAX_ENTRIES}"
                )));
            }
        }
        for key in self
            .params
            .keys()
            .chain(self.metrics.keys())
            .chain(self.tags.keys())
        {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(ValidationError::BadRequest(format!(
                    "metadata key {} must be 1 to {MAX_KEY_LEN} bytes",
                    crate::names::printable(key)
                )));
            }
        }
        for (key, value) in &self.metrics {
            if !value.is_finite() {
                return Err(ValidationError::BadRequest(format!(
                    "metadata field `metrics.{key}` must be a finite number"
                )));
            }
        }
        for (key, value) in &self.tags {
            check_len(&format!("tags.{key}"), value, MAX_VALUE_LEN)?;
        }
        for (key, value) in &self.params {
            if let ParamValue::Text(text) = value {
                check_len(&format!("params.{key}"), text, MAX_VALUE_LEN)?;
            }
        }
        if let Some(description) = &self.description {
            check_len("description", description, MAX_DESCRIPTION_LEN)?;
        }
        if let Some(sha) = &self.sha256
            && !is_hex_of_len(sha, 64)
        {
            return Err(ValidationError::BadRequest(format!(
                "metadata field `sha256` must be 64 lowercase hex characters, got {}",
                crate::names::printable(sha)
            )));
        }
        if let Some(profile) = &self.profile {
            crate::drift::Profile::from_metadata(&serde_json::Value::Object(profile.clone()))?;
        }
        Ok(())
    }

    /// Checks what `--require-lineage` demands: a git commit and at least one hashed dataset.
    ///
    /// # Errors
    /// [`ValidationError::Unprocessable`] listing everything that is missing.
    pub fn require_lineage(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.git_commit.is_none() {
            missing.push("`git_commit`");
        }
        if self.data.is_empty() {
            missing.push("at least one `data` entry with its `sha256`");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ValidationError::Unprocessable(format!(
                "this registry requires lineage for every version; metadata is missing {}",
                missing.join(" and ")
            )))
        }
    }

    /// The lineage part, as stored and shown.
    pub fn lineage(&self) -> Lineage {
        Lineage {
            git_commit: self.git_commit.clone(),
            git_repo: self.git_repo.clone(),
            data: self.data.clone(),
            feature_view: self.feature_view.clone(),
        }
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(ValidationError::BadRequest(format!(
            "metadata field `{field}` is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

/// True for exactly `len` lowercase hex digits.
pub fn is_hex_of_len(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn full_metadata_parses() {
        let json = format!(
            r#"{{"git_commit":"{COMMIT}","git_repo":"https://x/y.git","data":[{{"uri":"s3://b/k","sha256":"{SHA}"}}],
               "params":{{"lr":0.1,"opt":"adam","bn":true}},"metrics":{{"auc":0.93}},"tags":{{"team":"risk"}},"description":"d"}}"#
        );
        let meta = VersionMetadata::from_json(json.as_bytes()).unwrap();
        assert_eq!(meta.git_commit.as_deref(), Some(COMMIT));
        assert_eq!(meta.metrics["auc"], 0.93);
        meta.require_lineage().unwrap();
    }

    #[test]
    fn wrong_typed_fields_are_named() {
        let err = VersionMetadata::from_json(br#"{"metrics":{"auc":"high"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.auc"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = VersionMetadata::from_json(br#"{"git_comit":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("git_comit"), "{err}");
    }

    #[test]
    fn short_or_uppercase_commits_are_rejected() {
        for bad in ["abc123", &COMMIT.to_uppercase(), &format!("{COMMIT}0")] {
            let json = format!(r#"{{"git_commit":"{bad}"}}"#);
            let err = VersionMetadata::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains("git_commit"), "{err}");
        }
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = VersionMetadata::from_json(b"{not json").unwrap_err();
        assert!(matches!(err, ValidationError::BadRequest(_)));
    }

    #[test]
    fn require_lineage_lists_everything_missing() {
        let err = VersionMetadata::default()
            .require_lineage()
            .unwrap_err()
            .to_string();
        assert!(err.contains("git_commit") && err.contains("data"), "{err}");
    }

    #[test]
    fn a_profile_is_optional_but_a_malformed_one_is_named() {
        VersionMetadata::from_json(br#"{"description":"no profile"}"#).unwrap();
        let ok = br#"{"profile":{"format":1,"inputs":[{"input":"x","features":[{"name":"a","column":0,
            "edges":[0.0,1.0],"counts":[0,2,0],"summary":{"count":2,"mean":0.5,"std":0.5,"min":0.0,"max":1.0}}]}]}}"#;
        assert!(VersionMetadata::from_json(ok).unwrap().profile.is_some());
        let bad = br#"{"profile":{"format":1,"inputs":[{"input":"x","features":[{"name":"a","column":0,
            "edges":[1.0,0.0],"counts":[0,2,0],"summary":{"count":2,"mean":0.5,"std":0.5,"min":0.0,"max":1.0}}]}]}}"#;
        let err = VersionMetadata::from_json(bad).unwrap_err();
        assert!(matches!(err, ValidationError::BadRequest(_)));
        assert!(
            err.to_string()
                .contains("`profile.inputs[0].features[0].edges` must be strictly increasing"),
            "{err}"
        );
        let err = VersionMetadata::from_json(br#"{"profile":{"features":[]}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata field `profile"), "{err}");
    }

    #[test]
    fn non_finite_metrics_cannot_be_expressed_in_json_and_bad_hashes_are_named() {
        let json = br#"{"data":[{"uri":"x","sha256":"nothex"}]}"#;
        let err = VersionMetadata::from_json(json).unwrap_err().to_string();
        assert!(err.contains("data[0].sha256"), "{err}");
    }
}
