//! Loading ONNX Runtime from a wrong place fails with the command that fixes it, never a panic,
//! and leaves the process free to load the right library afterwards.
//!
//! Its own test binary: `ort` binds one library per process, and these tests need a process
//! where none is bound yet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use ferry_serving::runtime::RuntimeError;
use ferry_serving::runtime::library;

#[test]
fn a_missing_library_is_an_error_naming_the_fetch_command_and_a_later_load_can_succeed() {
    let bogus = Path::new("/nonexistent/ferry/libonnxruntime.so");
    let err = library::load(Some(bogus)).unwrap_err();
    assert!(
        matches!(err, RuntimeError::LibraryMissing { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("make ort"), "{message}");
    assert!(
        message.contains("/nonexistent/ferry/libonnxruntime.so"),
        "{message}"
    );

    // A file that exists but is no library gets past the search and fails in the loader.
    let not_a_library =
        std::env::temp_dir().join(format!("ferry-not-ort-{}.so", std::process::id()));
    std::fs::write(&not_a_library, b"\x7fELF? no").unwrap();
    let err = library::load(Some(&not_a_library)).unwrap_err();
    std::fs::remove_file(&not_a_library).unwrap();
    assert!(
        matches!(err, RuntimeError::LibraryUnusable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("make ort"), "{err}");

    // Nothing of the failed attempts stuck: the real library still loads.
    if let Some(runtime) = common::runtime() {
        assert!(runtime.path().is_file());
        let again = library::load(None).unwrap();
        assert_eq!(again.path(), runtime.path(), "loading is idempotent");
    }
}
