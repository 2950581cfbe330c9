//! Finds and loads the ONNX Runtime shared library, once per process.
//!
//! Ferry links ONNX Runtime at run time (`ort`'s `load-dynamic`), so a build never downloads
//! anything and the library is the official one from the `onnxruntime` wheel. Where it is looked
//! for, in order: an explicit path (`--onnxruntime PATH`), `ORT_DYLIB_PATH`, then
//! `.ort/libonnxruntime.so*` under the current directory and under the executable's directory.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;
use ort::logging::LogLevel;

use super::error::RuntimeError;

/// The environment variable `ort` itself also honours.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The folder, relative to the working directory or the executable, that `make ort` fills.
pub const LOCAL_DIR: &str = ".ort";

/// What to run when the library is missing; part of every library error.
pub const FETCH_HINT: &str = "fetch it with `make ort` (runs scripts/fetch-ort.sh, which \
     downloads the onnxruntime 1.31.1 wheel with pip and extracts libonnxruntime.so into \
     .ort/), or point --onnxruntime or ORT_DYLIB_PATH at an existing libonnxruntime.so (1.31 \
     or newer)";

/// Proof that ONNX Runtime is loaded: the process-wide `ort` environment sessions are created in.
///
/// Sessions can only be created through this handle, so no `ort` call can run before the library
/// is loaded (where `ort` would fall back to its own search and panic).
#[derive(Clone, Debug)]
pub struct OnnxRuntime {
    environment: Environment,
    path: PathBuf,
}

impl OnnxRuntime {
    /// The library file that was loaded.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// ONNX Runtime's build description (`ORT Build Info: git-branch=…, git-commit-id=…`), for
    /// logs and diagnostics.
    #[must_use]
    pub fn build_info(&self) -> &'static str {
        ort::info()
    }

    /// The `ort` environment, for tools that drive ONNX Runtime directly (the benchmarks compare
    /// the runtime against bare sessions). `ort` allows one environment per process, so this is
    /// the only way to get one once Ferry has loaded the library.
    #[must_use]
    pub fn environment(&self) -> &Environment {
        &self.environment
    }
}

static LOADED: OnceLock<OnnxRuntime> = OnceLock::new();
/// Serializes first loads: `ort` allows one environment per process.
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (see the module docs for where it looks) and returns the process-wide
/// handle. Later calls return the same handle whatever path they pass: `ort` binds one library
/// per process.
///
/// # Errors
/// [`RuntimeError::LibraryMissing`] when no library file is found, and
/// [`RuntimeError::LibraryUnusable`] when the file found cannot be loaded or is older than 1.31.
/// Both say which command fetches a working library. A failed load leaves nothing behind, so a
/// later call may succeed.
pub fn load(explicit: Option<&Path>) -> Result<OnnxRuntime, RuntimeError> {
    if let Some(runtime) = LOADED.get() {
        return Ok(already_loaded(runtime, explicit));
    }
    // A panic while holding the lock cannot leave `LOADED` half-set, so poisoning is harmless.
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = LOADED.get() {
        return Ok(already_loaded(runtime, explicit));
    }
    let search = LibrarySearch::from_process(explicit);
    let path = search.locate()?;
    let runtime = init(&path)?;
    tracing::info!(path = %path.display(), build = runtime.build_info(), "loaded ONNX Runtime");
    Ok(LOADED.get_or_init(|| runtime).clone())
}

fn already_loaded(runtime: &OnnxRuntime, explicit: Option<&Path>) -> OnnxRuntime {
    if let Some(path) = explicit
        && path.canonicalize().ok().as_deref() != Some(runtime.path())
    {
        tracing::warn!(
            requested = %path.display(),
            loaded = %runtime.path.display(),
            "ONNX Runtime is already loaded from another file; keeping it"
        );
    }
    runtime.clone()
}

fn init(path: &Path) -> Result<OnnxRuntime, RuntimeError> {
    let unusable = |reason: String| RuntimeError::LibraryUnusable {
        path: path.display().to_string(),
        reason,
        hint: FETCH_HINT.to_owned(),
    };
    let environment = ort::init_from(path)
        .map_err(|e| unusable(e.to_string()))?
        .with_name("ferry")
        .with_telemetry(false)
        .with_logger(std::sync::Arc::new(forward_to_tracing))
        .build()
        .map_err(|e| unusable(e.to_string()))?;
    // A custom logger starts at VERBOSE; formatting every verbose line would cost on each run.
    environment.set_log_level(LogLevel::Warning);
    Ok(OnnxRuntime {
        environment,
        path: path.to_path_buf(),
    })
}

/// ONNX Runtime's own log lines, as structured `tracing` events. Called from C: must not panic.
fn forward_to_tracing(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", category, id, location, "{message}");
        }
        LogLevel::Info => {
            tracing::debug!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Warning => {
            tracing::warn!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", category, id, location, "{message}");
        }
    }
}

/// Where to look for the library. Built from the process (flag, environment, directories) by
/// [`load`]; separate so the search order is testable without touching the process.
#[derive(Clone, Debug, Default)]
pub struct LibrarySearch {
    /// `--onnxruntime PATH`: used alone when given.
    pub explicit: Option<PathBuf>,
    /// The value of `ORT_DYLIB_PATH`, if set and not empty: used alone when given.
    pub env: Option<PathBuf>,
    /// Directories whose `.ort/` folder is searched, in order.
    pub dirs: Vec<PathBuf>,
}

