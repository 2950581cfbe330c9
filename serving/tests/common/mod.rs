//! Shared by the integration tests: the real ONNX Runtime, the fixtures, small tensor helpers.

// Each test binary uses a different subset; panics are how test helpers fail.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_api::onnx::{ModelSignature, inspect};
use ferry_serving::runtime::library::{self, LibrarySearch};
use ferry_serving::runtime::{
    LoadedModel, ModelMetrics, ModelSource, OnnxRuntime, RuntimeOptions, Tensor, TensorData,
};

/// The workspace root (tests run with the crate folder as working directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(name)
}

/// ONNX Runtime from `ORT_DYLIB_PATH` or the workspace's `.ort/`. `None` (the test skips, and
/// says why) when neither exists, unless `CI=true`, where a missing library fails the test.
pub fn runtime() -> Option<OnnxRuntime> {
    let search = LibrarySearch {
        env: std::env::var_os(library::DYLIB_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from),
        dirs: vec![workspace()],
        ..LibrarySearch::default()
    };
    match search.locate() {
        Ok(path) => Some(library::load(Some(&path)).expect("ONNX Runtime should load")),
        Err(err) if ferry_api::testing::in_ci() => {
            panic!("CI is set and ONNX Runtime is missing: {err}")
        }
        Err(err) => {
            skipped(&format!("this test needs ONNX Runtime. {err}"));
            None
        }
    }
}

pub fn signature(model: &str) -> ModelSignature {
    inspect(&std::fs::read(fixture(model)).unwrap()).unwrap()
}

pub fn options() -> RuntimeOptions {
    RuntimeOptions {
        workers: 1,
        intra_op_threads: Some(1),
        ..RuntimeOptions::default()
    }
}

pub async fn load(runtime: &OnnxRuntime, model: &str, options: RuntimeOptions) -> LoadedModel {
    LoadedModel::load(
        runtime,
        ModelSource::File(fixture(model)),
        signature(model),
        options,
        ModelMetrics::detached(model, "1").unwrap(),
    )
    .await
    .unwrap()
}

/// Options under which a batch is only dispatched once it holds `max_batch_size` rows (the
/// delay never runs out during a test), so batch composition is deterministic.
pub fn full_batches_only(max_batch_size: usize) -> RuntimeOptions {
    RuntimeOptions {
        max_batch_size,
        max_queue_delay: Duration::from_secs(3600),
        ..options()
    }
}

pub fn in_a_minute() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Deterministic pseudo-random floats in [-2, 2).
pub fn floats(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_precision_loss)]
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            unit * 4.0 - 2.0
        })
        .collect()
}

/// One row for mlp.onnx (`input` FP32 [1, 32]).
pub fn mlp_row(seed: u64) -> Vec<Tensor> {
    vec![Tensor::new("input", vec![1, 32], floats(seed, 32)).unwrap()]
}

pub fn f32_data(tensor: &Tensor) -> &[f32] {
    match tensor.data() {
        TensorData::F32(values) => values,
        other => panic!("expected FP32 data, got {:?}", other.datatype()),
    }
}

pub use ferry_api::testing::skipped;
