//! Keeping the served models in step with the registry: an initial sync, then the event log.
//!
//! When an alias a model is served at moves (or a new version becomes its default), the new
//! version is downloaded into the cache, verified, loaded and warmed up beside the old one, and
//! only then swapped in; requests in flight finish on the old one. If anything fails, the old
//! version keeps serving and the reason is recorded. If the registry is down at start, the models
//! named in the cache's manifest are served from the cache.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use ferry_registry::names::VersionRef;
use ferry_registry::onnx::ModelSignature;
use ferry_registry::records::VersionRecord;

use crate::ServingConfig;
use crate::cache::{ArtifactCache, CachedModel};
use crate::catalog::{Catalog, CatalogError};
use crate::repository::{ModelRepository, ServedModel, ServedVersion};
use crate::runtime::{LoadedModel, ModelSource, OnnxRuntime, RuntimeMetrics};

/// How long one long-poll of the event log waits.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// Longest pause between attempts to reach an unavailable registry.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which registry models to serve.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These models, each at a version number, an alias, or (None) its default: the
    /// `production` alias, else the newest active version.
    Models(Vec<(String, Option<VersionRef>)>),
    /// Every model in the registry, each at its default version (`ferry up`).
    All,
}

impl Selection {
    fn reference(&self, name: &str) -> Option<Option<&VersionRef>> {
        match self {
            Selection::All => Some(None),
            Selection::Models(list) => list
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.as_ref()),
        }
    }
}

/// Turns bytes into served versions: the runtime, its metrics, and the per-model options.
#[derive(Clone)]
pub struct Loader {
    /// The loaded ONNX Runtime library.
    pub runtime: OnnxRuntime,
    /// Where served models go.
    pub repository: Arc<ModelRepository>,
    /// Runtime metrics, labelled per model and version.
    pub metrics: RuntimeMetrics,
    /// Options per model.
    pub config: Arc<ServingConfig>,
}

impl Loader {
    /// Loads and warms up one version.
    ///
    /// # Errors
    /// The runtime's load error, as text.
    pub async fn load(
        &self,
        name: &str,
        version: &str,
        source: ModelSource,
        signature: ModelSignature,
        sha256: Option<String>,
    ) -> Result<ServedVersion, String> {
        let started = std::time::Instant::now();
        let model = LoadedModel::load(
            &self.runtime,
            source,
            signature,
            self.config.options_for(name),
            self.metrics.model(name, version),
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(
            model = name,
            version,
            batching = model.is_batching(),
            load_ms = started.elapsed().as_millis() as u64,
            "model loaded and warmed up"
        );
        Ok(ServedVersion {
            version: version.to_string(),
            model,
            sha256,
            loaded_at: Utc::now(),
        })
    }
}

/// Follows the registry for the models of a [`Selection`].
pub struct Follower {
    catalog: Catalog,
    cache: ArtifactCache,
    loader: Loader,
    selection: Selection,
    ready: Arc<AtomicBool>,
}

impl Follower {
    /// A follower; nothing happens until [`Follower::run`].
    pub fn new(
        catalog: Catalog,
        cache: ArtifactCache,
        loader: Loader,
        selection: Selection,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Follower {
            catalog,
            cache,
            loader,
            selection,
            ready,
        }
    }

