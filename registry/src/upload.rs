//! Receiving a model version: bytes streamed to object storage while they are hashed and parsed
//! as ONNX on a blocking thread, then recorded in one transaction.
//!
//! Memory stays flat whatever the model's size: the bytes pass through in chunks, at most two
//! 1 MiB batches wait for or are in hashing, and the object store holds at most a few parts in
//! flight.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::blob_store::{BlobStore, BlobWriter};
use crate::error::{Error, Result};
use crate::store::{Inserted, MetadataStore, NewVersion};
use ferry_api::lineage::{VersionMetadata, is_hex_of_len};
use ferry_api::onnx::{ModelSignature, OnnxError, OnnxScanner};

/// Limits that apply to one upload.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Largest model accepted, in bytes (413 past it).
    pub max_model_bytes: u64,
    /// Largest `metadata` part accepted, in bytes.
    pub max_metadata_bytes: usize,
    /// Longest the client may pause between two chunks before the upload is dropped (408).
    pub idle_timeout: Duration,
    /// Refuse versions without a git commit and hashed training data.
    pub require_lineage: bool,
    /// Uploads received at once; one more is a 429 (each holds a connection, an object-store
    /// write and, while bytes are hashed, a blocking thread).
    pub max_concurrent: usize,
    /// Slowest average rate, in bytes per second, an upload may keep once
    /// [`UploadLimits::min_rate_after`] has passed (408 below it): a client trickling a byte
    /// just inside the idle timeout cannot hold its place for hours.
    pub min_rate: u64,
    /// How long an upload may take before its average rate is judged.
    pub min_rate_after: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_model_bytes: 2 * 1024 * 1024 * 1024,
            max_metadata_bytes: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            require_lineage: false,
            max_concurrent: 32,
            min_rate: 16 * 1024,
            min_rate_after: Duration::from_secs(60),
        }
    }
}

/// Metadata up to this size is parsed on the reactor; larger is parsed on the blocking pool.
const INLINE_METADATA_BYTES: usize = 64 * 1024;

/// Bytes handed to the hashing thread at a time: the network delivers chunks of a few KiB, and
/// waking the thread for each would cost more in context switches than the hashing itself.
const DIGEST_BATCH: usize = 1024 * 1024;

/// Where the model bytes go while they arrive.
enum Sink {
    /// To a staging key, renamed to `blobs/sha256/<hex>` once the hash is known.
    Staged(BlobWriter),
    /// Straight to the final key of a declared hash; completed only if the hash matches.
    Direct(BlobWriter),
    /// Nowhere: the bytes are already stored (same hash) or the idempotency key was used before,
    /// so they are only hashed for comparison.
    HashOnly,
}

/// The model part, received and digested.
struct Received {
    sink: Sink,
    sha256: String,
    size: u64,
    signature: ModelSignature,
}

/// One upload in progress: parts are fed in whatever order the client sends them, then
/// [`UploadSession::finish`] records the version.
pub struct UploadSession {
    store: MetadataStore,
    blobs: BlobStore,
    limits: UploadLimits,
    model: String,
    idempotency_key: Option<String>,
    metadata: Option<VersionMetadata>,
    received: Option<Received>,
}

impl UploadSession {
    /// Starts an upload of a new version of `model` (a validated name).
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed idempotency key.
    pub fn new(
        store: MetadataStore,
        blobs: BlobStore,
        limits: UploadLimits,
        model: String,
        idempotency_key: Option<String>,
    ) -> Result<Self> {
        if let Some(key) = &idempotency_key
            && (key.is_empty()
                || key.len() > 255
                || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            return Err(Error::BadRequest(
                "Idempotency-Key must be 1 to 255 printable ASCII characters".into(),
            ));
        }
        Ok(UploadSession {
            store,
            blobs,
            limits,
            model,
            idempotency_key,
            metadata: None,
            received: None,
        })
    }

    /// Receives the `metadata` part. Up to 16 MiB of JSON (a profile can be large) is parsed
    /// and validated on the blocking pool, not on the reactor, when it is more than a little.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a second metadata part, or metadata that does not validate.
    pub async fn set_metadata(&mut self, bytes: Vec<u8>) -> Result<()> {
        if self.metadata.is_some() {
            return Err(Error::BadRequest(
                "the upload has two `metadata` parts; send one".into(),
            ));
        }
        let metadata = if bytes.len() <= INLINE_METADATA_BYTES {
            VersionMetadata::from_json(&bytes)?
        } else {
            ferry_api::blocking::run_blocking(move || VersionMetadata::from_json(&bytes))
                .await
                .map_err(|e| Error::Internal(format!("parsing the metadata failed: {e}")))??
        };
        self.metadata = Some(metadata);
        Ok(())
    }

