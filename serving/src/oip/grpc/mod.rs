//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`): the protobuf
//! messages ([`proto`]) and the pure conversions between them and the tensors the runtime takes.
//! A `ModelInfer` request is checked against the model's signature by the same checks as a REST
//! one (names, datatypes, shapes, batch sizes, outputs) and decodes into the same
//! [`DecodedRequest`], so everything after decoding is one path for both protocols.
//!
//! Data comes either in `raw_input_contents` (what `tritonclient.grpc` and KServe's client
//! send: little-endian bytes in the layout of the binary tensor data extension, `BYTES`
//! elements as a 4-byte length and the bytes) or in the typed `contents` fields; answers always
//! carry `raw_output_contents`, as Triton's do.

pub mod proto;

use ferry_api::onnx::ModelSignature;

use super::binary;
use super::error::OipError;
use super::request::{BinaryOutputs, DecodedRequest};
use super::validation::{self, Header};
use super::{MAX_RANK, Parameters};
use crate::runtime::{DataType, Tensor, TensorData};
use proto::{
    InferOutputTensor, InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ParameterChoice,
};

/// Decodes a `ModelInfer` request's protobuf bytes and checks it against `signature`.
///
/// # Errors
/// An [`OipError`] naming what is wrong: bytes that are not a `ModelInferRequest`; what
/// [`decode_infer_request`](super::decode_infer_request) refuses for the same inputs and
/// outputs; `raw_input_contents` with another number of entries than `inputs`; an input with
/// both typed `contents` and raw data, or with neither; typed contents in the field of another
/// datatype, with another count than the shape holds, or out of range (`INT8` from
/// `int_contents`…); `FP16`/`BF16` in typed contents (the protocol has no field for them); and
/// `BYTES` elements that are not UTF-8 or hold a NUL.
pub fn decode_grpc_infer_request(
    body: &[u8],
    signature: &ModelSignature,
) -> Result<DecodedRequest, OipError> {
    let request = <ModelInferRequest as prost::Message>::decode(body).map_err(|e| {
        OipError::Malformed(format!(
            "malformed request: not a ModelInferRequest message ({e})"
        ))
    })?;
    decode_request(request, signature)
}

