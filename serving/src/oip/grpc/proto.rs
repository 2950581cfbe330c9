//! The messages of `inference.GRPCInferenceService`, the KServe v2 / Triton gRPC protocol, as
//! prost types. Their field numbers are the wire contract: they are those of KServe's published
//! `grpc_predict_v2.proto` and, for `ModelConfig` and `RepositoryIndex`, Triton's
//! `grpc_service.proto` and `model_config.proto` (of `ModelConfig`, only the fields Ferry
//! fills; a client ignores the ones it does not get).
//!
//! Written here rather than generated from the `.proto` files: the messages are few, stable
//! for years, and this way the build needs neither `protoc` nor a build script, and the types
//! read like the rest of the code. `tests/python/test_grpc_clients.py` runs the official
//! clients (built from those `.proto` files) against them.

use std::collections::HashMap;

/// `ServerLive`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveRequest {}

/// Answer of `ServerLive`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveResponse {
    /// Whether the server can answer requests.
    #[prost(bool, tag = "1")]
    pub live: bool,
}

/// `ServerReady`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyRequest {}

/// Answer of `ServerReady`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyResponse {
    /// Whether the models to serve at start are loaded.
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// `ModelReady`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyRequest {
    /// The model or endpoint.
    #[prost(string, tag = "1")]
    pub name: String,
    /// A version, or empty for the one the server chooses.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// Answer of `ModelReady`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyResponse {
    /// Whether the model (version) answers inference requests.
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// `ServerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataRequest {}

/// Answer of `ServerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataResponse {
    /// The server's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// The protocol extensions it supports.
    #[prost(string, repeated, tag = "3")]
    pub extensions: Vec<String>,
}

/// `ModelMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataRequest {
    /// The model or endpoint.
    #[prost(string, tag = "1")]
    pub name: String,
    /// A version, or empty for the one the server chooses.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// One input or output in [`ModelMetadataResponse`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorMetadata {
    /// The tensor's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its datatype (`FP32`, `BYTES`…).
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// Its shape, -1 for an open dimension.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
}

/// Answer of `ModelMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataResponse {
    /// The model or endpoint.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The versions served under the name.
    #[prost(string, repeated, tag = "2")]
    pub versions: Vec<String>,
    /// Always `onnxruntime_onnx`.
    #[prost(string, tag = "3")]
    pub platform: String,
    /// The inputs a request carries.
    #[prost(message, repeated, tag = "4")]
    pub inputs: Vec<TensorMetadata>,
    /// The outputs an answer carries.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<TensorMetadata>,
}

/// A request or tensor parameter: a boolean, an integer or a string.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferParameter {
    /// The value.
    #[prost(oneof = "ParameterChoice", tags = "1, 2, 3")]
    pub parameter_choice: Option<ParameterChoice>,
}

/// The value of an [`InferParameter`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterChoice {
    /// A boolean.
    #[prost(bool, tag = "1")]
    BoolParam(bool),
    /// An integer.
    #[prost(int64, tag = "2")]
    Int64Param(i64),
    /// A string.
    #[prost(string, tag = "3")]
    StringParam(String),
}

/// Tensor data in typed fields, one per family of datatypes (FP16 and BF16 have none: they
/// travel as raw bytes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    /// `BOOL`.
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    /// `INT8`, `INT16`, `INT32`.
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    /// `INT64`.
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    /// `UINT8`, `UINT16`, `UINT32`.
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    /// `UINT64`.
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    /// `FP32`.
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    /// `FP64`.
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    /// `BYTES`.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

/// One input of a [`ModelInferRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferInputTensor {
    /// The input's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its datatype.
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// Its shape.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    /// Its parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// Its data in typed fields, when the request does not use `raw_input_contents`.
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// An output a [`ModelInferRequest`] asks for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    /// The output's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its parameters.
    #[prost(map = "string, message", tag = "2")]
    pub parameters: HashMap<String, InferParameter>,
}

/// `ModelInfer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    /// The model or endpoint.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// A version, or empty for the endpoint's split.
    #[prost(string, tag = "2")]
    pub model_version: String,
    /// The request's id, echoed in the answer (and the prediction id feedback joins on).
    #[prost(string, tag = "3")]
    pub id: String,
    /// Request parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The inputs.
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    /// The outputs asked for; all of them when empty.
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    /// The inputs' data as raw little-endian bytes, one entry per input in `inputs` order
    /// (`BYTES` elements as a 4-byte length and the bytes), instead of `contents`.
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

