//! Garbage collection of the blob store: blobs that no version references, and what uploads that
//! died left behind (completed staging objects, and in a local folder, half-written files).
//!
//! # Why it is safe beside live uploads
//! An upload publishes its blob at `blobs/sha256/<hex>` *before* the transaction that records its
//! version, and an upload of bytes the store already holds reuses the blob without writing it.
//! A collector that judged by "no version references it" alone could delete a blob in between,
//! and the version would then be acknowledged without its bytes. Two rules close that window:
//!
//! 1. **Safety, by serialization.** A blob is deleted only inside a registry write transaction
//!    that first finds no version referencing it, and the transaction that records a version
//!    checks, under the same lock, that its blob exists
//!    ([`MetadataStore::insert_version`]). Writers are serialized (the event counter row), so
//!    either the delete comes first and the upload fails with a retryable 503, recording
//!    nothing; or the version commits first and the collector sees the reference and keeps the
//!    blob. Versions are never deleted, so a referenced blob stays referenced.
//! 2. **Liveness, by age.** Only objects older than `min_age` are candidates (default one hour
//!    for `ferry registry gc`). Uploads in flight have young blobs and staging objects, so they
//!    are not made to fail. Staging objects need no database check: no version references one,
//!    and removing one (or a local half-written file) from under a live upload makes that
//!    upload fail with a retryable 503 before it is acknowledged, never corrupts it.
//!
//! Multipart uploads a crash left incomplete in S3, GCS or Azure are not visible to listing; the
//! bucket's lifecycle rule (S3: `AbortIncompleteMultipartUpload`) removes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::blob_store::BlobStore;
use crate::error::{Error, Result};
use crate::store::MetadataStore;
use crate::upload::is_sha256;

/// What kind of garbage an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GarbageKind {
    /// A published blob (`blobs/sha256/<hex>`) that no version references.
    Unreferenced,
    /// A completed staging object (`tmp/<uuid>`) that was never published.
    Staging,
    /// A file a local-folder upload was writing when its process died (`<key>#<n>`).
    Partial,
}

/// One object the collector deletes (or, in a dry run, would delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageItem {
    /// Why it is garbage.
    pub kind: GarbageKind,
    /// Its key in the store.
    pub key: String,
    /// The hash, for unreferenced blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
}

/// What a scan of the store found, before anything is deleted.
#[derive(Debug, Clone)]
pub struct GcPlan {
    /// Objects old enough to collect.
    pub candidates: Vec<GarbageItem>,
    /// Garbage younger than the minimum age: left for a later run.
    pub young: Vec<GarbageItem>,
    /// Distinct blobs versions reference, and their bytes.
    pub referenced: Usage,
    /// Keys under `blobs/sha256/` that are not a SHA-256: never touched.
    pub unknown: Vec<String>,
    /// The minimum age the scan used.
    pub min_age: Duration,
}

/// A count of objects and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Number of objects.
    pub count: u64,
    /// Their total size.
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, size: u64) {
        self.count += 1;
        self.bytes += size;
    }
}

/// A deletion that failed; the object stays for the next run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcFailure {
    /// The object's key.
    pub key: String,
    /// What went wrong.
    pub error: String,
}

/// What a collection did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Objects younger than this were kept.
    pub min_age_seconds: u64,
    /// The objects deleted (or that would be), oldest key order.
    pub garbage: Vec<GarbageItem>,
    /// Count and bytes of `garbage`.
    pub collected: Usage,
    /// Garbage younger than the minimum age, kept for a later run.
    pub kept_young: Usage,
    /// Blobs that a version started referencing while the collector ran: kept.
    pub kept_now_referenced: Vec<String>,
    /// Distinct blobs versions reference.
    pub referenced: Usage,
    /// Keys under `blobs/sha256/` that are not a SHA-256: never touched.
    pub unknown: Vec<String>,
    /// Deletions that failed.
    pub failed: Vec<GcFailure>,
}

/// Lists the store, then reads which blobs versions reference, and sorts every object into
/// referenced, collectable, too young or unknown. Deletes nothing.
///
/// The references are read *after* the listing, so a version committed before the scan keeps
/// its blob out of the candidates; one committed later is caught by [`sweep`]'s re-check.
///
/// # Errors
/// [`Error::ObjectStore`] when the store cannot be listed, [`Error::Database`].
pub async fn scan(store: &MetadataStore, blobs: &BlobStore, min_age: Duration) -> Result<GcPlan> {
    let now = Utc::now();
    let published = blobs.list(&blobs.blobs_prefix()).await?;
    let staging = blobs.list(&blobs.staging_prefix()).await?;
    let partials = match blobs.local_dir() {
        Some(dir) => local_partials(dir.to_path_buf()).await?,
        None => Vec::new(),
    };
    let referenced_set = store.referenced_blobs().await?;

    let mut found = Vec::new();
    let mut referenced = Usage::default();
    let mut unknown = Vec::new();
    for meta in published {
        let name = meta.location.filename().unwrap_or_default().to_string();
        if !is_sha256(&name) {
            unknown.push(meta.location.to_string());
            continue;
        }
        if referenced_set.contains(&name) {
            referenced.add(meta.size);
            continue;
        }
        found.push(GarbageItem {
            kind: GarbageKind::Unreferenced,
            key: meta.location.to_string(),
            sha256: Some(name),
            size: meta.size,
            last_modified: meta.last_modified,
        });
    }
    found.extend(staging.into_iter().map(|meta| GarbageItem {
        kind: GarbageKind::Staging,
        key: meta.location.to_string(),
        sha256: None,
        size: meta.size,
        last_modified: meta.last_modified,
    }));
    found.extend(partials);

    let min_age_chrono = chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let (mut candidates, mut young): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|item| now.signed_duration_since(item.last_modified) >= min_age_chrono);
    candidates.sort_by(|a, b| a.key.cmp(&b.key));
    young.sort_by(|a, b| a.key.cmp(&b.key));
    unknown.sort();
    Ok(GcPlan {
        candidates,
        young,
        referenced,
        unknown,
        min_age,
    })
}