impl LibrarySearch {
    /// The search this process would run: `explicit`, `ORT_DYLIB_PATH`, then the current
    /// directory and the executable's directory.
    #[must_use]
    pub fn from_process(explicit: Option<&Path>) -> Self {
        let env = std::env::var_os(DYLIB_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        let dirs = [
            std::env::current_dir().ok(),
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf)),
        ]
        .into_iter()
        .flatten()
        .collect();
        LibrarySearch {
            explicit: explicit.map(Path::to_path_buf),
            env,
            dirs,
        }
    }

    /// The library file to load, as an absolute path.
    ///
    /// # Errors
    /// [`RuntimeError::LibraryMissing`] naming what was looked at and the fetch command.
    pub fn locate(&self) -> Result<PathBuf, RuntimeError> {
        let missing = |looked: String| RuntimeError::LibraryMissing {
            hint: format!("{looked}; {FETCH_HINT}"),
        };
        // An explicit choice that is wrong is an error, not a reason to pick another file.
        if let Some(path) = &self.explicit {
            return existing_file(path).ok_or_else(|| {
                missing(format!("--onnxruntime {} does not exist", path.display()))
            });
        }
        if let Some(path) = &self.env {
            return existing_file(path)
                .ok_or_else(|| missing(format!("{DYLIB_ENV}={} does not exist", path.display())));
        }
        let mut looked = Vec::new();
        for dir in &self.dirs {
            let folder = dir.join(LOCAL_DIR);
            if let Some(found) = library_in(&folder) {
                return Ok(found);
            }
            looked.push(format!("{}/libonnxruntime.so*", folder.display()));
        }
        Err(missing(format!(
            "no libonnxruntime.so found ({DYLIB_ENV} is not set; looked for {})",
            looked.join(" and ")
        )))
    }
}

fn existing_file(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().filter(|path| path.is_file())
}

/// The library inside `folder`: `libonnxruntime.so` itself if present, else the versioned file
/// with the highest version (`libonnxruntime.so.1.31.1`).
fn library_in(folder: &Path) -> Option<PathBuf> {
    let prefix = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let mut candidates: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(&prefix)?;
            // Exactly the library or a dotted version after it; not `…_providers_shared.so`.
            let version: Vec<u64> = if version.is_empty() {
                vec![u64::MAX]
            } else {
                version
                    .strip_prefix('.')?
                    .split('.')
                    .map(|part| part.parse().ok())
                    .collect::<Option<_>>()?
            };
            Some((version, existing_file(&entry.path())?))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really a library").unwrap();
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferry-library-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }

    #[test]
    fn the_local_folder_prefers_the_plain_name_then_the_highest_version() {
        let dir = temp_dir("versions");
        let folder = dir.join(LOCAL_DIR);
        touch(&folder.join("libonnxruntime.so.1.9.0"));
        touch(&folder.join("libonnxruntime.so.1.31.1"));
        touch(&folder.join("libonnxruntime_providers_shared.so"));
        let search = LibrarySearch {
            dirs: vec![dir.clone()],
            ..LibrarySearch::default()
        };
        assert_eq!(
            search.locate().unwrap(),
            folder.join("libonnxruntime.so.1.31.1")
        );
        touch(&folder.join("libonnxruntime.so"));
        assert_eq!(search.locate().unwrap(), folder.join("libonnxruntime.so"));
    }

    #[test]
    fn an_explicit_path_wins_over_the_environment_and_the_local_folder() {
        let dir = temp_dir("order");
        touch(&dir.join(LOCAL_DIR).join("libonnxruntime.so"));
        let env = dir.join("env.so");
        let explicit = dir.join("explicit.so");
        touch(&env);
        touch(&explicit);
        let mut search = LibrarySearch {
            explicit: Some(explicit.clone()),
            env: Some(env.clone()),
            dirs: vec![dir.clone()],
        };
        assert_eq!(search.locate().unwrap(), explicit);
        search.explicit = None;
        assert_eq!(search.locate().unwrap(), env);
        search.env = None;
        assert_eq!(
            search.locate().unwrap(),
            dir.join(LOCAL_DIR).join("libonnxruntime.so")
        );
    }

    #[test]
    fn a_missing_library_names_the_fetch_command_and_where_it_looked() {
        let dir = temp_dir("missing");
        let search = LibrarySearch {
            dirs: vec![dir.clone()],
            ..LibrarySearch::default()
        };
        let message = search.locate().unwrap_err().to_string();
        assert!(message.contains("make ort"), "{message}");
        assert!(
            message.contains(&dir.join(LOCAL_DIR).display().to_string()),
            "{message}"
        );

        let wrong_explicit = LibrarySearch {
            explicit: Some(dir.join("nope.so")),
            dirs: vec![dir.clone()],
            ..LibrarySearch::default()
        };
        let err = wrong_explicit.locate().unwrap_err();
        assert!(matches!(err, RuntimeError::LibraryMissing { .. }));
        assert!(err.to_string().contains("--onnxruntime"), "{err}");

        let wrong_env = LibrarySearch {
            env: Some(dir.join("nope.so")),
            ..LibrarySearch::default()
        };
        assert!(
            wrong_env
                .locate()
                .unwrap_err()
                .to_string()
                .contains(DYLIB_ENV)
        );
    }
}
