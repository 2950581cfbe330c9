//! The local copy of what this process serves: artifacts by SHA-256, and a manifest of which
//! version each model was serving. With both, a restart while the registry is down serves the
//! same models as before (static stability).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ferry_api::onnx::ModelSignature;
use ferry_api::records::VersionRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{self, Catalog, CatalogError};

/// What the manifest remembers of a served model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedModel {
    /// The registry's version number.
    pub version: i64,
    /// SHA-256 of the artifact (its file name in the cache).
    pub sha256: String,
    /// The signature, so the model can load without asking the registry.
    pub signature: ModelSignature,
}

/// What the manifest remembers of a served endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedEndpoint {
    /// The endpoint's record as last applied.
    pub record: ferry_api::records::EndpointRecord,
    /// Every version it references, by number.
    pub versions: BTreeMap<i64, CachedModel>,
}

/// The manifest: served name → what it served.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Models by the name they are served under.
    pub models: BTreeMap<String, CachedModel>,
    /// Endpoints by name.
    #[serde(default)]
    pub endpoints: BTreeMap<String, CachedEndpoint>,
}

/// Artifacts in `<dir>/models/<sha256>/model.onnx`, the manifest in `<dir>/manifest.json`.
///
/// Each artifact sits alone in its own folder: ONNX Runtime resolves a model's external data
/// relative to the model file, so even a model that slipped past the registry's refusal of
/// external data could name nothing but its own folder, never another model's bytes.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens (creating) the cache folder.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("models"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        let cache = ArtifactCache {
            dir: dir.to_path_buf(),
        };
        cache.move_flat_layout()?;
        Ok(cache)
    }

    /// Moves artifacts from the earlier layout (`blobs/<sha256>`, all in one folder) into
    /// their own folders, so an upgrade keeps serving from the cache while the registry is down.
    /// Anything else found there is left alone.
    fn move_flat_layout(&self) -> std::io::Result<()> {
        let old = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&old) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(sha256) = name.to_str() else {
                continue;
            };
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(target) = self.path_of(sha256) {
                if let Some(folder) = target.parent() {
                    std::fs::create_dir_all(folder)?;
                }
                std::fs::rename(entry.path(), target)?;
            }
        }
        // Gone only when empty: nothing unknown is deleted.
        let _ = std::fs::remove_dir(&old);
        Ok(())
    }

    /// Where the artifact with this hash lives. The hash comes from the registry (or a manifest
    /// on disk): anything but 64 lowercase hex digits is refused rather than joined to a path,
    /// so no answer can make serving read or write outside its cache.
    ///
    /// # Errors
    /// [`CatalogError::Corrupt`] naming the value.
    pub fn path_of(&self, sha256: &str) -> Result<PathBuf, CatalogError> {
        if !ferry_api::lineage::is_hex_of_len(sha256, 64) {
            let shown: String = sha256
                .chars()
                .take(80)
                .flat_map(char::escape_default)
                .collect();
            return Err(CatalogError::Corrupt(format!(
                "the registry gave `{shown}` as a sha256; expected 64 lowercase hex digits"
            )));
        }
        Ok(self.dir.join("models").join(sha256).join("model.onnx"))
    }

    /// The artifact of `record`, downloaded and verified if it is not cached yet.
    ///
    /// # Errors
    /// [`CatalogError`] when the download fails or the bytes do not match.
    /// A download that takes longer than `limit` (a registry or object store too slow to be
    /// useful, or a response trickling in) fails and leaves nothing behind.
    pub async fn ensure(
        &self,
        catalog: &dyn Catalog,
        record: &VersionRecord,
        limit: std::time::Duration,
    ) -> Result<PathBuf, CatalogError> {
        let path = self.path_of(&record.sha256)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            // Bytes on disk may have rotted or been changed since they were verified: checked
            // again before every load (hashing costs far less than the load), and fetched
            // anew when they no longer match.
            match self.verify(&record.sha256).await {
                Ok(path) => return Ok(path),
                Err(CatalogError::Corrupt(why)) => {
                    tracing::warn!(model = %record.name, version = record.version, %why, "downloading the artifact again");
                }
                Err(e) => return Err(e),
            }
        }
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}",
            record.sha256,
            uuid::Uuid::new_v4().simple()
        ));
        match tokio::time::timeout(limit, catalog::download(catalog, record, &tmp)).await {
            Ok(result) => result?,
            Err(_) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(CatalogError::Unavailable(format!(
                    "downloading {}:{} took longer than the load timeout ({:?}): the registry or \
                     its object store is too slow",
                    record.name, record.version, limit
                )));
            }
        }
        // Verified bytes only ever appear under their hash.
        if let Some(folder) = path.parent() {
            tokio::fs::create_dir_all(folder).await.map_err(|e| {
                CatalogError::Io(format!("cannot create {}: {e}", folder.display()))
            })?;
        }
        tokio::fs::rename(&tmp, &path).await.map_err(|e| {
            CatalogError::Io(format!("cannot move {} into the cache: {e}", tmp.display()))
        })?;
        Ok(path)
    }

    /// Checks a cached artifact still hashes to its name (after a restart, before serving it).
    ///
    /// # Errors
    /// [`CatalogError::Corrupt`] or [`CatalogError::Io`].
    pub async fn verify(&self, sha256: &str) -> Result<PathBuf, CatalogError> {
        let path = self.path_of(sha256)?;
        let check = path.clone();
        let digest = ferry_api::blocking::run_blocking(move || -> std::io::Result<String> {
            let mut file = std::fs::File::open(&check)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(hex::encode(hasher.finalize()));
                }
                hasher.update(&buf[..n]);
            }
        })
        .await
        .map_err(|e| CatalogError::Io(e.to_string()))?
        .map_err(|e| CatalogError::Io(format!("reading {}: {e}", path.display())))?;
        if digest != sha256 {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(CatalogError::Corrupt(format!(
                "cached artifact {} is corrupt (hashes to {digest}); removed",
                path.display()
            )));
        }
        Ok(path)
    }

    /// The manifest written last, or an empty one (read on a blocking thread).
    pub async fn load_manifest(&self) -> Manifest {
        let path = self.dir.join("manifest.json");
        ferry_api::blocking::run_blocking(move || {
            std::fs::read(path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    }

    /// Replaces the manifest atomically (written and synced on a blocking thread).
    ///
    /// # Errors
    /// When it cannot be written.
    pub async fn save_manifest(&self, manifest: &Manifest) -> std::io::Result<()> {
        let tmp = self.dir.join("tmp").join("manifest.json");
        let target = self.dir.join("manifest.json");
        let bytes = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
        ferry_api::blocking::run_blocking(move || {
            std::fs::write(&tmp, bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, target)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sha256_is_joined_to_the_cache_folder() {
        let cache = ArtifactCache {
            dir: PathBuf::from("/var/cache/ferry"),
        };
        let good = "a".repeat(64);
        assert_eq!(
            cache.path_of(&good).unwrap(),
            PathBuf::from("/var/cache/ferry/models")
                .join(&good)
                .join("model.onnx")
        );
        for hostile in [
            "../../../etc/passwd".to_string(),
            format!("../{}", "a".repeat(61)),
            "A".repeat(64),
            "a".repeat(63),
            String::new(),
        ] {
            let err = cache.path_of(&hostile).unwrap_err().to_string();
            assert!(err.contains("64 lowercase hex"), "{hostile}: {err}");
        }
    }

    #[test]
    fn each_artifact_gets_its_own_folder_and_the_flat_layout_is_moved_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs").join(&a), b"model a").unwrap();
        std::fs::write(dir.path().join("blobs").join("not-a-hash"), b"kept").unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let moved = cache.path_of(&a).unwrap();
        assert_eq!(std::fs::read(&moved).unwrap(), b"model a");
        assert!(!dir.path().join("blobs").join(&a).exists());
        assert!(
            dir.path().join("blobs/not-a-hash").exists(),
            "unknown files are kept"
        );
        // Two artifacts never share a folder: a relative path in one (external data) cannot
        // reach the other.
        let other = cache.path_of(&b).unwrap();
        assert_ne!(moved.parent(), other.parent());
        assert_eq!(moved.parent().unwrap().file_name().unwrap(), a.as_str());
    }
}
