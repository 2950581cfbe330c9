//! Writing an upload into a local folder, with its bytes on their way to the disk while the
//! upload is still being received.
//!
//! `object_store`'s local multipart upload leaves every byte in the page cache until the
//! registry's `fsync` at the end, so an upload took the time to receive the bytes *plus* the
//! time to flush all of them. Here a flush (`fdatasync` on a second handle, on the blocking
//! pool) starts each time [`FLUSH_STEP`] more bytes are written and none is running, so the disk
//! writes while the network delivers, and the final `fsync` ([`super::BlobStore::sync`]) finds
//! only the tail left. Writes never wait for a flush; a flush's failure fails the upload.
//!
//! The file is `<key>#<n>` until [`LocalWriter::complete`] renames it to its key, the naming of
//! `object_store`'s local uploads, which `ferry registry gc` knows as a half-written file.

use std::fs::File;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use tokio::task::JoinHandle;

/// Bytes collected on the reactor before a blocking task writes them: the network delivers
/// chunks of a few KiB, and a task per chunk would cost more than the writes.
pub(super) const WRITE_BATCH: usize = 4 * 1024 * 1024;

/// Bytes written between the starts of two flushes.
const FLUSH_STEP: u64 = 32 * 1024 * 1024;

/// An object being written to a local file. At most two batches are held: one being written
/// on the blocking pool, one collecting; a trickling upload holds no thread.
pub(super) struct LocalWriter {
    partial: PathBuf,
    dest: PathBuf,
    /// The file and how far it is written, while no task has it.
    idle: Option<Written>,
    /// The task writing the previous batch; it hands the file back.
    in_flight: Option<JoinHandle<std::io::Result<Written>>>,
    batch: Vec<Bytes>,
    batch_len: usize,
    /// The flush running, if any, and how many bytes were written when it started.
    flushing: Option<JoinHandle<std::io::Result<()>>>,
    flushed_from: u64,
    /// Completed or aborted: nothing to remove on drop.
    settled: bool,
}

/// The file and its progress, moved into each write task and back.
struct Written {
    file: File,
    /// Bytes written so far.
    len: u64,
}

impl LocalWriter {
    /// Creates `<dest>#<n>` (the first free `n`) and its folders.
    pub(super) async fn create(dest: PathBuf) -> std::io::Result<Self> {
        let (file, partial) = tokio::task::spawn_blocking({
            let dest = dest.clone();
            move || create_partial(&dest)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(LocalWriter {
            partial,
            dest,
            idle: Some(Written { file, len: 0 }),
            in_flight: None,
            batch: Vec::new(),
            batch_len: 0,
            flushing: None,
            flushed_from: 0,
            settled: false,
        })
    }

    /// Appends bytes; waits for the previous batch's write when a batch is full (the upload's
    /// back-pressure: the client is read no faster than the disk takes the bytes).
    pub(super) async fn put(&mut self, bytes: Bytes) -> std::io::Result<()> {
        self.batch_len += bytes.len();
        self.batch.push(bytes);
        if self.batch_len >= WRITE_BATCH {
            self.write_batch().await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self) -> std::io::Result<()> {
        let mut written = self.take_file().await?;
        self.maybe_flush(&written).await?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            written.append(&batch)?;
            Ok(written)
        }));
        Ok(())
    }

    /// Starts a flush of what is written when enough is new and the previous flush is done.
    async fn maybe_flush(&mut self, written: &Written) -> std::io::Result<()> {
        if written.len - self.flushed_from < FLUSH_STEP {
            return Ok(());
        }
        if let Some(running) = &self.flushing {
            if !running.is_finished() {
                return Ok(());
            }
            self.finish_flush().await?;
        }
        let file = written.file.try_clone()?;
        self.flushed_from = written.len;
        self.flushing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        Ok(())
    }

