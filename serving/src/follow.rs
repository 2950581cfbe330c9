//! Keeping the served models and endpoints in step with the registry: an initial sync, then the
//! event log.
//!
//! When an alias a model is served at moves (or a new version becomes its default), or an
//! endpoint's policy changes, every version it needs is downloaded into the cache, verified,
//! loaded and warmed up beside what serves now, and only then is the routing table swapped;
//! requests in flight finish on what they started with. Versions already loaded are reused. If
//! anything fails, the last good table keeps serving and the reason is recorded (and reported to
//! the registry). If the registry is down at start, what the cache's manifest names is served.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_api::events::EventKind;
use ferry_api::names::VersionRef;
use ferry_api::onnx::ModelSignature;
use ferry_api::records::{EndpointRecord, VersionRecord};

use crate::ServingConfig;
use crate::cache::{ArtifactCache, CachedEndpoint, CachedModel};
use crate::catalog::{self, CatalogError, SharedCatalog};
use crate::features::FeatureInput;
use crate::repository::{EndpointRouting, ModelRepository, ServedModel};
use crate::runtime::{LoadedModel, ModelSource, OnnxRuntime, RuntimeMetrics, RuntimeOptions};
use crate::served::ServedVersion;
use crate::shadow::ShadowTarget;

/// How long one long-poll of the event log waits.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// Longest pause between attempts to reach an unavailable registry.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which registry models to serve by name.
#[derive(Debug, Clone)]
pub enum Models {
    /// None.
    None,
    /// These models, each at a version number, an alias, or (None) its default: the
    /// `production` alias, else the newest active version.
    Named(Vec<(String, Option<VersionRef>)>),
    /// Every model in the registry, each at its default version (`ferry up`).
    All,
}

/// Which endpoints to serve.
#[derive(Debug, Clone)]
pub enum Endpoints {
    /// None.
    None,
    /// These.
    Named(Vec<String>),
    /// Every endpoint in the registry.
    All,
}

/// What a follower keeps served. An endpoint's name wins over a model of the same name.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Models served at their default (or named) version.
    pub models: Models,
    /// Endpoints served by their traffic policy.
    pub endpoints: Endpoints,
}

