//! The inference runtime: ONNX Runtime sessions owned by worker threads, which take their
//! batches from a bounded queue themselves whenever they are free (dynamic batching), behind
//! per-model admission control.
//!
//! ```text
//! infer() ─try_acquire─▶ requests (bounded) ─▶ N workers (each: next_batch, then run)
//!    ▲                                                         │
//!    └──────────────────── oneshot answer ◀────────────────────┘
//! ```
//!
//! Start with [`library::load`] (find ONNX Runtime), then [`LoadedModel::load`] per model
//! version, then [`LoadedModel::infer`] per request:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::{Duration, Instant};
//!
//! use ferry_serving::runtime::{
//!     LoadedModel, ModelSource, RuntimeMetrics, RuntimeOptions, Tensor, library,
//! };
//!
//! let onnxruntime = library::load(None)?; // ORT_DYLIB_PATH, else ./.ort/
//! let metrics = RuntimeMetrics::register(prometheus::default_registry())?;
//! let bytes = std::fs::read("tests/fixtures/mlp.onnx")?;
//! let signature = ferry_api::onnx::inspect(&bytes)?;
//! let model = LoadedModel::load(
//!     &onnxruntime,
//!     ModelSource::from(bytes),
//!     signature,
//!     RuntimeOptions::default(),
//!     metrics.model("mlp", "1"),
//! )
//! .await?;
//! let input = Tensor::new("input", vec![1, 32], vec![0.5_f32; 32])?;
//! let deadline = Instant::now() + Duration::from_secs(1);
//! let outputs = model.infer(vec![input], None, deadline).await?;
//! assert_eq!(outputs[0].shape(), [1, 2]);
//! # Ok(())
//! # }
//! ```

mod batcher;
mod error;
mod job;
pub mod library;
mod metrics;
mod model;
mod options;
mod session;
mod tensor;
mod worker;

pub use error::RuntimeError;
pub use library::OnnxRuntime;
pub use metrics::{ModelMetrics, RuntimeMetrics};
pub use model::ModelSource;
pub use options::{RuntimeOptions, SMALL_MODEL_BYTES, available_cpus, default_intra_op_threads};
pub use session::LoadedModel;
pub use tensor::{DataType, Tensor, TensorData, UnknownDataType};
