//! The models this process serves, swapped atomically: a request takes a snapshot of the table,
//! so it finishes on the version it started with while a new one is installed beside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ferry_api::records::EndpointPolicy;

use crate::served::{ServedVersion, Traffic};
use crate::shadow::ShadowTarget;

/// The routing of an endpoint: its policy, and the shadows listening in.
pub struct EndpointRouting {
    /// The policy revision this routing implements.
    pub revision: i64,
    /// The policy.
    pub policy: EndpointPolicy,
    /// One per policy shadow, each with its own queue.
    pub shadows: Vec<ShadowTarget>,
}

/// A model as clients address it: `/v2/models/{name}` answers with `default` (or, for an
/// endpoint, with the version its policy routes to); `/versions/{v}` reaches any loaded primary
/// version.
#[derive(Clone)]
pub struct ServedModel {
    /// The name clients use.
    pub name: String,
    /// The version `/v2/models/{name}` uses (an endpoint's stable version).
    pub default: Arc<ServedVersion>,
    /// Every primary version by label (the default included; an endpoint's canary).
    pub versions: BTreeMap<String, Arc<ServedVersion>>,
    /// Why the last attempt to change this model failed, if it did (shown in the repository
    /// index); the model keeps serving what it had.
    pub last_error: Option<String>,
    /// Set when the name is an endpoint with a traffic policy.
    pub endpoint: Option<Arc<EndpointRouting>>,
    /// Counters and recent predictions; [`ModelRepository::install`] carries them over from the
    /// entry it replaces when both are endpoints or both plain models.
    pub traffic: Arc<Traffic>,
}

impl ServedModel {
    /// A model serving exactly one version, counting into `traffic`.
    pub fn single(name: impl Into<String>, version: ServedVersion, traffic: Arc<Traffic>) -> Self {
        let name = name.into();
        let version = Arc::new(version);
        ServedModel {
            traffic,
            name,
            default: version.clone(),
            versions: BTreeMap::from([(version.version.clone(), version)]),
            last_error: None,
            endpoint: None,
        }
    }

    /// An endpoint: `stable` answers by default, `canary` a share, `shadows` listen in (counting
    /// into the same `traffic` as the endpoint).
    pub fn endpoint(
        name: impl Into<String>,
        stable: Arc<ServedVersion>,
        canary: Option<Arc<ServedVersion>>,
        routing: EndpointRouting,
        traffic: Arc<Traffic>,
    ) -> Self {
        let name = name.into();
        let mut versions = BTreeMap::from([(stable.version.clone(), stable.clone())]);
        if let Some(c) = canary {
            versions.insert(c.version.clone(), c);
        }
        ServedModel {
            traffic,
            name,
            default: stable,
            versions,
            last_error: None,
            endpoint: Some(Arc::new(routing)),
        }
    }

    /// The loaded version with this label, among primaries and shadows.
    pub fn loaded(&self, label: &str) -> Option<&Arc<ServedVersion>> {
        self.versions.get(label).or_else(|| {
            self.endpoint
                .as_ref()?
                .shadows
                .iter()
                .find(|s| s.served.version == label)
                .map(|s| &s.served)
        })
    }

    /// The version `label` names (a primary or a shadow), or the default when `None`.
    pub fn version(&self, label: Option<&str>) -> Option<&Arc<ServedVersion>> {
        match label {
            None => Some(&self.default),
            Some(v) => self.loaded(v),
        }
    }
}

/// The table of served models.
pub struct ModelRepository {
    models: ArcSwap<HashMap<String, Arc<ServedModel>>>,
    /// Writers copy the table; one at a time, so that no update is lost.
    write: std::sync::Mutex<()>,
    /// Models that should be served but could not be loaded, with the reason (read only on the
    /// error path, so a mutex is fine).
    failed: std::sync::Mutex<HashMap<String, String>>,
}

impl Default for ModelRepository {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelRepository {
    /// An empty repository.
    pub fn new() -> Self {
        ModelRepository {
            models: ArcSwap::default(),
            write: std::sync::Mutex::default(),
            failed: std::sync::Mutex::default(),
        }
    }

    /// The counters `name` should use now: those of what serves it, when it is the same kind
    /// (endpoint or plain model), else fresh ones.
    pub fn traffic_for(&self, name: &str, endpoint: bool) -> Arc<Traffic> {
        match self.get(name) {
            Some(current) if current.endpoint.is_some() == endpoint => current.traffic.clone(),
            _ => Arc::new(Traffic::new(name)),
        }
    }

    /// The model named `name`, as of now.
    pub fn get(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.models.load().get(name).cloned()
    }

    /// Every served model, as of now.
    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<ServedModel>>> {
        self.models.load_full()
    }

    /// Installs (or replaces) a model. Requests already running keep the previous version
    /// until they finish; its workers stop once the last of them lets go.
    ///
    /// Build `model` with [`ModelRepository::traffic_for`], so counters carry over a swap of
    /// versions or of policy, while an endpoint that takes over a plain model's name starts
    /// afresh (its reports describe the endpoint only).
    pub fn install(&self, model: ServedModel) {
        self.update(|table| {
            table.insert(model.name.clone(), Arc::new(model));
        });
    }

    /// Records why an update of `name` failed, keeping what it serves.
    pub fn set_error(&self, name: &str, error: Option<String>) {
        self.update(|table| {
            if let Some(current) = table.get(name) {
                let mut model = (**current).clone();
                model.last_error = error;
                table.insert(name.to_string(), Arc::new(model));
            }
        });
    }

    /// Records that `name` should be served but could not be loaded at all.
    pub fn set_failed(&self, name: &str, reason: Option<String>) {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match reason {
            Some(r) => failed.insert(name.to_string(), r),
            None => failed.remove(name),
        };
    }

    /// Why `name` is not served, if it failed to load.
    pub fn failure(&self, name: &str) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every model that failed to load, with the reason.
    pub fn failures(&self) -> HashMap<String, String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops serving `name`.
    pub fn remove(&self, name: &str) -> Option<Arc<ServedModel>> {
        let mut removed = None;
        self.update(|table| removed = table.remove(name));
        removed
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<String, Arc<ServedModel>>)) {
        // A poisoned lock only means another writer panicked; the table itself is consistent
        // (it is replaced whole), so carry on.
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut table = (**self.models.load()).clone();
        change(&mut table);
        self.models.store(Arc::new(table));
    }
}
