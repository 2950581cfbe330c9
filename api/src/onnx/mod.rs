//! Reads the signature of an ONNX model (graph inputs and outputs, IR version, opsets) while its
//! bytes stream past, so an upload of up to 2 GiB is checked without ever being held in memory.
//!
//! [`OnnxScanner`] walks the protobuf wire format of `onnx.ModelProto` chunk by chunk, skipping
//! weights and nodes in bulk and decoding only the small parts a signature is made of. Its
//! [`OnnxError`]s are meant for the uploader: they say what is wrong and where.

mod proto;
mod scan;

use serde::{Deserialize, Serialize};

pub use scan::OnnxScanner;

/// What a client needs to call a model: the graph's real inputs (initializers excluded) and
/// outputs, plus what a runtime needs to know whether it can load it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSignature {
    /// Graph inputs a caller must feed, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
    /// `ModelProto.ir_version`: runtimes refuse IR versions newer than they know.
    pub ir_version: i64,
    /// Operator sets the graph binds against, as imported by the model.
    pub opsets: Vec<Opset>,
    /// `"producer_name producer_version"`, trimmed; `None` when the model names no producer.
    pub producer: Option<String>,
}

/// One graph input or output as the Open Inference Protocol describes a tensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The ONNX value name, which OIP requests use as the input/output name.
    pub name: String,
    /// Open Inference Protocol datatype: BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BF16, BYTES (ONNX STRING).
    /// Types with no OIP name keep the ONNX name (e.g. "COMPLEX64", "FLOAT8E4M3FN"); non-tensors are described
    /// like "seq(map(INT64,FP32))", "optional(FP32)", "sparse(FP32)".
    pub datatype: String,
    /// None when the rank is unknown (no shape in the graph, or a non-tensor type).
    pub shape: Option<Vec<Dim>>,
}

impl TensorSpec {
    /// Whether requests may be stacked along the first axis: true when the rank is known, at least
    /// one, and the first dimension is not fixed. A scalar or a tensor of unknown rank has no batch
    /// axis that can be relied on, so both answer false.
    #[must_use]
    pub fn is_dynamic_batch(&self) -> bool {
        self.shape
            .as_deref()
            .and_then(<[Dim]>::first)
            .is_some_and(|dim| !matches!(dim, Dim::Fixed(_)))
    }
}

/// One dimension of a tensor shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A size fixed by the graph; serialized as a number.
    Fixed(i64),
    /// A size named by the graph (`"batch"`, `"seq_len"`), equal wherever the name repeats;
    /// serialized as a string.
    Symbolic(String),
    /// A size the graph leaves open; serialized as `null`.
    Unknown,
}

impl Dim {
    /// The dimension as OIP metadata writes it: the size, or -1 for anything not fixed.
    #[must_use]
    pub fn as_oip(&self) -> i64 {
        match self {
            Dim::Fixed(size) => *size,
            Dim::Symbolic(_) | Dim::Unknown => -1,
        }
    }
}

/// One imported operator set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opset {
    /// Operator set domain; the default domain (empty in the file) is shown as `"ai.onnx"`.
    pub domain: String,
    /// Operator set version the graph's nodes bind against.
    pub version: i64,
}

/// Why bytes were refused as an ONNX model. The `Display` text is shown to the uploader as is
/// (HTTP 422), so each message says what is wrong and, where it helps, at which byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The bytes are not protobuf shaped like an `onnx.ModelProto`, or are damaged.
    #[error("not an ONNX model: {reason} (at byte {offset})")]
    Malformed {
        /// Where the offending field starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The bytes end in the middle of a field or message.
    #[error("truncated ONNX model: the data ends at byte {offset}, inside {context}")]
    Truncated {
        /// Total bytes received.
        offset: u64,
        /// The field or message that was cut short.
        context: String,
    },
    /// Well-formed protobuf that lacks what every ONNX model has (IR version, graph, outputs, opsets).
    #[error("not an ONNX model: {0}")]
    NotOnnx(String),
    /// A graph input or output that cannot be read as a typed tensor description.
    #[error("invalid ONNX model: graph {role} #{index} (at byte {offset}): {reason}")]
    InvalidValueInfo {
        /// `"input"` or `"output"`.
        role: &'static str,
        /// Zero-based position among the graph's inputs or outputs.
        index: usize,
        /// Where the value info starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An initializer whose data lives in a side file, which a single-file upload cannot carry.
    #[error(
        "unsupported ONNX model: {tensor} keeps its data in an external file, and external-data \
         models are not supported; embed the tensors in the .onnx file, e.g. \
         onnx.save_model(model, path, save_as_external_data=False)"
    )]
    ExternalData {
        /// Which tensor, e.g. `initializer "fc1.weight"`.
        tensor: String,
    },
    /// A part of the model larger than the registry reads into memory.
    #[error(
        "unsupported ONNX model: {what} (at byte {offset}) is {size} bytes; at most {limit} bytes are supported"
    )]
    TooLarge {
        /// Which field, e.g. `GraphProto.input`.
        what: String,
        /// Where the field starts.
        offset: u64,
        /// Its declared length.
        size: u64,
        /// The most the registry reads.
        limit: u64,
    },
    /// More entries of some kind than the registry keeps track of.
    #[error("unsupported ONNX model: more than {limit} {what}")]
    TooMany {
        /// What was counted, e.g. `graph inputs and outputs`.
        what: &'static str,
        /// The most the registry keeps.
        limit: usize,
    },
}