/// [`decode_grpc_infer_request`] of a message already parsed.
///
/// # Errors
/// As [`decode_grpc_infer_request`].
pub fn decode_request(
    request: ModelInferRequest,
    signature: &ModelSignature,
) -> Result<DecodedRequest, OipError> {
    let raw = request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(OipError::Malformed(format!(
            "malformed request: raw_input_contents has {} entries for {} inputs; give one per \
             input, in the order of `inputs`",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut given: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    for (i, input) in request.inputs.into_iter().enumerate() {
        if input.shape.len() > MAX_RANK {
            return Err(OipError::input_error(
                &input.name,
                format!(
                    "shape has {} dimensions; at most {MAX_RANK}",
                    input.shape.len()
                ),
            ));
        }
        let header = validation::check_input(
            signature,
            &given,
            &input.name,
            &input.datatype,
            &input.shape,
        )?;
        let data = match (raw.get(i), input.contents) {
            (Some(_), Some(_)) => {
                return Err(OipError::input_error(
                    &input.name,
                    "has typed `contents` and raw_input_contents; give one of them",
                ));
            }
            (Some(bytes), None) => binary::decode(
                &input.name,
                &header,
                bytes,
                &format!("raw_input_contents[{i}]"),
            )?,
            (None, Some(contents)) => typed(&input.name, &header, contents)?,
            (None, None) => {
                return Err(OipError::input_error(
                    &input.name,
                    "has no data: give `contents` or raw_input_contents",
                ));
            }
        };
        let index = header.index;
        let tensor = Tensor::new(input.name, header.shape, data)
            .map_err(|e| OipError::Malformed(e.to_string()))?;
        given[index] = Some(tensor);
    }
    let mut inputs = Vec::with_capacity(given.len());
    for (spec, tensor) in signature.inputs.iter().zip(given) {
        inputs.push(tensor.ok_or_else(|| validation::missing_input(spec))?);
    }
    validation::check_dims_agree(signature, &inputs)?;
    let outputs = if request.outputs.is_empty() {
        None
    } else {
        if let Some(classified) = request
            .outputs
            .iter()
            .find(|o| o.parameters.contains_key("classification"))
        {
            return Err(OipError::output_error(
                &classified.name,
                "the classification extension is not supported; request the output without \
                 the `classification` parameter",
            ));
        }
        let names = request.outputs.into_iter().map(|o| o.name).collect();
        validation::check_outputs(signature, names)?
    };
    let parameters = (!request.parameters.is_empty()).then(|| to_json(request.parameters));
    Ok(DecodedRequest {
        id: (!request.id.is_empty()).then_some(request.id),
        inputs,
        outputs,
        parameters,
        binary_outputs: BinaryOutputs::default(),
    })
}

/// Request parameters in the JSON form the REST side keeps them in.
fn to_json(parameters: std::collections::HashMap<String, InferParameter>) -> Parameters {
    parameters
        .into_iter()
        .map(|(key, p)| {
            let value = match p.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => serde_json::Value::Bool(b),
                Some(ParameterChoice::Int64Param(n)) => serde_json::Value::from(n),
                Some(ParameterChoice::StringParam(s)) => serde_json::Value::String(s),
                None => serde_json::Value::Null,
            };
            (key, value)
        })
        .collect()
}

/// An input's data from the typed `contents` field of its datatype.
fn typed(
    name: &str,
    header: &Header,
    contents: InferTensorContents,
) -> Result<TensorData, OipError> {
    let fail = |reason: String| OipError::input_error(name, reason);
    let count = |field: &str, got: usize| {
        if got == header.len {
            Ok(())
        } else {
            Err(fail(format!(
                "contents.{field} has {got} elements, but shape {:?} holds {}",
                header.shape, header.len
            )))
        }
    };
    macro_rules! narrow {
        ($field:ident, $ty:ty, $variant:ident) => {{
            count(stringify!($field), contents.$field.len())?;
            let mut out = Vec::with_capacity(contents.$field.len());
            for (at, v) in contents.$field.into_iter().enumerate() {
                out.push(<$ty>::try_from(v).map_err(|_| {
                    fail(format!(
                        "element {at} is {v}, out of range for {}",
                        header.datatype
                    ))
                })?);
            }
            TensorData::$variant(out)
        }};
    }
    Ok(match header.datatype {
        DataType::Bool => {
            count("bool_contents", contents.bool_contents.len())?;
            TensorData::Bool(contents.bool_contents)
        }
        DataType::Int8 => narrow!(int_contents, i8, I8),
        DataType::Int16 => narrow!(int_contents, i16, I16),
        DataType::Int32 => {
            count("int_contents", contents.int_contents.len())?;
            TensorData::I32(contents.int_contents)
        }
        DataType::Int64 => {
            count("int64_contents", contents.int64_contents.len())?;
            TensorData::I64(contents.int64_contents)
        }
        DataType::Uint8 => narrow!(uint_contents, u8, U8),
        DataType::Uint16 => narrow!(uint_contents, u16, U16),
        DataType::Uint32 => {
            count("uint_contents", contents.uint_contents.len())?;
            TensorData::U32(contents.uint_contents)
        }
        DataType::Uint64 => {
            count("uint64_contents", contents.uint64_contents.len())?;
            TensorData::U64(contents.uint64_contents)
        }
        DataType::Fp32 => {
            count("fp32_contents", contents.fp32_contents.len())?;
            TensorData::F32(contents.fp32_contents)
        }
        DataType::Fp64 => {
            count("fp64_contents", contents.fp64_contents.len())?;
            TensorData::F64(contents.fp64_contents)
        }
        DataType::Bytes => {
            count("bytes_contents", contents.bytes_contents.len())?;
            let mut out = Vec::with_capacity(header.len);
            for (at, element) in contents.bytes_contents.into_iter().enumerate() {
                out.push(binary::text_element(name, at, element)?);
            }
            TensorData::String(out)
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(fail(format!(
                "{} has no typed field in the protocol; send it in raw_input_contents",
                header.datatype
            )));
        }
    })
}

/// The `ModelInfer` answer's protobuf bytes: every output in `raw_output_contents`.
#[must_use]
pub fn encode_grpc_infer_response(
    model: &str,
    version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
) -> Vec<u8> {
    let mut response = ModelInferResponse {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        id: id.unwrap_or_default().to_owned(),
        outputs: Vec::with_capacity(outputs.len()),
        raw_output_contents: Vec::with_capacity(outputs.len()),
        ..ModelInferResponse::default()
    };
    for tensor in outputs {
        response.outputs.push(InferOutputTensor {
            name: tensor.name().to_owned(),
            datatype: tensor.datatype().as_oip().to_owned(),
            shape: tensor
                .shape()
                .iter()
                .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
                .collect(),
            ..InferOutputTensor::default()
        });
        let mut raw = Vec::new();
        binary::encode(tensor.data(), &mut raw);
        response.raw_output_contents.push(raw);
    }
    prost::Message::encode_to_vec(&response)
}
