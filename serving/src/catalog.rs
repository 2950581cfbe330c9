//! Where served models come from: a registry over HTTP (`ferry serving --registry URL`), or the
//! registry in the same process (`ferry up`).

use std::path::Path;
use std::time::Duration;

use ferry_registry::analysis::Report;
use ferry_registry::client::{ClientError, RegistryClient};
use ferry_registry::names::{LATEST, VersionRef};
use ferry_registry::records::{EndpointRecord, EventPage, VersionRecord};
use ferry_registry::{BlobStore, MetadataStore};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The alias a model is served at when nothing else is asked for.
pub const PRODUCTION: &str = "production";

/// Why the catalog could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The model, version or alias does not exist (the registry said so).
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be reached or failed: serve what is cached and retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The artifact's bytes do not hash to what the registry recorded.
    #[error("{0}")]
    Corrupt(String),
    /// Writing the local copy failed.
    #[error("{0}")]
    Io(String),
}

/// A source of model versions, their bytes and the change log.
#[derive(Clone, Debug)]
pub enum Catalog {
    /// A registry reached over HTTP.
    Remote(RegistryClient),
    /// The registry of this process.
    Local {
        /// Its metadata.
        store: MetadataStore,
        /// Its blobs.
        blobs: BlobStore,
    },
}

impl Catalog {
    /// The version `reference` names.
    ///
    /// # Errors
    /// [`CatalogError::NotFound`] or [`CatalogError::Unavailable`].
    pub async fn resolve(
        &self,
        name: &str,
        reference: &VersionRef,
    ) -> Result<VersionRecord, CatalogError> {
        match self {
            Catalog::Remote(client) => client
                .get_version(name, reference)
                .await
                .map_err(client_error),
            Catalog::Local { store, .. } => {
                store
                    .get_version(name, reference)
                    .await
                    .map_err(|e| match e {
                        ferry_registry::Error::NotFound(m) => CatalogError::NotFound(m),
                        other => CatalogError::Unavailable(other.to_string()),
                    })
            }
        }
    }

    /// The version a model is served at by default: its `production` alias, else its newest
    /// active version.
    ///
    /// # Errors
    /// [`CatalogError::NotFound`] when the model has no active version.
    pub async fn default_version(&self, name: &str) -> Result<VersionRecord, CatalogError> {
        match self
            .resolve(name, &VersionRef::Alias(PRODUCTION.into()))
            .await
        {
            Err(CatalogError::NotFound(_)) => {
                self.resolve(name, &VersionRef::Alias(LATEST.into())).await
            }
            other => other,
        }
    }

