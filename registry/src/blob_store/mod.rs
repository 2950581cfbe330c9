//! Model bytes in object storage, addressed by their SHA-256.
//!
//! Layout under the store's root: `blobs/sha256/<hex>` for published blobs and `tmp/<uuid>` for
//! uploads in flight. A blob appears at its final key only once all its bytes are written and
//! their hash is known (a rename, or the completion of a multipart upload), so a reader never
//! sees a partial blob, whatever moment the process dies at.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_api::storage::StoreRoot;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, WriteMultipart};

mod local;

use crate::error::{Error, Result};

/// Size of the parts an upload is cut into: the smallest S3 accepts, and small enough to keep an
/// upload's buffers to a few of them.
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts written concurrently per upload; together with [`PART_SIZE`] this bounds upload memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Chunk size when streaming a local file to a client.
const READ_CHUNK: usize = 1024 * 1024;

pub use ferry_api::storage::DEFAULT_RETRY_TIMEOUT;

/// Where blobs live: any `object_store` backend plus a root prefix inside it.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The folder behind a local store: object_store does not fsync, so [`BlobStore::sync`] does.
    local_dir: Option<std::path::PathBuf>,
    /// The URL without credentials, for logs and `/readyz`.
    display: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobStore({})", self.display)
    }
}

/// A blob being read: its total size and the requested bytes as a stream.
pub struct BlobRead {
    /// The byte range being returned.
    pub range: Range<u64>,
    /// The bytes.
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
}

