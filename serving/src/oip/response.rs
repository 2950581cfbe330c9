//! Infer responses and error bodies, serialized straight from the runtime's tensors.

use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use super::Parameters;
use super::binary;
use super::request::BinaryOutputs;
use crate::runtime::{Tensor, TensorData};

/// The body of an infer response: `{"model_name", "model_version", "id"?, "outputs": [{"name",
/// "datatype", "shape", "data"}]}`, `data` flat and row-major.
///
/// Floats are written in their shortest form that reads back to the same value. JSON has no
/// NaN or infinity, so non-finite floats are written as `null` (numpy reads `null` in a float
/// array as NaN, and [`decode_infer_request`](super::decode_infer_request) does the same).
#[must_use]
pub fn encode_infer_response(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
) -> Vec<u8> {
    encode(model_name, model_version, id, outputs, None)
}

/// [`encode_infer_response`] with response-level `parameters`.
#[must_use]
pub fn encode_infer_response_with_parameters(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    parameters: &Parameters,
) -> Vec<u8> {
    encode(model_name, model_version, id, outputs, Some(parameters))
}

/// [`encode_infer_response`] with the binary tensor data extension: the outputs `binary` names
/// are written after the JSON as raw bytes (their JSON has `parameters.binary_data_size` instead
/// of `data`), the others as JSON. Returns the body and, when any output went binary, the length
/// of its JSON part: the `Inference-Header-Content-Length` header's value. With no binary
/// output the body is exactly [`encode_infer_response`]'s.
#[must_use]
pub fn encode_binary_infer_response(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    binary: &BinaryOutputs,
) -> (Vec<u8>, Option<usize>) {
    let mut tensors = Vec::new();
    let sizes: Vec<Option<usize>> = outputs
        .iter()
        .map(|tensor| {
            binary
                .is_binary(tensor.name())
                .then(|| binary::encode(tensor.data(), &mut tensors))
        })
        .collect();
    if sizes.iter().all(Option::is_none) {
        return (encode(model_name, model_version, id, outputs, None), None);
    }
    let mut out = Vec::with_capacity(256 + tensors.len());
    let response = Response {
        model_name,
        model_version,
        id,
        parameters: None,
        outputs: Outputs {
            tensors: outputs,
            binary_sizes: Some(&sizes),
        },
    };
    let _ = serde_json::to_writer(&mut out, &response);
    let header_len = out.len();
    out.extend_from_slice(&tensors);
    (out, Some(header_len))
}

/// The JSON form of a request's inputs, `{"id"?, "inputs": [{"name", "datatype", "shape",
/// "data"}]}`: what the prediction log keeps of a request that came as binary tensors (the log
/// is JSON lines; raw bytes have no place in it).
#[must_use]
pub fn encode_infer_request(id: Option<&str>, inputs: &[Tensor]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Request<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        inputs: Outputs<'a>,
    }
    let mut out = Vec::new();
    let _ = serde_json::to_writer(
        &mut out,
        &Request {
            id,
            inputs: Outputs {
                tensors: inputs,
                binary_sizes: None,
            },
        },
    );
    out
}

/// The protocol's error body: `{"error": message}`.
#[must_use]
pub fn encode_error(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
    }
    let mut out = Vec::with_capacity(message.len() + 16);
    // Writing into a Vec cannot fail, and a struct of strings always serializes.
    let _ = serde_json::to_writer(&mut out, &ErrorBody { error: message });
    out
}

#[derive(Serialize)]
struct Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Parameters>,
    outputs: Outputs<'a>,
}

fn encode(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    parameters: Option<&Parameters>,
) -> Vec<u8> {
    let elements: usize = outputs.iter().map(|tensor| tensor.data().len()).sum();
    // About 12 bytes per number; a guess that avoids most regrowth.
    let mut out = Vec::with_capacity(128 + 64 * outputs.len() + 12 * elements);
    let response = Response {
        model_name,
        model_version,
        id,
        parameters,
        outputs: Outputs {
            tensors: outputs,
            binary_sizes: None,
        },
    };
    // Writing into a Vec cannot fail, and every map here has string keys, so serde_json has
    // no error to report.
    let _ = serde_json::to_writer(&mut out, &response);
    out
}

struct Outputs<'a> {
    tensors: &'a [Tensor],
    /// Per output, its size in bytes when it is written as binary data after the JSON.
    binary_sizes: Option<&'a [Option<usize>]>,
}

impl Serialize for Outputs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.tensors.len()))?;
        for (i, tensor) in self.tensors.iter().enumerate() {
            let binary_size = self.binary_sizes.and_then(|s| s.get(i).copied().flatten());
            seq.serialize_element(&Output {
                tensor,
                binary_size,
            })?;
        }
        seq.end()
    }
}

struct Output<'a> {
    tensor: &'a Tensor,
    binary_size: Option<usize>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

impl Serialize for Output<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tensor = self.tensor;
        let mut out = serializer.serialize_struct("Output", 4)?;
        out.serialize_field("name", tensor.name())?;
        out.serialize_field("datatype", tensor.datatype().as_oip())?;
        out.serialize_field("shape", tensor.shape())?;
        match self.binary_size {
            Some(binary_data_size) => {
                out.serialize_field("parameters", &BinaryParameters { binary_data_size })?;
            }
            None => out.serialize_field("data", &Data(tensor.data()))?,
        }
        out.end()
    }
}

struct Data<'a>(&'a TensorData);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Bool(v) => v.serialize(serializer),
            TensorData::U8(v) => v.serialize(serializer),
            TensorData::U16(v) => v.serialize(serializer),
            TensorData::U32(v) => v.serialize(serializer),
            TensorData::U64(v) => v.serialize(serializer),
            TensorData::I8(v) => v.serialize(serializer),
            TensorData::I16(v) => v.serialize(serializer),
            TensorData::I32(v) => v.serialize(serializer),
            TensorData::I64(v) => v.serialize(serializer),
            TensorData::F32(v) => v.serialize(serializer),
            TensorData::F64(v) => v.serialize(serializer),
            // As the f32 each one widens to exactly (shortest form; non-finite as `null`).
            TensorData::F16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::BF16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::String(v) => v.serialize(serializer),
        }
    }
}