impl Selection {
    fn model_reference(&self, name: &str) -> Option<Option<&VersionRef>> {
        match &self.models {
            Models::None => None,
            Models::All => Some(None),
            Models::Named(list) => list
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.as_ref()),
        }
    }

    fn wants_endpoint(&self, name: &str) -> bool {
        match &self.endpoints {
            Endpoints::None => false,
            Endpoints::All => true,
            Endpoints::Named(list) => list.iter().any(|n| n == name),
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
    /// Loads and warms up one version with `options`.
    ///
    /// # Errors
    /// The runtime's load error, as text.
    pub async fn load_with(
        &self,
        name: &str,
        number: i64,
        source: ModelSource,
        signature: ModelSignature,
        sha256: Option<String>,
        options: RuntimeOptions,
    ) -> Result<ServedVersion, String> {
        let started = std::time::Instant::now();
        let version = number.to_string();
        let model = LoadedModel::load(
            &self.runtime,
            source,
            signature,
            options,
            self.metrics.model(name, &version),
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(
            model = name,
            version,
            batching = model.is_batching(),
            intra_op_threads = model.options().intra_op_threads.unwrap_or_default(),
            load_ms = started.elapsed().as_millis() as u64,
            "model loaded and warmed up"
        );
        Ok(ServedVersion {
            number,
            version,
            model,
            sha256,
            loaded_at: Utc::now(),
            profile: None,
            features: None,
        })
    }

    /// Loads and warms up one version with the options configured for `name`.
    ///
    /// # Errors
    /// The runtime's load error, as text.
    pub async fn load(
        &self,
        name: &str,
        number: i64,
        source: ModelSource,
        signature: ModelSignature,
        sha256: Option<String>,
    ) -> Result<ServedVersion, String> {
        let options = self.config.options_for(name);
        self.load_with(name, number, source, signature, sha256, options)
            .await
    }
}

/// Follows the registry for the models and endpoints of a [`Selection`].
pub struct Follower {
    catalog: SharedCatalog,
    cache: ArtifactCache,
    loader: Loader,
    selection: Selection,
    ready: Arc<AtomicBool>,
}

/// Which registry version a served name needs, and how it runs.
struct Needed {
    record: VersionRecord,
    shadow: bool,
}

impl Follower {
    /// A follower; nothing happens until [`Follower::run`].
    pub fn new(
        catalog: SharedCatalog,
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
    /// process ready, then follows the event log until `stop` is cancelled. Stopping anywhere
    /// is safe: the table of served models is swapped whole, a cancelled download removes its
    /// partial file, and the cache manifest is replaced atomically.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        tokio::select! {
            () = self.follow() => {}
            () = stop.cancelled() => tracing::debug!("stopped following the registry"),
        }
    }

    async fn follow(self) {
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
        self.ready.store(self.all_present(), Ordering::Release);
        let mut backoff = Duration::from_millis(500);
        let mut retries = Retries::default();
        loop {
            let ready = self.ready.load(Ordering::Acquire);
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
            // Until everything named is served, poll briefly and retry what failed.
            let wait = if ready {
                retries.wait(POLL_WAIT)
            } else {
                Duration::from_secs(2)
            };
            match self.catalog.events(after, wait).await {
                Ok(page) => {
                    backoff = Duration::from_millis(500);
                    let mut models = BTreeSet::new();
                    let mut endpoints = BTreeSet::new();
                    for event in &page.events {
                        match event.event_kind() {
                            Some(EventKind::EndpointUpdated | EventKind::EndpointDeleted) => {
                                endpoints.insert(event.subject.clone());
                            }
                            Some(kind) if kind.moves_a_model() => {
                                models.insert(event.subject.clone());
                            }
                            // Other kinds, and kinds a newer registry added, change nothing
                            // served.
                            _ => {}
                        }
                    }
                    for name in endpoints {
                        self.sync_name(&name, true).await;
                    }
                    for name in models {
                        self.sync_name(&name, false).await;
                    }
                    cursor = Some(page.next_after);
                    // Updates that failed (registry or object store errors, a download past
                    // the load timeout) are tried again with backoff, so serving converges
                    // once the cause is gone without waiting for another event.
                    for name in retries.due(&self.failed_names()) {
                        self.sync_name(&name, self.selection.wants_endpoint(&name))
                            .await;
                    }
                    if !ready {
                        if !self.all_present() {
                            self.sync_all().await;
                        }
                        self.ready.store(self.all_present(), Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the registry's event log; still serving the loaded models");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Whether every model and endpoint named in the selection is served (always true for
    /// "every model" and "every endpoint": those are ready after the first sync).
    fn all_present(&self) -> bool {
        let repository = &self.loader.repository;
        let models = match &self.selection.models {
            Models::Named(list) => list.iter().all(|(n, _)| repository.get(n).is_some()),
            Models::None | Models::All => true,
        };
        let endpoints = match &self.selection.endpoints {
            Endpoints::Named(list) => list
                .iter()
                .all(|n| repository.get(n).is_some_and(|m| m.endpoint.is_some())),
            Endpoints::None | Endpoints::All => true,
        };
        models && endpoints
    }

    async fn head(&self) -> Result<i64, CatalogError> {
        Ok(self.catalog.events(i64::MAX, Duration::ZERO).await?.head)
    }

    async fn sync_all(&self) {
        let mut names: BTreeSet<String> = BTreeSet::new();
        match &self.selection.endpoints {
            Endpoints::None => {}
            Endpoints::Named(list) => names.extend(list.iter().cloned()),
            Endpoints::All => match catalog::endpoint_names(self.catalog.as_ref()).await {
                Ok(list) => names.extend(list),
                Err(e) => tracing::warn!(error = %e, "cannot list the registry's endpoints"),
            },
        }
        for name in &names {
            self.sync_name(name, true).await;
        }
        let models: Vec<String> = match &self.selection.models {
            Models::None => Vec::new(),
            Models::Named(list) => list.iter().map(|(n, _)| n.clone()).collect(),
            Models::All => match catalog::model_names(self.catalog.as_ref()).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the registry's models");
                    Vec::new()
                }
            },
        };
        for name in models {
            if !names.contains(&name) {
                self.sync_name(&name, false).await;
            }
        }
    }

    /// Brings the served `name` in step: as an endpoint if one exists and is selected, else as
    /// a model if selected.
    async fn sync_name(&self, name: &str, endpoint_event: bool) {
        if self.selection.wants_endpoint(name) {
            match catalog::endpoint(self.catalog.as_ref(), name).await {
                Ok(Some(record)) => {
                    self.sync_endpoint(record).await;
                    return;
                }
                Ok(None) => {
                    let serving_endpoint = self
                        .loader
                        .repository
                        .get(name)
                        .is_some_and(|m| m.endpoint.is_some());
                    if serving_endpoint {
                        tracing::info!(endpoint = name, "endpoint deleted; no longer served");
                        self.loader.repository.remove(name);
                        self.forget_endpoint(name).await;
                    } else if endpoint_event && self.selection.model_reference(name).is_none() {
                        self.loader
                            .repository
                            .set_failed(name, Some(format!("endpoint `{name}` does not exist")));
                    }
                }
                Err(e) => {
                    self.record_failure(name, &e.to_string());
                    return;
                }
            }
        }
        if self
            .loader
            .repository
            .get(name)
            .is_some_and(|m| m.endpoint.is_some())
        {
            // An endpoint of this name is served; its model's own events do not apply.
            return;
        }
        if let Some(reference) = self.selection.model_reference(name) {
            let reference = reference.cloned();
            self.sync_model(name, reference.as_ref()).await;
        }
    }

    /// Brings one model to the version its selection names.
    async fn sync_model(&self, name: &str, reference: Option<&VersionRef>) {
        let resolved = match reference {
            Some(r) => self.catalog.resolve(name, r).await,
            None => catalog::default_version(self.catalog.as_ref(), name).await,
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
            && current.endpoint.is_none()
            && current.default.sha256.as_deref() == Some(record.sha256.as_str())
            && current.default.version == record.version.to_string()
        {
            if current.last_error.is_some() {
                repository.set_error(name, None);
            }
            return;
        }
        match self.load(name, &record, false).await {
            Ok(version) => {
                let previous = repository.get(name);
                let traffic = repository.traffic_for(name, false);
                repository.install(ServedModel::single(name, version, traffic));
                repository.set_failed(name, None);
                if let Some(previous) = previous {
                    let old = &previous.default.version;
                    tracing::info!(model = name, from = %old, to = record.version, "swapped the served version");
                    self.forget_unused(name, &previous);
                }
                self.remember_model(name, &record).await;
            }
            Err(e) => self.record_failure(name, &e),
        }
    }

    /// Applies an endpoint's policy: every version it names loaded (or reused) first, then one
    /// atomic swap of the routing table.
    async fn sync_endpoint(&self, record: EndpointRecord) {
        let name = record.name.clone();
        let repository = &self.loader.repository;
        let current = repository.get(&name);
        if let Some(c) = &current
            && let Some(e) = &c.endpoint
            && e.revision == record.revision
        {
            return;
        }
        let policy = &record.policy;
        let mut wanted: Vec<(i64, bool)> = vec![(policy.stable, false)];
        wanted.extend(policy.canary.iter().map(|c| (c.version, false)));
        wanted.extend(policy.shadows.iter().map(|s| (s.version, true)));
        let mut needed: BTreeMap<i64, Needed> = BTreeMap::new();
        for (version, shadow) in wanted {
            match self
                .catalog
                .resolve(&policy.model, &VersionRef::Number(version))
                .await
            {
                Ok(v) => {
                    needed.insert(version, Needed { record: v, shadow });
                }
                Err(e) => {
                    self.record_failure(
                        &name,
                        &format!("endpoint `{name}` revision {}: {e}", record.revision),
                    );
                    return;
                }
            }
        }
        let mut loaded: BTreeMap<i64, Arc<ServedVersion>> = BTreeMap::new();
        for (version, need) in &needed {
            let label = version.to_string();
            // Reuse what already runs (same bytes, same role), so a weight change reloads nothing.
            let reusable = current.as_ref().and_then(|c| {
                let found = if need.shadow {
                    c.endpoint
                        .as_ref()?
                        .shadows
                        .iter()
                        .find(|s| s.version == *version)
                        .map(|s| s.served.clone())
                } else {
                    c.versions.get(&label).cloned()
                };
                found.filter(|v| v.sha256.as_deref() == Some(need.record.sha256.as_str()))
            });
            let served = match reusable {
                Some(v) => v,
                None => match self.load(&name, &need.record, need.shadow).await {
                    Ok(v) => Arc::new(v),
                    Err(e) => {
                        self.record_failure(
                            &name,
                            &format!(
                                "endpoint `{name}` revision {}: version {version} failed to load: {e}",
                                record.revision
                            ),
                        );
                        return;
                    }
                },
            };
            loaded.insert(*version, served);
        }
        let Some(stable) = loaded.get(&policy.stable).cloned() else {
            return;
        };
        let canary = policy
            .canary
            .as_ref()
            .and_then(|c| loaded.get(&c.version).cloned());
        // Counters survive the swap: the new shadows count into the same traffic record.
        let traffic = repository.traffic_for(&name, true);
        let shadows = policy
            .shadows
            .iter()
            .filter_map(|s| {
                loaded.get(&s.version).map(|served| {
                    ShadowTarget::start(s.version, s.sample_rate, served.clone(), traffic.clone())
                })
            })
            .collect();
        let routing = EndpointRouting {
            revision: record.revision,
            policy: policy.clone(),
            shadows,
        };
        repository.install(ServedModel::endpoint(
            &name, stable, canary, routing, traffic,
        ));
        repository.set_failed(&name, None);
        tracing::info!(
            endpoint = %name,
            revision = record.revision,
            stable = policy.stable,
            canary = ?policy.canary.as_ref().map(|c| (c.version, c.weight)),
            shadows = policy.shadows.len(),
            "routing table switched"
        );
        if let Some(previous) = current {
            self.forget_unused(&name, &previous);
        }
        self.remember_endpoint(&record, &needed).await;
    }

    async fn load(
        &self,
        name: &str,
        record: &VersionRecord,
        shadow: bool,
    ) -> Result<ServedVersion, String> {
        let path = self
            .cache
            .ensure(
                self.catalog.as_ref(),
                record,
                self.loader.config.load_timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        let options = if shadow {
            self.loader.config.shadow_options(name)
        } else {
            self.loader.config.options_for(name)
        };
        let mut served = self
            .loader
            .load_with(
                name,
                record.version,
                ModelSource::File(path),
                record.signature.clone(),
                Some(record.sha256.clone()),
                options,
            )
            .await?;
        if record.has_profile {
            // Without its profile a version still serves; it just is not watched for drift.
            match catalog::profile(self.catalog.as_ref(), record).await {
                Ok(profile) => served.profile = Some(Arc::new(profile)),
                Err(e) => {
                    tracing::warn!(model = %record.name, version = record.version, error = %e, "cannot load the training profile; drift is not monitored for this version")
                }
            }
        }
        if let Some(reference) = &record.lineage.feature_view {
            // A registry that cannot answer now fails the load (it is retried); a view that does
            // not fit the model leaves the version serving without lookups: requests then send
            // the features.
            let view = match self
                .catalog
                .feature_view(&reference.name, reference.version)
                .await
            {
                Err(CatalogError::Unavailable(e)) => {
                    return Err(format!(
                        "reading feature view {}:{}: {e}",
                        reference.name, reference.version
                    ));
                }
                other => other.map_err(|e| e.to_string()),
            };
            match view.and_then(|view| FeatureInput::plan(view, &record.signature)) {
                Ok(input) => {
                    tracing::info!(model = %record.name, version = record.version, view = %reference.name, view_version = reference.version, entity = %input.view.spec.entity, "requests may name entities: features are read from the online store");
                    served.features = Some(Arc::new(input));
                }
                Err(e) => {
                    tracing::warn!(model = %record.name, version = record.version, view = %reference.name, error = %e, "cannot serve this version's feature view; requests must send the features")
                }
            }
        }
        Ok(served)
    }

    /// Drops the runtime metrics of versions the new table no longer runs.
    fn forget_unused(&self, name: &str, previous: &ServedModel) {
        let Some(now) = self.loader.repository.get(name) else {
            return;
        };
        let labels = |m: &ServedModel| -> BTreeSet<String> {
            let mut l: BTreeSet<String> = m.versions.keys().cloned().collect();
            if let Some(e) = &m.endpoint {
                l.extend(e.shadows.iter().map(|s| s.served.version.clone()));
            }
            l
        };
        let keep = labels(&now);
        for old in labels(previous).difference(&keep) {
            self.loader.metrics.forget(name, old);
        }
    }

    /// Names whose last update failed: not served at all, or serving an older table.
    fn failed_names(&self) -> BTreeSet<String> {
        let repository = &self.loader.repository;
        let mut names: BTreeSet<String> = repository.failures().into_keys().collect();
        names.extend(
            repository
                .snapshot()
                .values()
                .filter(|m| m.last_error.is_some())
                .map(|m| m.name.clone()),
        );
        names
    }

    fn record_failure(&self, name: &str, reason: &str) {
        tracing::warn!(
            name,
            error = reason,
            "cannot update what is served; keeping what is loaded"
        );
        let repository = &self.loader.repository;
        if repository.get(name).is_some() {
            repository.set_error(name, Some(reason.to_string()));
        } else {
            repository.set_failed(name, Some(reason.to_string()));
        }
    }

    async fn remember_model(&self, name: &str, record: &VersionRecord) {
        let mut manifest = self.cache.load_manifest().await;
        manifest.models.insert(name.to_string(), cached(record));
        self.save(&manifest).await;
    }

    async fn remember_endpoint(&self, record: &EndpointRecord, needed: &BTreeMap<i64, Needed>) {
        let mut manifest = self.cache.load_manifest().await;
        manifest.endpoints.insert(
            record.name.clone(),
            CachedEndpoint {
                record: record.clone(),
                versions: needed
                    .iter()
                    .map(|(v, n)| (*v, cached(&n.record)))
                    .collect(),
            },
        );
        self.save(&manifest).await;
    }

    async fn forget_endpoint(&self, name: &str) {
        let mut manifest = self.cache.load_manifest().await;
        if manifest.endpoints.remove(name).is_some() {
            self.save(&manifest).await;
        }
    }

    async fn save(&self, manifest: &crate::cache::Manifest) {
        if let Err(e) = self.cache.save_manifest(manifest).await {
            tracing::warn!(error = %e, "cannot write the cache manifest; a restart without the registry would not find this model");
        }
    }

    async fn serve_from_cache(&self) {
        let manifest = self.cache.load_manifest().await;
        for (name, cached_endpoint) in &manifest.endpoints {
            if !self.selection.wants_endpoint(name) {
                continue;
            }
            let mut versions = BTreeMap::new();
            for (version, cached) in &cached_endpoint.versions {
                match self.cached_record(name, *version, cached).await {
                    Ok(record) => {
                        let shadow = cached_endpoint
                            .record
                            .policy
                            .shadows
                            .iter()
                            .any(|s| s.version == *version);
                        versions.insert(*version, Needed { record, shadow });
                    }
                    Err(e) => self.record_failure(name, &e),
                }
            }
            if versions.len() == cached_endpoint.versions.len() {
                self.install_cached_endpoint(cached_endpoint.record.clone(), versions)
                    .await;
            }
        }
        for (name, cached) in manifest.models {
            if self.selection.model_reference(&name).is_none()
                || self.loader.repository.get(&name).is_some()
            {
                continue;
            }
            match self.cached_record(&name, cached.version, &cached).await {
                Ok(record) => match self.load(&name, &record, false).await {
                    Ok(version) => {
                        tracing::info!(model = %name, version = cached.version, "serving from the cache");
                        let repository = &self.loader.repository;
                        let traffic = repository.traffic_for(&name, false);
                        repository.install(ServedModel::single(name, version, traffic));
                    }
                    Err(e) => self.record_failure(&name, &e),
                },
                Err(e) => self.record_failure(&name, &e),
            }
        }
    }

    /// A version record rebuilt from the manifest, after checking its cached bytes.
    async fn cached_record(
        &self,
        model: &str,
        version: i64,
        cached: &CachedModel,
    ) -> Result<VersionRecord, String> {
        self.cache
            .verify(&cached.sha256)
            .await
            .map_err(|e| e.to_string())?;
        Ok(VersionRecord {
            name: model.to_string(),
            version,
            sha256: cached.sha256.clone(),
            size: 0,
            status: ferry_api::records::VersionStatus::Active,
            signature: cached.signature.clone(),
            lineage: Default::default(),
            params: Default::default(),
            metrics: Default::default(),
            tags: Default::default(),
            description: None,
            has_profile: false,
            aliases: Vec::new(),
            created_at: Utc::now(),
        })
    }

    /// Loads a cached endpoint through the same path as a live one (the catalog is not asked:
    /// the records come from the manifest).
    async fn install_cached_endpoint(&self, record: EndpointRecord, needed: BTreeMap<i64, Needed>) {
        let name = record.name.clone();
        let mut loaded = BTreeMap::new();
        for (version, need) in &needed {
            match self.load(&name, &need.record, need.shadow).await {
                Ok(v) => {
                    loaded.insert(*version, Arc::new(v));
                }
                Err(e) => {
                    self.record_failure(&name, &e);
                    return;
                }
            }
        }
        let policy = &record.policy;
        let Some(stable) = loaded.get(&policy.stable).cloned() else {
            return;
        };
        let canary = policy
            .canary
            .as_ref()
            .and_then(|c| loaded.get(&c.version).cloned());
        let traffic = self.loader.repository.traffic_for(&name, true);
        let shadows = policy
            .shadows
            .iter()
            .filter_map(|s| {
                loaded.get(&s.version).map(|served| {
                    ShadowTarget::start(s.version, s.sample_rate, served.clone(), traffic.clone())
                })
            })
            .collect();
        let routing = EndpointRouting {
            revision: record.revision,
            policy: policy.clone(),
            shadows,
        };
        self.loader.repository.install(ServedModel::endpoint(
            &name, stable, canary, routing, traffic,
        ));
        tracing::info!(endpoint = %name, revision = record.revision, "serving the endpoint from the cache");
    }
}

/// When each failed name is tried again: after 2 s, then doubling up to 5 min.
#[derive(Default)]
struct Retries {
    next: BTreeMap<String, (Instant, Duration)>,
}

const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

impl Retries {
    /// The failed names whose retry is due now; forgets names that no longer fail.
    fn due(&mut self, failed: &BTreeSet<String>) -> Vec<String> {
        self.next.retain(|name, _| failed.contains(name));
        let now = Instant::now();
        let mut due = Vec::new();
        for name in failed {
            match self.next.get_mut(name) {
                None => {
                    self.next
                        .insert(name.clone(), (now + FIRST_RETRY, FIRST_RETRY));
                }
                Some((at, delay)) if *at <= now => {
                    *delay = (*delay * 2).min(MAX_RETRY);
                    *at = now + *delay;
                    due.push(name.clone());
                }
                Some(_) => {}
            }
        }
        due
    }

    /// How long to wait for events: `longest`, or less when a retry comes due sooner.
    fn wait(&self, longest: Duration) -> Duration {
        let now = Instant::now();
        self.next
            .values()
            .map(|(at, _)| at.saturating_duration_since(now))
            .min()
            .map_or(longest, |d| d.clamp(Duration::from_millis(100), longest))
    }
}

fn cached(record: &VersionRecord) -> CachedModel {
    CachedModel {
        version: record.version,
        sha256: record.sha256.clone(),
        signature: record.signature.clone(),
    }
}
