//! The documents clients read before calling a model: server metadata (`GET /v2`), model
//! metadata (`GET /v2/models/{name}[/versions/{v}]`) and the repository index
//! (`POST /v2/repository/index`).

use ferry_api::onnx::{ModelSignature, TensorSpec};
use serde::{Deserialize, Serialize};

use super::error::OipError;

/// The server's name in `GET /v2`.
pub const SERVER_NAME: &str = "ferry";

/// The platform every Ferry model reports: Triton's name for ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Protocol extensions Ferry implements, as Triton names them: `model_configuration` (the
/// `…/config` document) and `model_repository` (the index; loading and unloading are the
/// registry's job, not the protocol's).
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
];

/// `GET /v2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// Always [`SERVER_NAME`].
    pub name: String,
    /// Ferry's version.
    pub version: String,
    /// The protocol extensions supported ([`EXTENSIONS`]).
    pub extensions: Vec<String>,
}

/// Server metadata for Ferry at `version`.
#[must_use]
pub fn server_metadata(version: &str) -> ServerMetadata {
    ServerMetadata {
        name: SERVER_NAME.to_owned(),
        version: version.to_owned(),
        extensions: EXTENSIONS.iter().map(|&e| e.to_owned()).collect(),
    }
}

/// `GET /v2/models/{name}[/versions/{v}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model (or endpoint) name the client asked for.
    pub name: String,
    /// The versions served under that name.
    pub versions: Vec<String>,
    /// Always [`PLATFORM`].
    pub platform: String,
    /// The inputs a request must carry, in the model's order.
    pub inputs: Vec<MetadataTensor>,
    /// The outputs the model returns, in the model's order.
    pub outputs: Vec<MetadataTensor>,
}

/// One input or output in model metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataTensor {
    /// The tensor's name.
    pub name: String,
    /// Its OIP datatype (`FP32`, `BYTES`…).
    pub datatype: String,
    /// Its dims, batch dim included, -1 for any dim the model leaves open; `[-1]` when the
    /// model does not even fix the rank.
    pub shape: Vec<i64>,
}

impl MetadataTensor {
    fn from_spec(spec: &TensorSpec) -> Self {
        MetadataTensor {
            name: spec.name.clone(),
            datatype: spec.datatype.clone(),
            shape: spec.shape.as_ref().map_or_else(
                || vec![-1],
                |dims| dims.iter().map(|d| d.as_oip()).collect(),
            ),
        }
    }
}

/// Model metadata for `name`, served in `versions`, answering with `signature`.
#[must_use]
pub fn model_metadata(
    name: &str,
    versions: &[String],
    signature: &ModelSignature,
) -> ModelMetadata {
    ModelMetadata {
        name: name.to_owned(),
        versions: versions.to_vec(),
        platform: PLATFORM.to_owned(),
        inputs: signature
            .inputs
            .iter()
            .map(MetadataTensor::from_spec)
            .collect(),
        outputs: signature
            .outputs
            .iter()
            .map(MetadataTensor::from_spec)
            .collect(),
    }
}

/// One entry of `POST /v2/repository/index`, as Triton lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryEntry {
    /// The model name.
    pub name: String,
    /// The version (empty when the model has none loaded).
    pub version: String,
    /// `READY`, `UNAVAILABLE`, `LOADING` or `UNLOADING`.
    pub state: String,
    /// Why the model is not ready; empty when it is.
    pub reason: String,
}

/// The body of `POST /v2/repository/index`: `{"ready": true}` lists only models ready for
/// inference. An empty body is the same as `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct RepositoryIndexRequest {
    /// List only ready models.
    #[serde(default)]
    pub ready: bool,
}

/// Reads the body of `POST /v2/repository/index`.
///
/// # Errors
/// [`OipError::Malformed`] when the body is neither empty nor a JSON object with an optional
/// boolean `ready`.
pub fn decode_repository_index_request(body: &[u8]) -> Result<RepositoryIndexRequest, OipError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RepositoryIndexRequest::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| OipError::Malformed(format!("malformed repository index request: {e}")))
}