/// Reads the signature of a model held in memory.
///
/// # Errors
/// Any [`OnnxError`]: the bytes are not a complete, plausible ONNX model, or use a feature the
/// registry does not accept (external data).
pub fn inspect(bytes: &[u8]) -> Result<ModelSignature, OnnxError> {
    let mut scanner = OnnxScanner::new();
    scanner.feed(bytes)?;
    scanner.finish()
}

/// Nested sequence/map/optional types deeper than this are refused; real models use two or three.
const MAX_TYPE_DEPTH: usize = 16;

impl TensorSpec {
    /// Describes a graph input or output; the error is the reason it cannot be described.
    fn from_value_info(value: proto::ValueInfoProto) -> Result<Self, String> {
        if value.name.is_empty() {
            return Err("it has no name".to_owned());
        }
        let name = value.name;
        let Some(ty) = value.r#type else {
            return Err(format!("{name:?} has no type"));
        };
        let described = match &ty.value {
            Some(proto::TypeValue::Tensor(tensor)) => {
                element_type(tensor.elem_type).map(|datatype| TensorSpec {
                    datatype,
                    shape: tensor.shape.as_ref().map(shape),
                    name: name.clone(),
                })
            }
            _ => describe_type(&ty, 0).map(|datatype| TensorSpec {
                datatype,
                shape: None,
                name: name.clone(),
            }),
        };
        described.map_err(|reason| format!("{name:?}: {reason}"))
    }
}

fn shape(shape: &proto::TensorShapeProto) -> Vec<Dim> {
    shape
        .dim
        .iter()
        .map(|dim| match &dim.value {
            // ONNX requires dim_value >= 0; some old exporters wrote -1 for "dynamic".
            Some(proto::DimensionValue::DimValue(size)) if *size >= 0 => Dim::Fixed(*size),
            Some(proto::DimensionValue::DimParam(name)) if !name.is_empty() => {
                Dim::Symbolic(name.clone())
            }
            _ => Dim::Unknown,
        })
        .collect()
}

/// `TypeProto` as a compact string; tensors inside containers lose their shape, which OIP has no
/// way to express anyway.
fn describe_type(ty: &proto::TypeProto, depth: usize) -> Result<String, String> {
    if depth >= MAX_TYPE_DEPTH {
        return Err(format!(
            "its type nests deeper than {MAX_TYPE_DEPTH} levels"
        ));
    }
    let inner = |elem: &Option<Box<proto::TypeProto>>, container: &str| match elem {
        Some(elem) => describe_type(elem, depth + 1),
        None => Err(format!("its {container} type has no element type")),
    };
    match &ty.value {
        Some(proto::TypeValue::Tensor(tensor)) => element_type(tensor.elem_type),
        Some(proto::TypeValue::SparseTensor(tensor)) => {
            Ok(format!("sparse({})", element_type(tensor.elem_type)?))
        }
        Some(proto::TypeValue::Sequence(seq)) => {
            Ok(format!("seq({})", inner(&seq.elem_type, "sequence")?))
        }
        Some(proto::TypeValue::Optional(opt)) => {
            Ok(format!("optional({})", inner(&opt.elem_type, "optional")?))
        }
        Some(proto::TypeValue::Map(map)) => Ok(format!(
            "map({},{})",
            element_type(map.key_type)?,
            inner(&map.value_type, "map value")?
        )),
        Some(proto::TypeValue::Opaque(opaque)) if opaque.domain.is_empty() => {
            Ok(format!("opaque({})", opaque.name))
        }
        Some(proto::TypeValue::Opaque(opaque)) => {
            Ok(format!("opaque({}.{})", opaque.domain, opaque.name))
        }
        None => Err("its type is empty (no tensor, sequence, map or optional type)".to_owned()),
    }
}