/// Deletes the candidates of `plan`. Each blob is deleted inside a write transaction that first
/// checks no version references it (see the module documentation); staging objects and partial
/// files are deleted directly. A failed deletion is reported and the rest continue.
///
/// # Errors
/// [`Error::Database`] when the database cannot be reached; object store failures are reported
/// per object in [`GcReport::failed`].
pub async fn sweep(store: &MetadataStore, blobs: &BlobStore, plan: GcPlan) -> Result<GcReport> {
    let mut report = empty_report(&plan, false);
    for item in plan.candidates {
        let deleted = match item.kind {
            GarbageKind::Unreferenced => {
                let sha256 = item.sha256.clone().unwrap_or_default();
                match store.delete_blob_if_unreferenced(blobs, &sha256).await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        report.kept_now_referenced.push(sha256);
                        continue;
                    }
                    Err(Error::ObjectStore(e)) => Err(e.to_string()),
                    Err(e) => return Err(e),
                }
            }
            GarbageKind::Staging => blobs
                .delete(&Path::from(item.key.as_str()))
                .await
                .map_err(|e| error_chain(&e)),
            GarbageKind::Partial => match blobs.local_dir() {
                Some(dir) => remove_local(dir.join(&item.key)).await,
                None => Err("a partial upload outside a local folder".to_string()),
            },
        };
        match deleted {
            Ok(()) => {
                report.collected.add(item.size);
                report.garbage.push(item);
            }
            Err(error) => report.failed.push(GcFailure {
                key: item.key,
                error,
            }),
        }
    }
    Ok(report)
}

/// [`scan`], then [`sweep`] unless `dry_run`.
///
/// # Errors
/// As [`scan`] and [`sweep`].
pub async fn collect(
    store: &MetadataStore,
    blobs: &BlobStore,
    min_age: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let plan = scan(store, blobs, min_age).await?;
    if dry_run {
        let mut report = empty_report(&plan, true);
        for item in plan.candidates {
            report.collected.add(item.size);
            report.garbage.push(item);
        }
        return Ok(report);
    }
    sweep(store, blobs, plan).await
}

fn empty_report(plan: &GcPlan, dry_run: bool) -> GcReport {
    let mut kept_young = Usage::default();
    for item in &plan.young {
        kept_young.add(item.size);
    }
    GcReport {
        dry_run,
        min_age_seconds: plan.min_age.as_secs(),
        garbage: Vec::new(),
        collected: Usage::default(),
        kept_young,
        kept_now_referenced: Vec::new(),
        referenced: plan.referenced,
        unknown: plan.unknown.clone(),
        failed: Vec::new(),
    }
}

/// Files `<name>#<digits>` under `tmp/` and `blobs/sha256/` of a local store: what
/// `object_store`'s local uploads write before renaming to the final name.
async fn local_partials(dir: std::path::PathBuf) -> Result<Vec<GarbageItem>> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for sub in ["tmp", "blobs/sha256"] {
            let folder = dir.join(sub);
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "listing {}: {e}",
                        folder.display()
                    )));
                }
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let partial = name
                    .split_once('#')
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                let Ok(meta) = entry.metadata() else { continue };
                if !partial || !meta.is_file() {
                    continue;
                }
                let last_modified = meta
                    .modified()
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_else(|_| Utc::now());
                out.push(GarbageItem {
                    kind: GarbageKind::Partial,
                    key: format!("{sub}/{name}"),
                    sha256: None,
                    size: meta.len(),
                    last_modified,
                });
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Internal(format!("listing partial uploads failed: {e}")))?
}

async fn remove_local(path: std::path::PathBuf) -> std::result::Result<(), String> {
    tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
        // Finished (renamed) or removed since the scan: nothing left to collect.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    })
    .await
    .map_err(|e| format!("delete task failed: {e}"))?
}

fn error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partial_upload_files_are_found_by_their_numeric_suffix_only() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let published = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&published).unwrap();
        std::fs::write(tmp.join("u1#1"), b"abc").unwrap();
        std::fs::write(tmp.join("u2"), b"complete").unwrap();
        std::fs::write(tmp.join("u3#x1"), b"not ours").unwrap();
        std::fs::write(published.join(format!("{}#12", "a".repeat(64))), b"ab").unwrap();
        let mut found = local_partials(dir.path().to_path_buf()).await.unwrap();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<(&str, u64)> = found.iter().map(|i| (i.key.as_str(), i.size)).collect();
        assert_eq!(
            keys,
            vec![
                (format!("blobs/sha256/{}#12", "a".repeat(64)).as_str(), 2),
                ("tmp/u1#1", 3),
            ]
        );
        assert!(found.iter().all(|i| i.kind == GarbageKind::Partial));
    }
}
