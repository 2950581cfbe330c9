//! The models this process serves, swapped atomically: a request takes a snapshot of the table,
//! so it finishes on the version it started with while a new one is installed beside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::runtime::LoadedModel;

/// One loaded version of a model.
#[derive(Clone)]
pub struct ServedVersion {
    /// The version label: the registry's number, or `1` for a file.
    pub version: String,
    /// The running model.
    pub model: LoadedModel,
    /// SHA-256 of the ONNX bytes, when known.
    pub sha256: Option<String>,
    /// When it finished loading.
    pub loaded_at: DateTime<Utc>,
}

/// A model as clients address it: `/v2/models/{name}` answers with `default`; `/versions/{v}`
/// reaches any loaded version.
#[derive(Clone)]
pub struct ServedModel {
    /// The name clients use.
    pub name: String,
    /// The version `/v2/models/{name}` uses.
    pub default: Arc<ServedVersion>,
    /// Every loaded version by label (the default included).
    pub versions: BTreeMap<String, Arc<ServedVersion>>,
    /// Why the last attempt to change this model failed, if it did (shown in the repository
    /// index); the model keeps serving what it had.
    pub last_error: Option<String>,
}

impl ServedModel {
    /// A model serving exactly one version.
    pub fn single(name: impl Into<String>, version: ServedVersion) -> Self {
        let version = Arc::new(version);
        ServedModel {
            name: name.into(),
            default: version.clone(),
            versions: BTreeMap::from([(version.version.clone(), version)]),
            last_error: None,
        }
    }

    /// The version `label` names, or the default when `None`.
    pub fn version(&self, label: Option<&str>) -> Option<&Arc<ServedVersion>> {
        match label {
            None => Some(&self.default),
            Some(v) => self.versions.get(v),
        }
    }
}

/// The table of served models.
#[derive(Default)]
pub struct ModelRepository {
    models: ArcSwap<HashMap<String, Arc<ServedModel>>>,
    /// Writers copy the table; one at a time, so that no update is lost.
    write: std::sync::Mutex<()>,
    /// Models that should be served but could not be loaded, with the reason (read only on the
    /// error path, so a mutex is fine).
    failed: std::sync::Mutex<HashMap<String, String>>,
}

impl ModelRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
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