/// `TensorProto.DataType` as an OIP datatype, or the ONNX name where OIP has none.
fn element_type(code: i32) -> Result<String, String> {
    let name = match code {
        0 => return Err("its element type is UNDEFINED".to_owned()),
        1 => "FP32",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "BYTES",
        9 => "BOOL",
        10 => "FP16",
        11 => "FP64",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BF16",
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        24 => "FLOAT8E8M0",
        25 => "UINT2",
        26 => "INT2",
        27 => "FLOAT6E2M3",
        28 => "FLOAT6E3M2",
        // A type newer than this table: keep the model, name the code so serving can refuse it.
        other => return Ok(format!("ONNX_TYPE_{other}")),
    };
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::proto::{
        Dimension, DimensionValue, MapTypeProto, OptionalTypeProto, SequenceTypeProto,
        TensorShapeProto, TensorTypeProto, TypeProto, TypeValue, ValueInfoProto,
    };
    use super::*;

    fn tensor_type(elem_type: i32, dims: Option<Vec<DimensionValue>>) -> TypeProto {
        TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type,
                shape: dims.map(|dims| TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|value| Dimension { value: Some(value) })
                        .collect(),
                }),
            })),
        }
    }

    fn value_info(name: &str, ty: TypeProto) -> ValueInfoProto {
        ValueInfoProto {
            name: name.to_owned(),
            r#type: Some(ty),
        }
    }

    #[test]
    fn dims_serialize_as_numbers_strings_and_null() {
        let spec = TensorSpec {
            name: "x".to_owned(),
            datatype: "FP32".to_owned(),
            shape: Some(vec![
                Dim::Symbolic("batch".to_owned()),
                Dim::Fixed(32),
                Dim::Unknown,
            ]),
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "x", "datatype": "FP32", "shape": ["batch", 32, null]})
        );
        let back: TensorSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn a_signature_survives_a_json_round_trip() {
        let signature = ModelSignature {
            inputs: vec![TensorSpec {
                name: "input".to_owned(),
                datatype: "FP32".to_owned(),
                shape: None,
            }],
            outputs: vec![TensorSpec {
                name: "y".to_owned(),
                datatype: "seq(map(INT64,FP32))".to_owned(),
                shape: Some(vec![]),
            }],
            ir_version: 8,
            opsets: vec![Opset {
                domain: "ai.onnx".to_owned(),
                version: 17,
            }],
            producer: Some("pytorch 2.5".to_owned()),
        };
        let json = serde_json::to_string(&signature).unwrap();
        assert_eq!(
            serde_json::from_str::<ModelSignature>(&json).unwrap(),
            signature
        );
    }

    #[test]
    fn dynamic_batch_means_a_known_rank_whose_first_dim_is_not_fixed() {
        let spec = |shape: Option<Vec<Dim>>| TensorSpec {
            name: "x".to_owned(),
            datatype: "FP32".to_owned(),
            shape,
        };
        assert!(
            spec(Some(vec![Dim::Symbolic("batch".to_owned()), Dim::Fixed(3)])).is_dynamic_batch()
        );
        assert!(spec(Some(vec![Dim::Unknown])).is_dynamic_batch());
        assert!(!spec(Some(vec![Dim::Fixed(1), Dim::Unknown])).is_dynamic_batch());
        assert!(!spec(Some(vec![])).is_dynamic_batch());
        assert!(!spec(None).is_dynamic_batch());
    }

    #[test]
    fn only_fixed_dims_keep_their_size_in_oip_metadata() {
        assert_eq!(Dim::Fixed(7).as_oip(), 7);
        assert_eq!(Dim::Fixed(0).as_oip(), 0);
        assert_eq!(Dim::Symbolic("n".to_owned()).as_oip(), -1);
        assert_eq!(Dim::Unknown.as_oip(), -1);
    }

    #[test]
    fn onnx_element_types_get_oip_names_where_oip_has_one() {
        let names: Vec<String> = (1..=16).map(|code| element_type(code).unwrap()).collect();
        assert_eq!(
            names,
            [
                "FP32",
                "UINT8",
                "INT8",
                "UINT16",
                "INT16",
                "INT32",
                "INT64",
                "BYTES",
                "BOOL",
                "FP16",
                "FP64",
                "UINT32",
                "UINT64",
                "COMPLEX64",
                "COMPLEX128",
                "BF16"
            ]
        );
        assert_eq!(element_type(17).unwrap(), "FLOAT8E4M3FN");
        assert_eq!(element_type(99).unwrap(), "ONNX_TYPE_99");
        assert!(element_type(0).is_err());
    }

    #[test]
    fn tensor_shapes_keep_fixed_symbolic_and_unknown_dims() {
        let spec = TensorSpec::from_value_info(value_info(
            "x",
            tensor_type(
                1,
                Some(vec![
                    DimensionValue::DimParam("batch".to_owned()),
                    DimensionValue::DimValue(3),
                    DimensionValue::DimValue(-1),
                    DimensionValue::DimParam(String::new()),
                ]),
            ),
        ))
        .unwrap();
        assert_eq!(
            spec.shape,
            Some(vec![
                Dim::Symbolic("batch".to_owned()),
                Dim::Fixed(3),
                Dim::Unknown,
                Dim::Unknown
            ])
        );
        let no_shape = TensorSpec::from_value_info(value_info("x", tensor_type(7, None))).unwrap();
        assert_eq!(no_shape.shape, None);
        assert_eq!(no_shape.datatype, "INT64");
        let scalar =
            TensorSpec::from_value_info(value_info("x", tensor_type(9, Some(vec![])))).unwrap();
        assert_eq!(scalar.shape, Some(vec![]));
    }

    #[test]
    fn non_tensor_types_are_described_inside_out_without_a_shape() {
        let map = TypeProto {
            value: Some(TypeValue::Map(MapTypeProto {
                key_type: 7,
                value_type: Some(Box::new(tensor_type(1, Some(vec![])))),
            })),
        };
        let seq = TypeProto {
            value: Some(TypeValue::Sequence(SequenceTypeProto {
                elem_type: Some(Box::new(map)),
            })),
        };
        let spec = TensorSpec::from_value_info(value_info("probs", seq)).unwrap();
        assert_eq!(spec.datatype, "seq(map(INT64,FP32))");
        assert_eq!(spec.shape, None);

        let optional = TypeProto {
            value: Some(TypeValue::Optional(OptionalTypeProto {
                elem_type: Some(Box::new(tensor_type(1, Some(vec![])))),
            })),
        };
        let spec = TensorSpec::from_value_info(value_info("maybe", optional)).unwrap();
        assert_eq!(spec.datatype, "optional(FP32)");

        let sparse = TypeProto {
            value: Some(TypeValue::SparseTensor(TensorTypeProto {
                elem_type: 1,
                shape: None,
            })),
        };
        let spec = TensorSpec::from_value_info(value_info("s", sparse)).unwrap();
        assert_eq!(spec.datatype, "sparse(FP32)");
        assert_eq!(spec.shape, None);
    }

    #[test]
    fn value_infos_without_name_type_or_element_type_are_refused() {
        let err = TensorSpec::from_value_info(value_info("", tensor_type(1, None))).unwrap_err();
        assert_eq!(err, "it has no name");
        let err = TensorSpec::from_value_info(ValueInfoProto {
            name: "x".to_owned(),
            r#type: None,
        })
        .unwrap_err();
        assert_eq!(err, "\"x\" has no type");
        let err = TensorSpec::from_value_info(value_info("x", tensor_type(0, None))).unwrap_err();
        assert!(err.contains("UNDEFINED"), "{err}");
        let empty_seq = TypeProto {
            value: Some(TypeValue::Sequence(SequenceTypeProto { elem_type: None })),
        };
        let err = TensorSpec::from_value_info(value_info("x", empty_seq)).unwrap_err();
        assert!(err.contains("no element type"), "{err}");
    }

    #[test]
    fn absurdly_nested_types_are_refused_instead_of_recursed() {
        let mut ty = tensor_type(1, None);
        for _ in 0..40 {
            ty = TypeProto {
                value: Some(TypeValue::Optional(OptionalTypeProto {
                    elem_type: Some(Box::new(ty)),
                })),
            };
        }
        let err = TensorSpec::from_value_info(value_info("deep", ty)).unwrap_err();
        assert!(err.contains("nests deeper"), "{err}");
    }
}