/// One output of a [`ModelInferResponse`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferOutputTensor {
    /// The output's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its datatype.
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// Its shape.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    /// Its parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// Typed data; Ferry always answers in `raw_output_contents` instead, as Triton does.
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// Answer of `ModelInfer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    /// The model or endpoint asked for.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// The version that answered.
    #[prost(string, tag = "2")]
    pub model_version: String,
    /// The request's id.
    #[prost(string, tag = "3")]
    pub id: String,
    /// Response parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The outputs.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    /// The outputs' data, one entry per output in `outputs` order.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

/// Triton's `ModelConfig` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelConfigRequest {
    /// The model or endpoint.
    #[prost(string, tag = "1")]
    pub name: String,
    /// A version, or empty for the one the server chooses.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// Answer of `ModelConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelConfigResponse {
    /// The configuration.
    #[prost(message, optional, tag = "1")]
    pub config: Option<ModelConfig>,
}

/// The part of Triton's `ModelConfig` Ferry fills (see [`crate::oip::TritonConfig`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelConfig {
    /// The model name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `onnxruntime_onnx`.
    #[prost(string, tag = "2")]
    pub platform: String,
    /// Most rows per request and batch; 0 without a batch dim.
    #[prost(int32, tag = "4")]
    pub max_batch_size: i32,
    /// The inputs.
    #[prost(message, repeated, tag = "5")]
    pub input: Vec<ModelInput>,
    /// The outputs.
    #[prost(message, repeated, tag = "6")]
    pub output: Vec<ModelOutput>,
    /// Present when requests are batched together.
    #[prost(message, optional, tag = "11")]
    pub dynamic_batching: Option<ModelDynamicBatching>,
    /// `onnxruntime`.
    #[prost(string, tag = "17")]
    pub backend: String,
}

/// An input of a [`ModelConfig`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInput {
    /// The input's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Triton's `DataType` number ([`data_type_number`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// The dims without the batch dim when `max_batch_size > 0`.
    #[prost(int64, repeated, tag = "4")]
    pub dims: Vec<i64>,
    /// The shape the model sees when it differs from `dims`.
    #[prost(message, optional, tag = "5")]
    pub reshape: Option<ModelTensorReshape>,
}

/// An output of a [`ModelConfig`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelOutput {
    /// The output's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Triton's `DataType` number ([`data_type_number`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// The dims without the batch dim when `max_batch_size > 0`.
    #[prost(int64, repeated, tag = "3")]
    pub dims: Vec<i64>,
    /// The shape the model sees when it differs from `dims`.
    #[prost(message, optional, tag = "5")]
    pub reshape: Option<ModelTensorReshape>,
}

/// A reshape of a [`ModelInput`] or [`ModelOutput`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelTensorReshape {
    /// The shape the model sees.
    #[prost(int64, repeated, tag = "1")]
    pub shape: Vec<i64>,
}

/// Dynamic batching settings of a [`ModelConfig`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelDynamicBatching {
    /// How long the oldest request waits for others to fill a batch.
    #[prost(uint64, tag = "2")]
    pub max_queue_delay_microseconds: u64,
}

/// Triton's `RepositoryIndex` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RepositoryIndexRequest {
    /// The repository; Ferry has one, and ignores it.
    #[prost(string, tag = "1")]
    pub repository_name: String,
    /// List only models ready for inference.
    #[prost(bool, tag = "2")]
    pub ready: bool,
}

/// Answer of `RepositoryIndex`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RepositoryIndexResponse {
    /// The models.
    #[prost(message, repeated, tag = "1")]
    pub models: Vec<ModelIndex>,
}

/// One model of a [`RepositoryIndexResponse`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelIndex {
    /// The model name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    #[prost(string, tag = "3")]
    pub state: String,
    /// Why it is not ready.
    #[prost(string, tag = "4")]
    pub reason: String,
}

/// Triton's `DataType` enum number of a `TYPE_…` name (`TYPE_FP32` → 11); 0 (`TYPE_INVALID`)
/// for anything else.
#[must_use]
pub fn data_type_number(name: &str) -> i32 {
    match name {
        "TYPE_BOOL" => 1,
        "TYPE_UINT8" => 2,
        "TYPE_UINT16" => 3,
        "TYPE_UINT32" => 4,
        "TYPE_UINT64" => 5,
        "TYPE_INT8" => 6,
        "TYPE_INT16" => 7,
        "TYPE_INT32" => 8,
        "TYPE_INT64" => 9,
        "TYPE_FP16" => 10,
        "TYPE_FP32" => 11,
        "TYPE_FP64" => 12,
        "TYPE_STRING" => 13,
        "TYPE_BF16" => 14,
        _ => 0,
    }
}