    /// Waits for the running flush and reports its failure: the kernel reports a write-back
    /// error once, to whichever handle asks first, so it must not be dropped here.
    async fn finish_flush(&mut self) -> std::io::Result<()> {
        match self.flushing.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// The file, once the task writing it (if any) is done.
    async fn take_file(&mut self) -> std::io::Result<Written> {
        if let Some(task) = self.in_flight.take() {
            return task.await.map_err(std::io::Error::other)?;
        }
        self.idle
            .take()
            .ok_or_else(|| std::io::Error::other("the writer failed earlier"))
    }

    /// Writes what is left and renames the file to its key. Durability is the caller's
    /// ([`super::BlobStore::sync`] after publishing), as with every other store.
    pub(super) async fn complete(mut self) -> std::io::Result<()> {
        if !self.batch.is_empty() {
            self.write_batch().await?;
        }
        let written = self.take_file().await?;
        self.finish_flush().await?;
        let (partial, dest) = (self.partial.clone(), self.dest.clone());
        let result = tokio::task::spawn_blocking(move || {
            drop(written);
            std::fs::rename(&partial, &dest)
        })
        .await
        .map_err(std::io::Error::other)?;
        // Renamed, or failed with the file gone (collected under us) or left for the drop.
        self.settled = result.is_ok();
        result
    }

    /// Abandons the upload and removes its file.
    pub(super) async fn abort(mut self) {
        self.settled = true;
        if let Some(task) = self.in_flight.take() {
            let _ = task.await;
        }
        let _ = self.finish_flush().await;
        let partial = self.partial.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(&partial)).await;
        if let Ok(Err(e)) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.partial.display(), error = %e, "could not remove an abandoned upload; gc will");
        }
    }
}

impl Drop for LocalWriter {
    /// An upload dropped half-way (the client went away, the request was cancelled) leaves no
    /// file behind; a write still in flight finishes into the unlinked file.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let partial = std::mem::take(&mut self.partial);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || std::fs::remove_file(partial))),
            Err(_) => drop(std::fs::remove_file(partial)),
        }
    }
}

impl Written {
    fn append(&mut self, batch: &[Bytes]) -> std::io::Result<()> {
        for chunk in batch {
            self.file.write_all(chunk)?;
            self.len += chunk.len() as u64;
        }
        Ok(())
    }
}

fn create_partial(dest: &FsPath) -> std::io::Result<(File, PathBuf)> {
    let mut name = dest.as_os_str().to_owned();
    name.push("#");
    for n in 1u32.. {
        let mut candidate = name.clone();
        candidate.push(n.to_string());
        let candidate = PathBuf::from(candidate);
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&candidate)
        };
        let opened = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                open()
            }
            other => other,
        };
        match opened {
            Ok(file) => return Ok((file, candidate)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free name for a partial upload"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_under_the_key_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("blobs").join("sha256").join("k");
        let mut writer = LocalWriter::create(dest.clone()).await.unwrap();
        let partial = dir.path().join("blobs").join("sha256").join("k#1");
        // Past two flush steps, so that flushes run while batches are written.
        let data: Vec<u8> = (0..(2 * FLUSH_STEP as usize + WRITE_BATCH + 12_345))
            .map(|i| (i % 253) as u8)
            .collect();
        for piece in data.chunks(65_536 + 7) {
            writer.put(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert!(partial.exists());
        assert!(!dest.exists(), "visible before complete");
        writer.complete().await.unwrap();
        assert!(!partial.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }

    #[tokio::test]
    async fn a_taken_name_moves_to_the_next_number() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("k");
        std::fs::write(dir.path().join("k#1"), b"another upload").unwrap();
        let mut writer = LocalWriter::create(dest.clone()).await.unwrap();
        writer.put(Bytes::from_static(b"mine")).await.unwrap();
        writer.complete().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
        assert_eq!(
            std::fs::read(dir.path().join("k#1")).unwrap(),
            b"another upload"
        );
    }

    #[tokio::test]
    async fn aborted_or_dropped_uploads_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut aborted = LocalWriter::create(dir.path().join("a")).await.unwrap();
        aborted
            .put(Bytes::from(vec![1u8; WRITE_BATCH + 1]))
            .await
            .unwrap();
        aborted.abort().await;
        let mut dropped = LocalWriter::create(dir.path().join("d")).await.unwrap();
        dropped
            .put(Bytes::from(vec![2u8; WRITE_BATCH + 1]))
            .await
            .unwrap();
        drop(dropped);
        // The drop removes the file on the blocking pool.
        for _ in 0..100 {
            if std::fs::read_dir(dir.path()).unwrap().next().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_file_collected_under_the_upload_fails_the_rename_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LocalWriter::create(dir.path().join("k")).await.unwrap();
        writer.put(Bytes::from_static(b"bytes")).await.unwrap();
        std::fs::remove_file(dir.path().join("k#1")).unwrap();
        let err = writer.complete().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(!dir.path().join("k").exists());
    }
}