    /// Syncs once (from the registry, or from the cache when it is unreachable), marks the
    /// process ready, then follows the event log until the task is dropped.
    pub async fn run(self) {
        let mut cursor = match self.head().await {
            Ok(head) => {
                self.sync_all().await;
                Some(head)
            }
            Err(e) => {
                tracing::warn!(error = %e, "registry unreachable at start; serving from the cache");
                self.serve_from_cache().await;
                None
            }
        };
        self.ready.store(true, Ordering::Release);
        let mut backoff = Duration::from_millis(500);
        loop {
            let Some(after) = cursor else {
                // Started from the cache: catch up as soon as the registry answers.
                match self.head().await {
                    Ok(head) => {
                        tracing::info!("registry reachable again; syncing");
                        self.sync_all().await;
                        cursor = Some(head);
                        backoff = Duration::from_millis(500);
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            match self.catalog.events(after, POLL_WAIT).await {
                Ok(page) => {
                    backoff = Duration::from_millis(500);
                    let touched: BTreeSet<String> = page
                        .events
                        .iter()
                        .filter(|e| is_model_event(&e.kind))
                        .map(|e| e.subject.clone())
                        .filter(|name| self.selection.reference(name).is_some())
                        .collect();
                    for name in touched {
                        self.sync(&name).await;
                    }
                    cursor = Some(page.next_after);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the registry's event log; still serving the loaded models");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn head(&self) -> Result<i64, CatalogError> {
        Ok(self.catalog.events(i64::MAX, Duration::ZERO).await?.head)
    }

    async fn sync_all(&self) {
        let names: Vec<String> = match &self.selection {
            Selection::Models(list) => list.iter().map(|(n, _)| n.clone()).collect(),
            Selection::All => match self.catalog.model_names().await {
                Ok(names) => names,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the registry's models");
                    return;
                }
            },
        };
        for name in names {
            self.sync(&name).await;
        }
    }

    /// Brings one model to the version its selection names.
    async fn sync(&self, name: &str) {
        let Some(reference) = self.selection.reference(name) else {
            return;
        };
        let resolved = match reference {
            Some(r) => self.catalog.resolve(name, r).await,
            None => self.catalog.default_version(name).await,
        };
        let record = match resolved {
            Ok(record) => record,
            Err(e) => {
                self.record_failure(name, &e.to_string());
                return;
            }
        };
        let repository = &self.loader.repository;
        if let Some(current) = repository.get(name)
            && current.default.sha256.as_deref() == Some(record.sha256.as_str())
            && current.default.version == record.version.to_string()
        {
            if current.last_error.is_some() {
                repository.set_error(name, None);
            }
            return;
        }
        match self.load(&record).await {
            Ok(version) => {
                let previous = repository.get(name);
                repository.install(ServedModel::single(name, version));
                repository.set_failed(name, None);
                if let Some(previous) = previous {
                    let old = &previous.default.version;
                    tracing::info!(model = name, from = %old, to = record.version, "swapped the served version");
                    if *old != record.version.to_string() {
                        self.loader.metrics.forget(name, old);
                    }
                }
                self.remember(name, &record);
            }
            Err(e) => self.record_failure(name, &e),
        }
    }

    async fn load(&self, record: &VersionRecord) -> Result<ServedVersion, String> {
        let path = self
            .cache
            .ensure(&self.catalog, record)
            .await
            .map_err(|e| e.to_string())?;
        self.loader
            .load(
                &record.name,
                &record.version.to_string(),
                ModelSource::File(path),
                record.signature.clone(),
                Some(record.sha256.clone()),
            )
            .await
    }

    fn record_failure(&self, name: &str, reason: &str) {
        tracing::warn!(
            model = name,
            error = reason,
            "cannot update the served model; keeping what is loaded"
        );
        let repository = &self.loader.repository;
        if repository.get(name).is_some() {
            repository.set_error(name, Some(reason.to_string()));
        } else {
            repository.set_failed(name, Some(reason.to_string()));
        }
    }

    fn remember(&self, name: &str, record: &VersionRecord) {
        let mut manifest = self.cache.load_manifest();
        manifest.models.insert(
            name.to_string(),
            CachedModel {
                version: record.version,
                sha256: record.sha256.clone(),
                signature: record.signature.clone(),
            },
        );
        if let Err(e) = self.cache.save_manifest(&manifest) {
            tracing::warn!(error = %e, "cannot write the cache manifest; a restart without the registry would not find this model");
        }
    }

    async fn serve_from_cache(&self) {
        let manifest = self.cache.load_manifest();
        for (name, cached) in manifest.models {
            if self.selection.reference(&name).is_none() {
                continue;
            }
            let path = match self.cache.verify(&cached.sha256).await {
                Ok(path) => path,
                Err(e) => {
                    self.record_failure(&name, &e.to_string());
                    continue;
                }
            };
            match self
                .loader
                .load(
                    &name,
                    &cached.version.to_string(),
                    ModelSource::File(path),
                    cached.signature.clone(),
                    Some(cached.sha256.clone()),
                )
                .await
            {
                Ok(version) => {
                    tracing::info!(model = %name, version = cached.version, "serving from the cache");
                    self.loader
                        .repository
                        .install(ServedModel::single(name, version));
                }
                Err(e) => self.record_failure(&name, &e),
            }
        }
    }
}

fn is_model_event(kind: &str) -> bool {
    matches!(
        kind,
        "model.created" | "version.created" | "version.updated" | "alias.set" | "alias.deleted"
    )
}
