//! The Open Inference Protocol v2 (KServe V2 / Triton) over REST (JSON, and binary tensors): pure functions from bodies to
//! tensors and back, and the metadata documents clients read before they call a model. Nothing
//! here knows HTTP; the routes call these functions and answer `400 {"error": message}` for any
//! [`OipError`].
//!
//! - [`decode_infer_request`] parses an infer body straight into typed [`Tensor`]s (no
//!   `serde_json::Value` tree for tensor data) and checks every input against the model's
//!   [`ModelSignature`], so nothing malformed reaches ONNX Runtime;
//! - [`encode_infer_response`] writes the answer;
//! - [`decode_binary_infer_request`] and [`encode_binary_infer_response`] do the same for the
//!   binary tensor data extension (raw tensor bytes after the JSON, `Inference-Header-Content-Length`
//!   giving where the JSON ends), which `tritonclient` and KServe's clients use by default;
//! - [`server_metadata`], [`model_metadata`], [`triton_config`] and [`RepositoryEntry`] are the
//!   `GET /v2`, `GET /v2/models/{name}`, `GET …/config` and `POST /v2/repository/index`
//!   documents, in the shapes `tritonclient` and `perf_analyzer` expect.
//!
//! ```
//! use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};
//! use ferry_serving::oip;
//! use ferry_serving::runtime::{Tensor, TensorData};
//!
//! let spec = |name: &str| TensorSpec {
//!     name: name.to_owned(),
//!     datatype: "FP32".to_owned(),
//!     shape: Some(vec![Dim::Symbolic("batch".to_owned()), Dim::Fixed(2)]),
//! };
//! let signature = ModelSignature {
//!     inputs: vec![spec("x")],
//!     outputs: vec![spec("y")],
//!     ir_version: 8,
//!     opsets: vec![],
//!     producer: None,
//! };
//! let body = br#"{"id": "42", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[0.5, 1.5]]}]}"#;
//! let request = oip::decode_infer_request(body, &signature)?;
//! assert_eq!(request.inputs[0].data(), &TensorData::F32(vec![0.5, 1.5]));
//!
//! let outputs = [Tensor::new("y", vec![1, 2], vec![0.25_f32, 0.75])?];
//! let answer = oip::encode_infer_response("mlp", "3", request.id.as_deref(), &outputs);
//! assert_eq!(
//!     String::from_utf8(answer)?,
//!     r#"{"model_name":"mlp","model_version":"3","id":"42","outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[0.25,0.75]}]}"#
//! );
//!
//! let refused = oip::decode_infer_request(br#"{"inputs": []}"#, &signature).unwrap_err();
//! assert_eq!(
//!     refused.message(),
//!     r#"input "x": missing from the request; the model takes FP32 of shape [-1, 2]"#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Tensor`]: crate::runtime::Tensor
//! [`ModelSignature`]: ferry_api::onnx::ModelSignature

mod binary;
mod data;
mod error;
pub mod grpc;
mod metadata;
mod model_config;
mod request;
mod response;
mod validation;

pub use error::OipError;
pub use grpc::{decode_grpc_infer_request, encode_grpc_infer_response};
pub use metadata::{
    EXTENSIONS, MetadataTensor, ModelMetadata, PLATFORM, RepositoryEntry, RepositoryIndexRequest,
    SERVER_NAME, ServerMetadata, decode_repository_index_request, model_metadata, server_metadata,
};
pub use model_config::{
    DynamicBatching, Reshape, TritonConfig, TritonTensor, triton_config, triton_data_type,
};
pub use request::{
    BinaryOutputs, DecodedRequest, decode_binary_infer_request, decode_infer_request,
};
pub use response::{
    encode_binary_infer_response, encode_error, encode_infer_request, encode_infer_response,
    encode_infer_response_with_parameters,
};

/// The HTTP header of the binary tensor data extension: how many bytes of the body are the
/// JSON document (the tensor bytes follow).
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// The protocol's `parameters` objects (request, input, output and response level): free-form
/// keys with JSON values. Small and rare, so unlike tensor data they are kept as JSON values.
pub type Parameters = serde_json::Map<String, serde_json::Value>;

/// Most dimensions an input may have. Nested `data` can nest no deeper than the rank, so this
/// also bounds recursion while decoding: with the request's own levels it stays far below
/// serde_json's limit of 128, and a hostile `[[[[…` is refused at depth `MAX_RANK + 1`.
pub const MAX_RANK: usize = 32;