    /// The metadata limit, for the caller reading the part.
    pub fn max_metadata_bytes(&self) -> usize {
        self.limits.max_metadata_bytes
    }

    /// Receives the `model` part as a stream of chunks.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`], [`Error::RequestTimeout`], [`Error::Unprocessable`] as soon as
    /// the bytes cannot be ONNX, [`Error::BadRequest`] when the stream fails, and storage errors.
    /// Whatever was written is removed before returning an error.
    pub async fn receive_model<S, E>(&mut self, stream: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Error>,
    {
        if self.received.is_some() {
            return Err(Error::BadRequest(
                "the upload has two `model` parts; send one".into(),
            ));
        }
        let mut sink = self.choose_sink().await?;
        match self.pump(stream, &mut sink).await {
            Ok((sha256, size, signature)) => {
                self.received = Some(Received {
                    sink,
                    sha256,
                    size,
                    signature,
                });
                Ok(())
            }
            Err(e) => {
                discard(sink).await;
                Err(e)
            }
        }
    }

    async fn choose_sink(&mut self) -> Result<Sink> {
        if let Some(key) = &self.idempotency_key
            && self
                .store
                .find_idempotent(&self.model, key)
                .await?
                .is_some()
        {
            return Ok(Sink::HashOnly);
        }
        if let Some(declared) = self.metadata.as_ref().and_then(|m| m.sha256.as_deref()) {
            if self.blobs.size_of(declared).await?.is_some() {
                return Ok(Sink::HashOnly);
            }
            return Ok(Sink::Direct(self.blobs.write_final(declared).await?));
        }
        Ok(Sink::Staged(self.blobs.stage().await?))
    }

    async fn pump<S, E>(
        &mut self,
        mut stream: S,
        sink: &mut Sink,
    ) -> Result<(String, u64, ModelSignature)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: Into<Error>,
    {
        let mut digester = Digester::new();
        let started = tokio::time::Instant::now();
        let mut size: u64 = 0;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        loop {
            let next = tokio::time::timeout(self.limits.idle_timeout, stream.next())
                .await
                .map_err(|_| {
                    Error::RequestTimeout(format!(
                        "the client sent no data for {} s in the middle of the upload",
                        self.limits.idle_timeout.as_secs()
                    ))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(Into::into)?;
            size += chunk.len() as u64;
            let elapsed = started.elapsed();
            if elapsed > self.limits.min_rate_after
                && (size as f64) < self.limits.min_rate as f64 * elapsed.as_secs_f64()
            {
                return Err(Error::RequestTimeout(format!(
                    "the upload averaged {:.0} bytes/s over {} s, below this registry's minimum \
                     of {} bytes/s",
                    size as f64 / elapsed.as_secs_f64(),
                    elapsed.as_secs(),
                    self.limits.min_rate
                )));
            }
            if size > self.limits.max_model_bytes {
                return Err(Error::PayloadTooLarge(format!(
                    "the model is larger than this registry's limit of {} bytes",
                    self.limits.max_model_bytes
                )));
            }
            batch_len += chunk.len();
            batch.push(chunk.clone());
            if batch_len >= DIGEST_BATCH {
                batch_len = 0;
                if !digester.feed(std::mem::take(&mut batch)).await? {
                    // The bytes are not ONNX; the digest says why.
                    break;
                }
            }
            match sink {
                Sink::Staged(w) | Sink::Direct(w) => w.put(chunk).await?,
                Sink::HashOnly => {}
            }
        }
        if !batch.is_empty() {
            // `false` here means the digester already has its verdict.
            digester.feed(batch).await?;
        }
        let digest = digester.finish().await?;
        let signature = digest.signature.map_err(|e| {
            Error::Unprocessable(format!("the `model` part is not a valid ONNX model: {e}"))
        })?;
        Ok((digest.sha256, digest.size, signature))
    }

    /// Checks everything, publishes the bytes and records the version.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a missing model part or a hash mismatch, [`Error::Unprocessable`]
    /// for missing lineage, [`Error::Conflict`] for a reused idempotency key, storage errors.
    pub async fn finish(mut self) -> Result<Inserted> {
        let Some(Received {
            sink,
            sha256,
            size,
            signature,
        }) = self.received.take()
        else {
            return Err(Error::BadRequest(
                "the upload has no `model` part; send the .onnx bytes in a multipart part named `model`"
                    .into(),
            ));
        };
        let (metadata, idempotency) = match self.prepare(&sha256).await {
            Ok(Prepared::New {
                metadata,
                idempotency,
            }) => (metadata, idempotency),
            Ok(Prepared::Replay(record)) => {
                discard(sink).await;
                return Ok(Inserted::Replayed(record));
            }
            Err(e) => {
                discard(sink).await;
                return Err(e);
            }
        };
        self.publish(sink, &sha256).await?;
        // Durable bytes before a durable row: an acknowledged version survives a power cut.
        self.blobs.sync(&sha256).await?;
        // From here a failure leaves a published blob that no version references: harmless
        // (nothing points at it) and collected by `ferry registry gc`.
        self.store
            .insert_version(
                NewVersion {
                    model: self.model.clone(),
                    sha256,
                    size,
                    signature,
                    metadata,
                    idempotency,
                },
                &self.blobs,
            )
            .await
    }

    /// Validates metadata against the received bytes and resolves the idempotency key.
    async fn prepare(&mut self, sha256: &str) -> Result<Prepared> {
        let metadata = self.metadata.take().unwrap_or_default();
        if self.limits.require_lineage {
            metadata.require_lineage()?;
        }
        if let Some(declared) = &metadata.sha256
            && declared != sha256
        {
            return Err(Error::BadRequest(format!(
                "metadata says sha256 {declared} but the uploaded bytes hash to {sha256}; the upload was corrupted or the wrong file was sent"
            )));
        }
        let idempotency = self
            .idempotency_key
            .clone()
            .map(|key| (key, fingerprint(sha256, &metadata)));
        if let Some((key, fingerprint)) = &idempotency
            && let Some((version, stored)) = self.store.find_idempotent(&self.model, key).await?
        {
            if stored.as_deref() != Some(fingerprint.as_str()) {
                return Err(crate::store::idempotency_conflict(key));
            }
            let record = self
                .store
                .get_version(&self.model, &ferry_api::names::VersionRef::Number(version))
                .await?;
            return Ok(Prepared::Replay(record));
        }
        Ok(Prepared::New {
            metadata,
            idempotency,
        })
    }

    /// Makes the bytes visible at `blobs/sha256/<hex>`.
    async fn publish(&mut self, sink: Sink, sha256: &str) -> Result<()> {
        match sink {
            Sink::HashOnly => Ok(()),
            Sink::Direct(writer) => {
                writer.complete().await.map_err(collected_under_us)?;
                Ok(())
            }
            Sink::Staged(writer) => {
                let staged = writer.complete().await.map_err(collected_under_us)?;
                if let Err(e) = self.blobs.publish(&staged, sha256).await {
                    self.blobs.delete_quietly(&staged).await;
                    return Err(collected_under_us(e));
                }
                Ok(())
            }
        }
    }
}

/// The object an upload is writing can only vanish under it when something deleted it: a
/// `ferry registry gc` run with a minimum age shorter than the upload. Nothing was recorded, so
/// the client is told to retry (503) rather than that the server failed. (In a local folder the
/// half-written file vanishing makes the final rename fail with `NotFound`.)
fn collected_under_us(error: Error) -> Error {
    let Error::ObjectStore(inner) = &error else {
        return error;
    };
    let mut vanished = matches!(inner, object_store::Error::NotFound { .. });
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(inner);
    while let Some(e) = cause {
        vanished |= e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
        cause = e.source();
    }
    if vanished {
        Error::Unavailable(format!(
            "the upload's object vanished before it was published (a concurrent gc collected it): {inner}"
        ))
    } else {
        error
    }
}

enum Prepared {
    New {
        metadata: VersionMetadata,
        idempotency: Option<(String, String)>,
    },
    Replay(ferry_api::records::VersionRecord),
}

/// Removes whatever a failed upload wrote.
async fn discard(sink: Sink) {
    match sink {
        Sink::Staged(w) | Sink::Direct(w) => w.abort().await,
        Sink::HashOnly => {}
    }
}

struct DigestOutcome {
    sha256: String,
    size: u64,
    signature: std::result::Result<ModelSignature, OnnxError>,
}

/// Hashes and parses the bytes on the blocking pool, one batch at a time: a thread is held
/// only while there are bytes to hash (a trickling upload holds none), and the next batch is
/// received while the previous one is hashed.
struct Digester {
    /// The state, when no batch is being hashed.
    idle: Option<DigestState>,
    /// The batch being hashed, which gives the state back.
    busy: Option<JoinHandle<DigestState>>,
}

struct DigestState {
    hasher: Sha256,
    scanner: OnnxScanner,
    size: u64,
    failed: Option<OnnxError>,
}

impl Digester {
    fn new() -> Self {
        Digester {
            idle: Some(DigestState {
                hasher: Sha256::new(),
                scanner: OnnxScanner::new(),
                size: 0,
                failed: None,
            }),
            busy: None,
        }
    }

    async fn state(&mut self) -> Result<DigestState> {
        if let Some(busy) = self.busy.take() {
            return busy
                .await
                .map_err(|e| Error::Internal(format!("digest thread failed: {e}")));
        }
        self.idle
            .take()
            .ok_or_else(|| Error::Internal("digest state lost".into()))
    }

    /// Starts hashing `batch` once the previous batch is done. `false` when the bytes so far
    /// are already known not to be ONNX (nothing more needs hashing).
    async fn feed(&mut self, batch: Vec<Bytes>) -> Result<bool> {
        let mut state = self.state().await?;
        if state.failed.is_some() {
            self.idle = Some(state);
            return Ok(false);
        }
        self.busy = Some(tokio::task::spawn_blocking(move || {
            for chunk in batch {
                state.hasher.update(&chunk);
                state.size += chunk.len() as u64;
                if let Err(e) = state.scanner.feed(&chunk) {
                    state.failed = Some(e);
                    break;
                }
            }
            state
        }));
        Ok(true)
    }

    async fn finish(mut self) -> Result<DigestOutcome> {
        let state = self.state().await?;
        let signature = match state.failed {
            Some(e) => Err(e),
            None => state.scanner.finish(),
        };
        Ok(DigestOutcome {
            sha256: hex::encode(state.hasher.finalize()),
            size: state.size,
            signature,
        })
    }
}

/// What an idempotent retry must match: the bytes and the metadata.
fn fingerprint(sha256: &str, metadata: &VersionMetadata) -> String {
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    h.update(b"\n");
    // Struct fields serialize in declaration order and maps are BTreeMaps: the JSON is canonical.
    h.update(serde_json::to_vec(metadata).unwrap_or_default());
    hex::encode(h.finalize())
}

/// True when `text` is a lowercase hex SHA-256.
pub fn is_sha256(text: &str) -> bool {
    is_hex_of_len(text, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Message(&'static str);

    impl std::fmt::Display for Message {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Message {}

    fn generic(store: &'static str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::ObjectStore(object_store::Error::Generic { store, source })
    }

    #[test]
    fn only_a_vanished_object_becomes_a_retryable_503() {
        let gone = Error::ObjectStore(object_store::Error::NotFound {
            path: "tmp/x".into(),
            source: Box::new(Message("missing")),
        });
        let io_gone = generic(
            "S3",
            Box::new(std::io::Error::new(std::io::ErrorKind::NotFound, "gone")),
        );
        for vanished in [gone, io_gone] {
            let mapped = collected_under_us(vanished);
            assert!(matches!(mapped, Error::Unavailable(_)), "{mapped:?}");
            assert_eq!(mapped.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        }
        // A local folder's writer reports a vanished file as `NotFound` itself (`gone` above);
        // an abort is some other failure.
        let other_abort = generic("S3", Box::new(Message("Upload aborted")));
        let local_abort = generic("LocalFileSystem", Box::new(Message("Upload aborted")));
        let denied = generic(
            "LocalFileSystem",
            Box::new(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "no",
            )),
        );
        for failure in [
            other_abort,
            local_abort,
            denied,
            Error::Internal("x".into()),
        ] {
            let mapped = collected_under_us(failure);
            assert!(!matches!(mapped, Error::Unavailable(_)), "{mapped:?}");
        }
    }
}