impl BlobStore {
    /// Opens the store a URL names: `file:///abs/dir` (or a plain path), `memory://`,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    ///
    /// Cloud credentials come from the usual environment variables (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`); `options` are `object_store` configuration keys such as `aws_endpoint`,
    /// `aws_region` or `aws_allow_http`, and override the environment.
    ///
    /// # Errors
    /// A message naming the URL (without credentials) and what is wrong with it.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self, String> {
        Self::open_with_retry(url, options, DEFAULT_RETRY_TIMEOUT)
    }

    /// [`BlobStore::open`], retrying a failing cloud store (S3, GCS, Azure) for at most
    /// `retry_timeout` from a request's first attempt, with exponential backoff; past it the
    /// request fails ([`Error::ObjectStore`], a 503). Local folders are not retried.
    ///
    /// # Errors
    /// As [`BlobStore::open`].
    pub fn open_with_retry(
        url: &str,
        options: &[(String, String)],
        retry_timeout: Duration,
    ) -> Result<Self, String> {
        let at = StoreRoot::open(url, options, retry_timeout)?;
        Ok(BlobStore {
            store: at.store,
            root: at.root,
            local_dir: at.local_dir,
            display: at.display,
        })
    }

    /// An in-memory store, for tests and throwaway runs.
    pub fn in_memory() -> Self {
        BlobStore {
            store: Arc::new(InMemory::new()),
            root: Path::default(),
            local_dir: None,
            display: "memory://".into(),
        }
    }

    /// Wraps any `object_store` backend (fault-injecting stores in tests, for instance).
    pub fn from_store(store: Arc<dyn ObjectStore>, display: impl Into<String>) -> Self {
        BlobStore {
            store,
            root: Path::default(),
            local_dir: None,
            display: display.into(),
        }
    }

    /// The store's URL with any credentials removed.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The key of the published blob with this hash.
    pub fn blob_path(&self, sha256: &str) -> Path {
        self.blobs_prefix().child(sha256.to_string())
    }

    /// The prefix under which uploads in flight are staged.
    pub fn staging_prefix(&self) -> Path {
        self.root.child("tmp")
    }

    /// Size of the published blob with this hash, if there is one.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when the store cannot be asked.
    pub async fn size_of(&self, sha256: &str) -> Result<Option<u64>> {
        match self.store.head(&self.blob_path(sha256)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts writing a new object at a fresh staging key.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when the upload cannot be started.
    pub async fn stage(&self) -> Result<BlobWriter> {
        let path = self
            .staging_prefix()
            .child(uuid::Uuid::new_v4().to_string());
        self.writer_at(path).await
    }

    /// Starts writing directly at the final key of `sha256`. The object becomes visible only when
    /// [`BlobWriter::complete`] is called, which the caller does only after checking the hash.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when the upload cannot be started.
    pub async fn write_final(&self, sha256: &str) -> Result<BlobWriter> {
        self.writer_at(self.blob_path(sha256)).await
    }

    async fn writer_at(&self, path: Path) -> Result<BlobWriter> {
        if let Some(dir) = &self.local_dir {
            let file = local_file(dir, &path);
            let writer = local::LocalWriter::create(file)
                .await
                .map_err(|e| local_error(&path, e))?;
            return Ok(BlobWriter {
                inner: Writer::Local(writer),
                path,
            });
        }
        let upload = self.store.put_multipart(&path).await?;
        Ok(BlobWriter {
            inner: Writer::Multipart(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            path,
        })
    }

    /// Moves a completed staged object to the final key of `sha256`, or drops it when identical
    /// bytes are already published there.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when the store fails; the staged object is then left for `gc`.
    pub async fn publish(&self, staged: &Path, sha256: &str) -> Result<()> {
        let target = self.blob_path(sha256);
        if self.size_of(sha256).await?.is_some() {
            self.delete_quietly(staged).await;
            return Ok(());
        }
        // Same content under the same key: a concurrent publish of the same bytes is harmless.
        self.store.rename(staged, &target).await?;
        Ok(())
    }

    /// Deletes an object, logging instead of failing: used to clean up after a failed upload,
    /// where the original error is the one worth reporting.
    pub async fn delete_quietly(&self, path: &Path) {
        if let Err(e) = self.store.delete(path).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(%path, error = %e, "could not delete a staged upload; gc will");
        }
    }

    /// Makes a published blob durable before the version that references it is acknowledged.
    /// Object stores are durable once a write returns; a local folder needs the file and its
    /// directory flushed, which `object_store` does not do.
    ///
    /// # Errors
    /// [`Error::Internal`] when the flush fails.
    pub async fn sync(&self, sha256: &str) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let file = dir.join("blobs").join("sha256").join(sha256);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let blob = match std::fs::File::open(&file) {
                Ok(f) => f,
                // Collected by a concurrent gc: the version's insert re-checks the blob under
                // the write lock and refuses it, which is the error worth reporting.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            blob.sync_all()?;
            if let Some(parent) = file.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("fsync task failed: {e}")))?
        .map_err(|e| Error::Internal(format!("fsync of blob sha256:{sha256} failed: {e}")))
    }

    /// Streams `range` of the blob (the whole blob when `None`).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the blob is missing (which means the store lost it),
    /// [`Error::ObjectStore`] for other failures.
    pub async fn read(&self, sha256: &str, range: Option<Range<u64>>) -> Result<BlobRead> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&self.blob_path(sha256), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Internal(format!(
                    "blob sha256:{sha256} is referenced but missing from the store"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let range = result.range.clone();
        let stream = match result.payload {
            // object_store reads local files 8 KiB at a time, one blocking task per chunk; a
            // reader thread with 1 MiB chunks is several times faster for model-sized files.
            GetResultPayload::File(file, _) => local_file_stream(file, range.clone()),
            GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
        };
        Ok(BlobRead { range, stream })
    }

    /// The prefix under which everything of this store lives.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder behind a local store (`file://`), where uploads in progress are files named
    /// `<key>#<n>` that listing does not show; `None` for other stores.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// The prefix under which published blobs live (`blobs/sha256/`).
    pub fn blobs_prefix(&self) -> Path {
        self.root.child("blobs").child("sha256")
    }

    /// Lists every object under `prefix` (a full key prefix, e.g. [`BlobStore::root`] or
    /// [`BlobStore::staging_prefix`]) with its size and age.
    ///
    /// # Errors
    /// [`Error::ObjectStore`].
    pub async fn list(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        Ok(self.store.list(Some(prefix)).try_collect().await?)
    }

    /// Writes a small object whole (e.g. a batch of the prediction log) at `parts` under the
    /// root; it becomes visible atomically.
    ///
    /// # Errors
    /// [`Error::ObjectStore`].
    pub async fn put(&self, parts: &[&str], bytes: Bytes) -> Result<Path> {
        Ok(self.root_store().put(parts, bytes).await?)
    }

    /// The store and its root, as the contract's [`StoreRoot`].
    pub fn root_store(&self) -> StoreRoot {
        StoreRoot {
            store: self.store.clone(),
            root: self.root.clone(),
            local_dir: self.local_dir.clone(),
            display: self.display.clone(),
        }
    }

    /// Reads a small object whole.
    ///
    /// # Errors
    /// [`Error::ObjectStore`].
    pub async fn get_all(&self, path: &Path) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// Deletes an object.
    ///
    /// # Errors
    /// [`Error::ObjectStore`]; deleting a missing object is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the store answers, for `/readyz`.
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        match self.store.head(&self.root.child("ping")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An object being written in parts. Dropping it without [`BlobWriter::complete`] leaves nothing
/// visible at its key.
pub struct BlobWriter {
    inner: Writer,
    path: Path,
}

enum Writer {
    /// Any object store: `object_store`'s multipart upload.
    Multipart(WriteMultipart),
    /// A local folder: flushed to the disk while it is written (see `local.rs`).
    Local(local::LocalWriter),
}

impl BlobWriter {
    /// Appends bytes, waiting while too many parts are in flight (this is the upload's
    /// back-pressure: the client is read no faster than the store is written).
    ///
    /// # Errors
    /// [`Error::ObjectStore`] when a part fails.
    pub async fn put(&mut self, bytes: Bytes) -> Result<()> {
        match &mut self.inner {
            Writer::Multipart(w) => {
                w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                w.put(bytes);
            }
            Writer::Local(w) => w.put(bytes).await.map_err(|e| local_error(&self.path, e))?,
        }
        Ok(())
    }

    /// The key being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the last part and makes the object visible at its key.
    ///
    /// # Errors
    /// [`Error::ObjectStore`].
    pub async fn complete(self) -> Result<Path> {
        match self.inner {
            Writer::Multipart(w) => {
                w.finish().await?;
            }
            Writer::Local(w) => w.complete().await.map_err(|e| local_error(&self.path, e))?,
        }
        Ok(self.path)
    }

    /// Abandons the upload and frees what the store holds for it.
    pub async fn abort(self) {
        let path = self.path;
        match self.inner {
            Writer::Multipart(w) => {
                if let Err(e) = w.abort().await {
                    tracing::warn!(%path, error = %e, "could not abort an upload; the store's lifecycle rules or gc will clean it");
                }
            }
            Writer::Local(w) => w.abort().await,
        }
    }
}

/// The file behind `path` in a local store rooted at `dir`.
fn local_file(dir: &std::path::Path, path: &Path) -> std::path::PathBuf {
    path.parts()
        .fold(dir.to_path_buf(), |file, part| file.join(part.as_ref()))
}

/// A local write's failure as the object store error `object_store` itself would report: a
/// missing file is `NotFound` (what a concurrent gc causes), anything else the store failing.
fn local_error(path: &Path, error: std::io::Error) -> Error {
    let error = if error.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound {
            path: path.to_string(),
            source: Box::new(error),
        }
    } else {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(error),
        }
    };
    Error::ObjectStore(error)
}

