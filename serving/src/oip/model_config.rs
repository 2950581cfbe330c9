//! The Triton-style model configuration (`GET /v2/models/{name}[/versions/{v}]/config`) that
//! `tritonclient.get_model_config` returns and `perf_analyzer` reads: the JSON form of Triton's
//! `ModelConfig` protobuf, with 64-bit numbers written as numbers as Triton does.

use std::time::Duration;

use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};
use serde::{Deserialize, Serialize};

use super::metadata::PLATFORM;

/// Triton's backend name for ONNX Runtime.
const BACKEND: &str = "onnxruntime";

/// A model's configuration in Triton's JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TritonConfig {
    /// The model name.
    pub name: String,
    /// Always `onnxruntime_onnx`.
    pub platform: String,
    /// Always `onnxruntime`.
    pub backend: String,
    /// Most rows one request (and one batch) may have; 0 when the model has no batch dim, in
    /// which case `dims` are the full shapes.
    pub max_batch_size: usize,
    /// The inputs, in the model's order.
    pub input: Vec<TritonTensor>,
    /// The outputs, in the model's order.
    pub output: Vec<TritonTensor>,
    /// Present when requests are batched together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
}

/// One input or output of a [`TritonConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TritonTensor {
    /// The tensor's name.
    pub name: String,
    /// Triton's type name (`TYPE_FP32`, `TYPE_STRING` for BYTES…).
    pub data_type: String,
    /// The dims without the batch dim when `max_batch_size > 0`; -1 for open dims.
    pub dims: Vec<i64>,
    /// Set, as Triton does, for a batched tensor with no dims besides the batch: `dims` is
    /// then `[1]` and the model sees `[batch]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshape: Option<Reshape>,
}

/// The shape the model sees when it differs from `dims`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reshape {
    /// The dims the model sees, batch dim excluded.
    pub shape: Vec<i64>,
}

/// How requests are batched together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicBatching {
    /// How long the oldest request waits for others to fill a batch.
    pub max_queue_delay_microseconds: u64,
}

/// The Triton configuration of model `name`.
///
/// `max_batch_size` is how many rows the runtime batches (0 when it does not). It is kept only
/// when every input and output has a dynamic first dim, which is what Triton's batch dim
/// means; otherwise the config says 0 and gives full shapes. `dynamic_batching` appears when
/// batches of more than one row form.
#[must_use]
pub fn triton_config(
    name: &str,
    signature: &ModelSignature,
    max_batch_size: usize,
    max_queue_delay: Duration,
) -> TritonConfig {
    let batchable = !signature.inputs.is_empty()
        && signature.inputs.iter().all(TensorSpec::is_dynamic_batch)
        && signature.outputs.iter().all(TensorSpec::is_dynamic_batch);
    let max_batch_size = if batchable { max_batch_size } else { 0 };
    let batched = max_batch_size > 0;
    let tensors = |specs: &[TensorSpec]| -> Vec<TritonTensor> {
        specs
            .iter()
            .map(|spec| triton_tensor(spec, batched))
            .collect()
    };
    TritonConfig {
        name: name.to_owned(),
        platform: PLATFORM.to_owned(),
        backend: BACKEND.to_owned(),
        max_batch_size,
        input: tensors(&signature.inputs),
        output: tensors(&signature.outputs),
        dynamic_batching: (max_batch_size > 1).then(|| DynamicBatching {
            max_queue_delay_microseconds: u64::try_from(max_queue_delay.as_micros())
                .unwrap_or(u64::MAX),
        }),
    }
}

fn triton_tensor(spec: &TensorSpec, batched: bool) -> TritonTensor {
    let dims: Vec<i64> = match &spec.shape {
        // Batched configs only exist when every shape is known with a batch dim.
        Some(shape) if batched => shape.iter().skip(1).map(Dim::as_oip).collect(),
        Some(shape) => shape.iter().map(Dim::as_oip).collect(),
        None => vec![-1],
    };
    // Triton requires non-empty dims; a batched `[batch]` tensor is `[1]` reshaped to `[]`.
    let (dims, reshape) = if batched && dims.is_empty() {
        (vec![1], Some(Reshape { shape: vec![] }))
    } else {
        (dims, None)
    };
    TritonTensor {
        name: spec.name.clone(),
        data_type: triton_data_type(&spec.datatype).to_owned(),
        dims,
        reshape,
    }
}

/// Triton's name for an OIP datatype: `FP32` → `TYPE_FP32`, `BYTES` → `TYPE_STRING`; anything
/// without one is `TYPE_INVALID`.
#[must_use]
pub fn triton_data_type(datatype: &str) -> &'static str {
    match datatype {
        "BOOL" => "TYPE_BOOL",
        "UINT8" => "TYPE_UINT8",
        "UINT16" => "TYPE_UINT16",
        "UINT32" => "TYPE_UINT32",
        "UINT64" => "TYPE_UINT64",
        "INT8" => "TYPE_INT8",
        "INT16" => "TYPE_INT16",
        "INT32" => "TYPE_INT32",
        "INT64" => "TYPE_INT64",
        "FP16" => "TYPE_FP16",
        "FP32" => "TYPE_FP32",
        "FP64" => "TYPE_FP64",
        "BF16" => "TYPE_BF16",
        "BYTES" => "TYPE_STRING",
        _ => "TYPE_INVALID",
    }
}
