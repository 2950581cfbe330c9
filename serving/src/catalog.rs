//! Where served models come from: a [`Catalog`] (the registry over HTTP for `ferry serving
//! --registry URL`, the registry in the same process for `ferry up`), and what serving asks of
//! any catalog on top of its methods: the default version of a model, every model or endpoint
//! name, a validated profile, and a download checked against its SHA-256.

use std::path::Path;
use std::sync::Arc;

pub use ferry_api::catalog::{Catalog, CatalogError};
use ferry_api::names::{LATEST, VersionRef};
use ferry_api::records::{EndpointRecord, Page, VersionRecord};
use futures::StreamExt;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

/// A catalog shared by the follower and the reporter.
pub type SharedCatalog = Arc<dyn Catalog>;

/// The alias a model is served at when nothing else is asked for.
pub const PRODUCTION: &str = "production";

/// The version a model is served at by default: its `production` alias, else its newest active
/// version.
///
/// # Errors
/// [`CatalogError::NotFound`] when the model has no active version.
pub async fn default_version(
    catalog: &dyn Catalog,
    name: &str,
) -> Result<VersionRecord, CatalogError> {
    match catalog
        .resolve(name, &VersionRef::Alias(PRODUCTION.into()))
        .await
    {
        Err(CatalogError::NotFound(_)) => {
            catalog
                .resolve(name, &VersionRef::Alias(LATEST.into()))
                .await
        }
        other => other,
    }
}

/// Every name of a paginated listing.
async fn all_names<'a>(
    page: impl Fn(Option<String>) -> BoxFuture<'a, Result<Page<String>, CatalogError>>,
) -> Result<Vec<String>, CatalogError> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let found = page(token.take()).await?;
        names.extend(found.items);
        match found.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok(names),
        }
    }
}

/// The names of every model in the catalog.
///
/// # Errors
/// [`CatalogError::Unavailable`].
pub async fn model_names(catalog: &dyn Catalog) -> Result<Vec<String>, CatalogError> {
    all_names(|token| Box::pin(async move { catalog.model_names_page(token.as_deref()).await }))
        .await
}

/// The names of every endpoint.
///
/// # Errors
/// [`CatalogError::Unavailable`].
pub async fn endpoint_names(catalog: &dyn Catalog) -> Result<Vec<String>, CatalogError> {
    all_names(|token| Box::pin(async move { catalog.endpoint_names_page(token.as_deref()).await }))
        .await
}

/// The endpoint named `name`, or `None` when there is none.
///
/// # Errors
/// [`CatalogError::Unavailable`].
pub async fn endpoint(
    catalog: &dyn Catalog,
    name: &str,
) -> Result<Option<EndpointRecord>, CatalogError> {
    match catalog.endpoint(name).await {
        Ok(record) => Ok(Some(record)),
        Err(CatalogError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The training profile stored with a version, validated.
///
/// # Errors
/// [`CatalogError::NotFound`] when it has none, [`CatalogError::Corrupt`] when it does not
/// validate, [`CatalogError::Unavailable`].
pub async fn profile(
    catalog: &dyn Catalog,
    record: &VersionRecord,
) -> Result<ferry_api::drift::Profile, CatalogError> {
    let json = catalog.profile_json(&record.name, record.version).await?;
    ferry_api::drift::Profile::from_metadata(&json)
        .map_err(|e| CatalogError::Corrupt(format!("the stored profile is invalid: {e}")))
}

/// Chunks in flight between the download and the thread that hashes and writes them.
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the download hands its writer: a chunk, or the end of a complete transfer.
enum Piece {
    Chunk(bytes::Bytes),
    End,
}

/// Writes the version's bytes to `dest`, checking their SHA-256 against the record as they
/// stream; `dest` is removed when they do not match. The bytes arrive on the reactor and are
/// hashed and written on a blocking thread, a bounded channel between the two.
///
/// # Errors
/// [`CatalogError::Corrupt`] on a hash mismatch, [`CatalogError::Unavailable`] when the
/// transfer fails, [`CatalogError::Io`] when writing fails.
pub async fn download(
    catalog: &dyn Catalog,
    record: &VersionRecord,
    dest: &Path,
) -> Result<(), CatalogError> {
    let mut stream = catalog.artifact(record).await?;
    let (chunks, mut received) = tokio::sync::mpsc::channel::<Piece>(CHUNKS_IN_FLIGHT);
    let path = dest.to_path_buf();
    let writer = ferry_api::blocking::run_blocking(move || -> Result<String, CatalogError> {
        use std::io::Write;
        let io = |what: &str, e: std::io::Error| {
            CatalogError::Io(format!("{what} {}: {e}", path.display()))
        };
        let mut file = std::fs::File::create(&path).map_err(|e| io("cannot create", e))?;
        let mut hasher = Sha256::new();
        loop {
            match received.blocking_recv() {
                Some(Piece::Chunk(chunk)) => {
                    hash_chunk(&mut hasher, &chunk);
                    file.write_all(&chunk).map_err(|e| io("writing", e))?;
                }
                Some(Piece::End) => break,
                // The download was dropped (a load timeout, a shutdown) before its end: the
                // file would be a partial copy nobody cleans up, so it goes now.
                None => {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(CatalogError::Unavailable(
                        "the download was cancelled".into(),
                    ));
                }
            }
        }
        file.sync_all().map_err(|e| io("syncing", e))?;
        Ok(hex::encode(hasher.finalize()))
    });
    let sent: Result<(), CatalogError> = async {
        while let Some(chunk) = stream.next().await {
            // A closed channel means the writer failed: its error is the one to report.
            if chunks.send(Piece::Chunk(chunk?)).await.is_err() {
                return Ok(());
            }
        }
        let _ = chunks.send(Piece::End).await;
        Ok(())
    }
    .await;
    drop(chunks);
    let written = writer
        .await
        .map_err(|e| CatalogError::Io(format!("the download's writer failed: {e}")))
        .and_then(|r| r);
    let result = sent.and(written).and_then(|digest| {
        if digest == record.sha256 {
            Ok(())
        } else {
            Err(CatalogError::Corrupt(format!(
                "the bytes of {}:{} hash to {digest}, not to the recorded {}",
                record.name, record.version, record.sha256
            )))
        }
    });
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

/// Adds a downloaded chunk to its hash: CPU work, kept off the reactor.
fn hash_chunk(hasher: &mut Sha256, chunk: &[u8]) {
    ferry_api::blocking::assert_off_reactor("hashing a download");
    hasher.update(chunk);
}
