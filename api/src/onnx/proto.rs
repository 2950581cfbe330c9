//! The few onnx.proto messages the inspector decodes whole, written by hand so the registry needs
//! neither protoc nor a build script. Field numbers are onnx.proto's; fields the registry does not
//! read (doc strings, denotations) are left out and skipped by prost as unknown fields.
//!
//! Only small, bounded captures are decoded with these: a graph input or output (≤ 1 MiB) and an
//! opset import. Everything large (the graph, initializers) is walked by the scanner instead.

/// `onnx.OperatorSetIdProto`: one entry of `ModelProto.opset_import`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OperatorSetIdProto {
    /// Empty means the default `ai.onnx` domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.ValueInfoProto`: a graph input or output.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `onnx.TypeProto`: recursive through sequences, maps and optionals; prost's decode recursion
/// limit bounds the depth of what it accepts.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TypeProto {
    #[prost(oneof = "TypeValue", tags = "1, 4, 5, 7, 8, 9")]
    pub value: Option<TypeValue>,
}

/// The `TypeProto.value` oneof (variants named after its `*_type` fields).
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum TypeValue {
    #[prost(message, tag = "1")]
    Tensor(TensorTypeProto),
    #[prost(message, tag = "4")]
    Sequence(SequenceTypeProto),
    #[prost(message, tag = "5")]
    Map(MapTypeProto),
    #[prost(message, tag = "7")]
    Opaque(OpaqueTypeProto),
    #[prost(message, tag = "8")]
    SparseTensor(TensorTypeProto),
    #[prost(message, tag = "9")]
    Optional(OptionalTypeProto),
}

/// `onnx.TypeProto.Tensor`, and `onnx.TypeProto.SparseTensor`, which has the same fields.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorTypeProto {
    /// A `TensorProto.DataType` value.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Absent when even the rank is unknown.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `onnx.TypeProto.Sequence`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SequenceTypeProto {
    #[prost(message, optional, boxed, tag = "1")]
    pub elem_type: Option<Box<TypeProto>>,
}

/// `onnx.TypeProto.Map`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MapTypeProto {
    /// A `TensorProto.DataType` value (an integer type or STRING).
    #[prost(int32, tag = "1")]
    pub key_type: i32,
    #[prost(message, optional, boxed, tag = "2")]
    pub value_type: Option<Box<TypeProto>>,
}

/// `onnx.TypeProto.Optional`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OptionalTypeProto {
    #[prost(message, optional, boxed, tag = "1")]
    pub elem_type: Option<Box<TypeProto>>,
}

/// `onnx.TypeProto.Opaque`: a type only some runtime's custom operators understand.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OpaqueTypeProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `onnx.TensorShapeProto.Dimension`: a fixed size, a named symbolic size, or neither (unknown).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Dimension {
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
}

/// The `TensorShapeProto.Dimension.value` oneof.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum DimensionValue {
    #[prost(int64, tag = "1")]
    DimValue(i64),
    #[prost(string, tag = "2")]
    DimParam(String),
}