    /// The names of every model in the registry.
    ///
    /// # Errors
    /// [`CatalogError::Unavailable`].
    pub async fn model_names(&self) -> Result<Vec<String>, CatalogError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = match self {
                Catalog::Remote(client) => client
                    .list_models(500, token.as_deref())
                    .await
                    .map_err(client_error)?,
                Catalog::Local { store, .. } => store
                    .list_models(500, token.as_deref())
                    .await
                    .map_err(|e| CatalogError::Unavailable(e.to_string()))?,
            };
            names.extend(page.items.into_iter().map(|m| m.name));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(names),
            }
        }
    }

    /// The endpoint named `name`, or `None` when there is none.
    ///
    /// # Errors
    /// [`CatalogError::Unavailable`].
    pub async fn endpoint(&self, name: &str) -> Result<Option<EndpointRecord>, CatalogError> {
        let found = match self {
            Catalog::Remote(client) => client.get_endpoint(name).await.map_err(client_error),
            Catalog::Local { store, .. } => store.get_endpoint(name).await.map_err(|e| match e {
                ferry_registry::Error::NotFound(m) => CatalogError::NotFound(m),
                other => CatalogError::Unavailable(other.to_string()),
            }),
        };
        match found {
            Ok(record) => Ok(Some(record)),
            Err(CatalogError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The training profile stored with a version.
    ///
    /// # Errors
    /// [`CatalogError::NotFound`] when it has none, [`CatalogError::Corrupt`] when it does not
    /// validate, [`CatalogError::Unavailable`].
    pub async fn profile(
        &self,
        record: &VersionRecord,
    ) -> Result<ferry_registry::drift::Profile, CatalogError> {
        let version = VersionRef::Number(record.version);
        let json = match self {
            Catalog::Remote(client) => {
                let v = record.version.to_string();
                let url = client.url(&[
                    "api",
                    "v1",
                    "models",
                    &record.name,
                    "versions",
                    &v,
                    "profile",
                ]);
                client
                    .send_json::<serde_json::Value>(client.request(reqwest::Method::GET, url))
                    .await
                    .map_err(client_error)?
            }
            Catalog::Local { store, .. } => store
                .get_profile(&record.name, &version)
                .await
                .map_err(|e| match e {
                    ferry_registry::Error::NotFound(m) => CatalogError::NotFound(m),
                    other => CatalogError::Unavailable(other.to_string()),
                })?,
        };
        ferry_registry::drift::Profile::from_metadata(&json)
            .map_err(|e| CatalogError::Corrupt(format!("the stored profile is invalid: {e}")))
    }

    /// The names of every endpoint.
    ///
    /// # Errors
    /// [`CatalogError::Unavailable`].
    pub async fn endpoint_names(&self) -> Result<Vec<String>, CatalogError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page =
                match self {
                    Catalog::Remote(client) => client
                        .list_endpoints(500, token.as_deref())
                        .await
                        .map_err(client_error)?,
                    Catalog::Local { store, .. } => store
                        .list_endpoints(500, token.as_deref())
                        .await
                        .map_err(|e| CatalogError::Unavailable(e.to_string()))?,
                };
            names.extend(page.items.into_iter().map(|e| e.name));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(names),
            }
        }
    }

    /// Sends a replica's counters for an endpoint.
    ///
    /// # Errors
    /// [`CatalogError::NotFound`] when the endpoint is gone, else [`CatalogError::Unavailable`].
    pub async fn report(&self, endpoint: &str, report: Report) -> Result<(), CatalogError> {
        match self {
            Catalog::Remote(client) => client
                .post_report(endpoint, &report)
                .await
                .map_err(client_error),
            Catalog::Local { store, .. } => store
                .record_report(endpoint, report)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    ferry_registry::Error::NotFound(m) => CatalogError::NotFound(m),
                    other => CatalogError::Unavailable(other.to_string()),
                }),
        }
    }

    /// Events after `after`, waiting up to `wait` for the first.
    ///
    /// # Errors
    /// [`CatalogError::Unavailable`].
    pub async fn events(&self, after: i64, wait: Duration) -> Result<EventPage, CatalogError> {
        match self {
            Catalog::Remote(client) => client.events(after, 500, wait).await.map_err(client_error),
            Catalog::Local { store, .. } => store
                .wait_for_events(after, 500, wait)
                .await
                .map_err(|e| CatalogError::Unavailable(e.to_string())),
        }
    }

    /// Writes the version's bytes to `dest`, checking their SHA-256 against the record as they
    /// stream; `dest` is removed when they do not match.
    ///
    /// # Errors
    /// [`CatalogError::Corrupt`] on a hash mismatch, [`CatalogError::Unavailable`] when the
    /// transfer fails, [`CatalogError::Io`] when writing fails.
    pub async fn download(&self, record: &VersionRecord, dest: &Path) -> Result<(), CatalogError> {
        let mut stream = match self {
            Catalog::Remote(client) => {
                let response = client
                    .download(&record.name, &VersionRef::Number(record.version))
                    .await
                    .map_err(client_error)?;
                response
                    .bytes_stream()
                    .map(|r| r.map_err(|e| CatalogError::Unavailable(e.to_string())))
                    .boxed()
            }
            Catalog::Local { blobs, .. } => blobs
                .read(&record.sha256, None)
                .await
                .map_err(|e| CatalogError::Unavailable(e.to_string()))?
                .stream
                .map(|r| r.map_err(|e| CatalogError::Unavailable(e.to_string())))
                .boxed(),
        };
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| CatalogError::Io(format!("cannot create {}: {e}", dest.display())))?;
        let mut hasher = Sha256::new();
        let result: Result<(), CatalogError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| CatalogError::Io(format!("writing {}: {e}", dest.display())))?;
            }
            file.sync_all()
                .await
                .map_err(|e| CatalogError::Io(format!("syncing {}: {e}", dest.display())))?;
            Ok(())
        }
        .await;
        drop(file);
        let digest = hex::encode(hasher.finalize());
        let result = result.and_then(|()| {
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
}

fn client_error(e: ClientError) -> CatalogError {
    match e {
        ClientError::Api {
            status: 404,
            detail,
        } => CatalogError::NotFound(detail),
        other => CatalogError::Unavailable(other.to_string()),
    }
}
