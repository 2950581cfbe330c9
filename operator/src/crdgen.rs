//! The CRD YAML, generated from the Rust types ([`crate::crd`]) so the two cannot disagree.
//! `ferry crdgen` writes it; a test fails when the checked-in copy is stale.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;

use crate::crd::ModelDeployment;

/// Where the CRD lives in the repository, relative to its root.
pub const CRD_PATH: &str = "deploy/crds/modeldeployments.ferry.dev.yaml";

/// The Helm chart's copy, relative to the repository root (written when the chart exists).
pub const CHART_CRD_PATH: &str = "deploy/helm/ferry/crds/modeldeployments.ferry.dev.yaml";

/// Why the CRD could not be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    /// The CRD did not serialize.
    #[error("cannot serialize the CRD: {0}")]
    Serialize(#[from] serde_norway::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The `ModelDeployment` CustomResourceDefinition as YAML, with a header saying where it
/// comes from.
///
/// # Errors
/// [`CrdGenError::Serialize`].
pub fn crd_yaml() -> Result<String, CrdGenError> {
    let body = serde_norway::to_string(&ModelDeployment::crd())?;
    Ok(format!(
        "# Generated from operator/src/crd.rs by `ferry crdgen`: do not edit.\n{body}"
    ))
}

/// Writes the CRD under the repository root `root`: [`CRD_PATH`], and [`CHART_CRD_PATH`] when
/// the chart's folder exists. Returns the files written.
///
/// # Errors
/// [`CrdGenError`].
pub fn write_crds(root: &Path) -> Result<Vec<PathBuf>, CrdGenError> {
    let yaml = crd_yaml()?;
    let targets = targets(root);
    for path in &targets {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &yaml)
        };
        write().map_err(|source| CrdGenError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(targets)
}

/// The files [`write_crds`] writes under `root`.
pub fn targets(root: &Path) -> Vec<PathBuf> {
    let mut targets = vec![root.join(CRD_PATH)];
    if root.join("deploy/helm/ferry").is_dir() {
        targets.push(root.join(CHART_CRD_PATH));
    }
    targets
}

/// The files under `root` that differ from [`crd_yaml`] (or are missing): empty when current.
///
/// # Errors
/// [`CrdGenError::Serialize`].
pub fn stale_crds(root: &Path) -> Result<Vec<PathBuf>, CrdGenError> {
    let yaml = crd_yaml()?;
    Ok(targets(root)
        .into_iter()
        .filter(|path| std::fs::read_to_string(path).ok().as_deref() != Some(yaml.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// `FERRY_UPDATE_CRDS=1 cargo test -p ferry-operator crd` rewrites the files.
    #[test]
    fn checked_in_crd_yaml_matches_the_rust_types() {
        let root = repo_root();
        if std::env::var_os("FERRY_UPDATE_CRDS").is_some() {
            write_crds(&root).unwrap();
        }
        let stale = stale_crds(&root).unwrap();
        assert!(
            stale.is_empty(),
            "{stale:?} stale: run `ferry crdgen` (or FERRY_UPDATE_CRDS=1 cargo test -p ferry-operator crd) and commit it"
        );
    }

    #[test]
    fn a_changed_or_missing_file_is_reported_stale_until_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("deploy/helm/ferry")).unwrap();
        assert_eq!(stale_crds(dir.path()).unwrap(), targets(dir.path()));
        assert_eq!(write_crds(dir.path()).unwrap().len(), 2);
        assert!(stale_crds(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join(CHART_CRD_PATH), "old").unwrap();
        assert_eq!(
            stale_crds(dir.path()).unwrap(),
            [dir.path().join(CHART_CRD_PATH)]
        );
    }

    #[test]
    fn the_crd_is_structural_and_free_of_what_kubernetes_1_20_refuses() {
        let crd = ModelDeployment::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("modeldeployments.ferry.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["md".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Phase", "Stable", "Candidate", "Weight", "Age"]);
        let schema = serde_json::to_string(&version.schema).unwrap();
        // CEL arrived in 1.25; the references and combinators below are not structural.
        for refused in [
            "x-kubernetes-validations",
            "$ref",
            "\"anyOf\"",
            "\"oneOf\"",
            "\"allOf\"",
            "$schema",
            "definitions",
            "\"const\"",
        ] {
            assert!(!schema.contains(refused), "the schema contains {refused}");
        }
    }
}
