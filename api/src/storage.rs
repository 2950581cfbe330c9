//! Opening object storage from a URL (feature `storage`): `file:///abs/dir` (or a plain path),
//! `memory://`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`, with
//! `object_store` options and a bounded retry. The registry keeps model blobs there; serving
//! appends its prediction log there. One place parses the URLs, applies the options and hides
//! credentials from what is shown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

/// How long a failing cloud object store is retried before a request fails, unless configured
/// (`--blob-retry-timeout`). object_store's own default is 3 minutes, too long for a client
/// waiting on a download: a failed request is answered 503 and retried by the client instead.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// An object store and the prefix inside it everything is written under.
#[derive(Clone)]
pub struct StoreRoot {
    /// The backend.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside it (from the URL's path).
    pub root: Path,
    /// The folder behind a local store (object_store does not fsync: callers that must, do).
    pub local_dir: Option<std::path::PathBuf>,
    /// The URL without credentials, for logs and `/readyz`.
    pub display: String,
}

impl std::fmt::Debug for StoreRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreRoot({})", self.display)
    }
}

impl StoreRoot {
    /// Opens the store a URL names, retrying a failing cloud store (S3, GCS, Azure) for at most
    /// `retry_timeout` from a request's first attempt, with exponential backoff; past it the
    /// request fails. Local folders (created when missing) are not retried.
    ///
    /// Cloud credentials come from the usual environment variables (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`); `options` are `object_store` configuration keys such as `aws_endpoint`,
    /// `aws_region` or `aws_allow_http`, and override the environment.
    ///
    /// # Errors
    /// A message naming the URL (without credentials) and what is wrong with it.
    pub fn open(
        url: &str,
        options: &[(String, String)],
        retry_timeout: Duration,
    ) -> Result<Self, String> {
        let retry = RetryConfig {
            retry_timeout,
            ..RetryConfig::default()
        };
        let parsed = match Url::parse(url) {
            Ok(u) => u,
            // A bare path is a local folder.
            Err(_) => {
                let path = std::path::absolute(url)
                    .map_err(|e| format!("blob store path `{url}`: {e}"))?;
                Url::from_directory_path(&path)
                    .map_err(|()| format!("blob store path `{url}` is not absolute"))?
            }
        };
        let display = redact(&parsed);
        let (scheme, root) = ObjectStoreScheme::parse(&parsed)
            .map_err(|e| format!("blob store URL `{display}`: {e}"))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| format!("blob store URL `{display}` is not a local path"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create blob folder {}: {e}", dir.display()))?;
                let local = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| format!("blob folder {}: {e}", dir.display()))?;
                return Ok(StoreRoot {
                    store: Arc::new(local),
                    root: Path::default(),
                    local_dir: Some(dir),
                    display,
                });
            }
            ObjectStoreScheme::Memory => Arc::new(InMemory::new()),
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(parsed.as_str())
                    .with_retry(retry.clone());
                for (key, value) in options {
                    let key = key
                        .parse()
                        .map_err(|e| format!("unknown S3 option `{key}`: {e}"))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(|e| format!("S3 `{display}`: {e}"))?,
                )
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(parsed.as_str())
                    .with_retry(retry.clone());
                for (key, value) in options {
                    let key = key
                        .parse()
                        .map_err(|e| format!("unknown GCS option `{key}`: {e}"))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(|e| format!("GCS `{display}`: {e}"))?,
                )
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(parsed.as_str())
                    .with_retry(retry.clone());
                for (key, value) in options {
                    let key = key
                        .parse()
                        .map_err(|e| format!("unknown Azure option `{key}`: {e}"))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(|e| format!("Azure `{display}`: {e}"))?,
                )
            }
            other => {
                return Err(format!(
                    "blob store URL `{display}`: {other:?} is not supported; use file://, s3://, gs:// or az://"
                ));
            }
        };
        Ok(StoreRoot {
            store,
            root,
            local_dir: None,
            display,
        })
    }

    /// An in-memory store, for tests and throwaway runs.
    pub fn in_memory() -> Self {
        StoreRoot::from_store(Arc::new(InMemory::new()), "memory://")
    }

    /// Wraps any `object_store` backend (fault-injecting stores in tests, for instance).
    pub fn from_store(store: Arc<dyn ObjectStore>, display: impl Into<String>) -> Self {
        StoreRoot {
            store,
            root: Path::default(),
            local_dir: None,
            display: display.into(),
        }
    }

    /// Writes a whole object at `root/part/part/…`, replacing any object there.
    ///
    /// # Errors
    /// The object store's error.
    pub async fn put(&self, parts: &[&str], bytes: Bytes) -> object_store::Result<Path> {
        let mut path = self.root.clone();
        for part in parts {
            path = path.child(*part);
        }
        self.store
            .put(&path, object_store::PutPayload::from(bytes))
            .await?;
        Ok(path)
    }
}

/// A URL without its user, password and query (where credentials and SAS tokens hide).
pub fn redact(url: &Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_display_url() {
        let url = Url::parse("s3://key:secret@bucket/prefix?token=t").unwrap();
        let shown = redact(&url);
        assert!(
            !shown.contains("secret") && !shown.contains("token"),
            "{shown}"
        );
    }
}