fn local_file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    use std::io::{Read, Seek, SeekFrom};
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut remaining = range.end - range.start;
        while remaining > 0 {
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            match file.read_exact(&mut buf) {
                Ok(()) => {
                    remaining -= want as u64;
                    // The receiver is gone when the client hung up: stop reading.
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_staged_blob_is_invisible_until_published() {
        let blobs = BlobStore::in_memory();
        let mut writer = blobs.stage().await.unwrap();
        writer.put(Bytes::from_static(b"hello")).await.unwrap();
        let staged = writer.complete().await.unwrap();
        assert_eq!(blobs.size_of("abc").await.unwrap(), None);
        blobs.publish(&staged, "abc").await.unwrap();
        assert_eq!(blobs.size_of("abc").await.unwrap(), Some(5));
        assert!(
            blobs
                .list(&blobs.staging_prefix())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn publishing_identical_bytes_twice_keeps_one_blob_and_no_staging_leftovers() {
        let blobs = BlobStore::in_memory();
        for _ in 0..2 {
            let mut writer = blobs.stage().await.unwrap();
            writer.put(Bytes::from_static(b"same")).await.unwrap();
            let staged = writer.complete().await.unwrap();
            blobs.publish(&staged, "h").await.unwrap();
        }
        let all = blobs.list(&Path::default()).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
    }

    #[tokio::test]
    async fn an_aborted_writer_leaves_nothing_at_its_key() {
        let blobs = BlobStore::in_memory();
        let mut writer = blobs.write_final("x").await.unwrap();
        writer.put(Bytes::from_static(b"partial")).await.unwrap();
        writer.abort().await;
        assert_eq!(blobs.size_of("x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_local_upload_whose_file_was_collected_fails_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap(), &[]).unwrap();
        let mut writer = blobs.stage().await.unwrap();
        writer.put(Bytes::from_static(b"abc")).await.unwrap();
        // What `ferry registry gc` with a too short minimum age does: the half-written file goes.
        for entry in std::fs::read_dir(dir.path().join("tmp")).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let err = writer.complete().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::ObjectStore(object_store::Error::NotFound { .. })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn ranges_of_local_files_are_read_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap(), &[]).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = blobs.stage().await.unwrap();
        writer.put(Bytes::from(data.clone())).await.unwrap();
        let staged = writer.complete().await.unwrap();
        blobs.publish(&staged, "d").await.unwrap();
        for range in [
            0..3_000_000u64,
            5..10,
            1_048_570..2_097_160,
            2_999_999..3_000_000,
        ] {
            let read = blobs.read("d", Some(range.clone())).await.unwrap();
            let got: Vec<Bytes> = read.stream.try_collect().await.unwrap();
            let got: Vec<u8> = got.concat();
            assert_eq!(got, &data[range.start as usize..range.end as usize]);
        }
    }
}
