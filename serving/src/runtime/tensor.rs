//! Tensors as the runtime passes them around: a name, a shape and a typed, row-major buffer.
//!
//! The HTTP layer builds them from Open Inference Protocol requests; workers hand them to ONNX
//! Runtime without copying (a borrowed view), and a worker stacks and unstacks them along the
//! first axis.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use ort::session::SessionInputValue;
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use super::error::RuntimeError;

/// Element type of a tensor, named as the Open Inference Protocol names it.
///
/// It lists every OIP datatype, including the ones [`TensorData`] cannot hold yet (`FP16`,
/// `BF16`, which need the binary tensor extension), so signatures can be described and refused
/// precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// `BOOL`
    Bool,
    /// `UINT8`
    Uint8,
    /// `UINT16`
    Uint16,
    /// `UINT32`
    Uint32,
    /// `UINT64`
    Uint64,
    /// `INT8`
    Int8,
    /// `INT16`
    Int16,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP16` (IEEE half precision)
    Fp16,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
    /// `BF16` (bfloat16)
    Bf16,
    /// `BYTES`: ONNX `STRING` tensors.
    Bytes,
}

const ALL_DATATYPES: [DataType; 14] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bf16,
    DataType::Bytes,
];

impl DataType {
    /// The Open Inference Protocol name (`"FP32"`, `"BYTES"`…).
    #[must_use]
    pub fn as_oip(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bf16 => "BF16",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses an Open Inference Protocol name; `None` for anything else, including the ONNX-only
    /// names the registry uses for types OIP cannot express (`"COMPLEX64"`, `"seq(FP32)"`…).
    #[must_use]
    pub fn from_oip(name: &str) -> Option<Self> {
        ALL_DATATYPES.into_iter().find(|dt| dt.as_oip() == name)
    }

    pub(crate) fn from_ort(ty: TensorElementType) -> Option<Self> {
        Some(match ty {
            TensorElementType::Bool => DataType::Bool,
            TensorElementType::Uint8 => DataType::Uint8,
            TensorElementType::Uint16 => DataType::Uint16,
            TensorElementType::Uint32 => DataType::Uint32,
            TensorElementType::Uint64 => DataType::Uint64,
            TensorElementType::Int8 => DataType::Int8,
            TensorElementType::Int16 => DataType::Int16,
            TensorElementType::Int32 => DataType::Int32,
            TensorElementType::Int64 => DataType::Int64,
            TensorElementType::Float16 => DataType::Fp16,
            TensorElementType::Float32 => DataType::Fp32,
            TensorElementType::Float64 => DataType::Fp64,
            TensorElementType::Bfloat16 => DataType::Bf16,
            TensorElementType::String => DataType::Bytes,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_oip())
    }
}

/// The text is not an Open Inference Protocol datatype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown datatype {0:?}; expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, \
     FP64, BF16, BYTES"
)]
pub struct UnknownDataType(pub String);

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        DataType::from_oip(name).ok_or_else(|| UnknownDataType(name.to_owned()))
    }
}

/// The elements of a tensor, row-major, in a vector of their Rust type.
///
/// `String` carries ONNX `STRING` elements (OIP `BYTES`): ONNX Runtime's string API takes UTF-8
/// text without NUL bytes, so binary payloads must be encoded by the caller. `FP16` and `BF16`
/// hold the `half` crate's types (ONNX Runtime reads them in place). New element types will be
/// new variants, hence `non_exhaustive`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    U8(Vec<u8>),
    /// `UINT16`
    U16(Vec<u16>),
    /// `UINT32`
    U32(Vec<u32>),
    /// `UINT64`
    U64(Vec<u64>),
    /// `INT8`
    I8(Vec<i8>),
    /// `INT16`
    I16(Vec<i16>),
    /// `INT32`
    I32(Vec<i32>),
    /// `INT64`
    I64(Vec<i64>),
    /// `FP16`
    F16(Vec<half::f16>),
    /// `FP32`
    F32(Vec<f32>),
    /// `FP64`
    F64(Vec<f64>),
    /// `BF16`
    BF16(Vec<half::bf16>),
    /// `BYTES` (ONNX `STRING`)
    String(Vec<String>),
}

/// Runs `$body` with `$values` bound to the vector inside any variant and `$variant` naming that
/// variant's constructor, so one generic body serves every element type.
macro_rules! each_variant {
    ($data:expr, |$variant:ident, $values:ident| $body:expr) => {
        match $data {
            TensorData::Bool($values) => {
                use TensorData::Bool as $variant;
                $body
            }
            TensorData::U8($values) => {
                use TensorData::U8 as $variant;
                $body
            }
            TensorData::U16($values) => {
                use TensorData::U16 as $variant;
                $body
            }
            TensorData::U32($values) => {
                use TensorData::U32 as $variant;
                $body
            }
            TensorData::U64($values) => {
                use TensorData::U64 as $variant;
                $body
            }
            TensorData::I8($values) => {
                use TensorData::I8 as $variant;
                $body
            }
            TensorData::I16($values) => {
                use TensorData::I16 as $variant;
                $body
            }
            TensorData::I32($values) => {
                use TensorData::I32 as $variant;
                $body
            }
            TensorData::I64($values) => {
                use TensorData::I64 as $variant;
                $body
            }
            TensorData::F32($values) => {
                use TensorData::F32 as $variant;
                $body
            }
            TensorData::F64($values) => {
                use TensorData::F64 as $variant;
                $body
            }
            TensorData::F16($values) => {
                use TensorData::F16 as $variant;
                $body
            }
            TensorData::BF16($values) => {
                use TensorData::BF16 as $variant;
                $body
            }
            TensorData::String($values) => {
                use TensorData::String as $variant;
                $body
            }
        }
    };
    ($data:expr, |$values:ident| $body:expr) => {
        match $data {
            TensorData::Bool($values) => $body,
            TensorData::U8($values) => $body,
            TensorData::U16($values) => $body,
            TensorData::U32($values) => $body,
            TensorData::U64($values) => $body,
            TensorData::I8($values) => $body,
            TensorData::I16($values) => $body,
            TensorData::I32($values) => $body,
            TensorData::I64($values) => $body,
            TensorData::F32($values) => $body,
            TensorData::F64($values) => $body,
            TensorData::F16($values) => $body,
            TensorData::BF16($values) => $body,
            TensorData::String($values) => $body,
        }
    };
}

impl TensorData {
    /// The element type.
    #[must_use]
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::Uint8,
            TensorData::U16(_) => DataType::Uint16,
            TensorData::U32(_) => DataType::Uint32,
            TensorData::U64(_) => DataType::Uint64,
            TensorData::I8(_) => DataType::Int8,
            TensorData::I16(_) => DataType::Int16,
            TensorData::I32(_) => DataType::Int32,
            TensorData::I64(_) => DataType::Int64,
            TensorData::F32(_) => DataType::Fp32,
            TensorData::F64(_) => DataType::Fp64,
            TensorData::F16(_) => DataType::Fp16,
            TensorData::BF16(_) => DataType::Bf16,
            TensorData::String(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        each_variant!(self, |values| values.len())
    }

    /// Whether there are no elements (a shape with a zero dimension).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` zeros (`false`, `0`, `0.0`, empty strings) of `datatype`, or `None` for a type
    /// `TensorData` cannot hold.
    #[must_use]
    pub fn zeros(datatype: DataType, len: usize) -> Option<Self> {
        Some(match datatype {
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::Uint8 => TensorData::U8(vec![0; len]),
            DataType::Uint16 => TensorData::U16(vec![0; len]),
            DataType::Uint32 => TensorData::U32(vec![0; len]),
            DataType::Uint64 => TensorData::U64(vec![0; len]),
            DataType::Int8 => TensorData::I8(vec![0; len]),
            DataType::Int16 => TensorData::I16(vec![0; len]),
            DataType::Int32 => TensorData::I32(vec![0; len]),
            DataType::Int64 => TensorData::I64(vec![0; len]),
            DataType::Fp32 => TensorData::F32(vec![0.0; len]),
            DataType::Fp64 => TensorData::F64(vec![0.0; len]),
            DataType::Bytes => TensorData::String(vec![String::new(); len]),
            DataType::Fp16 => TensorData::F16(vec![half::f16::ZERO; len]),
            DataType::Bf16 => TensorData::BF16(vec![half::bf16::ZERO; len]),
        })
    }
}

macro_rules! impl_from_vec {
    ($($ty:ty => $variant:ident),+ $(,)?) => {
        $(impl From<Vec<$ty>> for TensorData {
            fn from(values: Vec<$ty>) -> Self {
                TensorData::$variant(values)
            }
        })+
    };
}

impl_from_vec!(
    bool => Bool, u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16,
    i32 => I32, i64 => I64, f32 => F32, f64 => F64, String => String, half::f16 => F16,
    half::bf16 => BF16,
);

/// A named tensor whose element count always matches its shape.
///
/// Fields are private so that invariant holds everywhere: the queue, the workers and ONNX Runtime
/// can rely on it instead of re-checking. The datatype is the data's own, so a tensor cannot claim
/// one type and carry another.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// A tensor named `name` of `shape` holding `data` row-major.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidInput`] when the number of elements is not the product of `shape`.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: impl Into<TensorData>,
    ) -> Result<Self, RuntimeError> {
        let name = name.into();
        let data = data.into();
        match element_count(&shape) {
            Some(expected) if expected == data.len() => Ok(Tensor { name, shape, data }),
            Some(expected) => {
                let given = data.len();
                Err(RuntimeError::invalid_input(
                    name,
                    format!("shape {shape:?} holds {expected} elements but {given} were given"),
                ))
            }
            None => Err(RuntimeError::invalid_input(
                name,
                format!("shape {shape:?} has more elements than memory can address"),
            )),
        }
    }

    /// A tensor of zeros of `datatype` (see [`TensorData::zeros`]).
    ///
    /// # Errors
    /// [`RuntimeError::InvalidInput`] for a datatype `TensorData` cannot hold, or a shape whose
    /// element count overflows.
    pub fn zeros(
        name: impl Into<String>,
        datatype: DataType,
        shape: Vec<usize>,
    ) -> Result<Self, RuntimeError> {
        let name = name.into();
        let Some(len) = element_count(&shape) else {
            return Err(RuntimeError::invalid_input(
                name,
                format!("shape {shape:?} has more elements than memory can address"),
            ));
        };
        let Some(data) = TensorData::zeros(datatype, len) else {
            return Err(RuntimeError::invalid_input(
                name,
                format!("{datatype} tensors are not supported yet"),
            ));
        };
        Ok(Tensor { name, shape, data })
    }

    /// The input or output name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dimensions, outermost first.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    #[must_use]
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The element type.
    #[must_use]
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Takes the tensor apart into name, shape and data.
    #[must_use]
    pub fn into_parts(self) -> (String, Vec<usize>, TensorData) {
        (self.name, self.shape, self.data)
    }

    /// Size of the first dimension, the one requests are batched along; `None` for a scalar.
    #[must_use]
    pub fn rows(&self) -> Option<usize> {
        self.shape.first().copied()
    }

    /// Stacks tensors of one name and datatype along the first axis: shapes `[a, …]`, `[b, …]`
    /// give `[a + b, …]`. The dimensions after the first must be equal.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidInput`] for no parts, scalars, mismatched datatypes or mismatched
    /// inner dimensions.
    pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor, RuntimeError> {
        let Some(first) = parts.first() else {
            return Err(RuntimeError::invalid_input("", "nothing to concatenate"));
        };
        let Some((_, inner)) = first.shape.split_first() else {
            return Err(RuntimeError::invalid_input(
                &first.name,
                "a scalar has no rows to concatenate",
            ));
        };
        let mut rows = 0usize;
        let mut len = 0usize;
        for part in parts {
            if part.datatype() != first.datatype() || part.shape.get(1..) != Some(inner) {
                return Err(RuntimeError::invalid_input(
                    &first.name,
                    format!(
                        "cannot stack {} {:?} onto {} {:?}",
                        part.datatype(),
                        part.shape,
                        first.datatype(),
                        first.shape
                    ),
                ));
            }
            rows = rows.saturating_add(part.shape.first().copied().unwrap_or(0));
            len = len.saturating_add(part.data.len());
        }
        let data = each_variant!(&first.data, |Variant, _first| {
            let mut stacked = Vec::with_capacity(len);
            for part in parts {
                // Datatypes were compared above, so this never takes the other arm.
                if let Variant(values) = &part.data {
                    stacked.extend_from_slice(values);
                }
            }
            Variant(stacked)
        });
        let mut shape = first.shape.clone();
        if let Some(outer) = shape.first_mut() {
            *outer = rows;
        }
        Tensor::new(first.name.clone(), shape, data)
    }

    /// Cuts the tensor along its first axis into consecutive pieces of `rows[i]` rows each; the
    /// inverse of [`Tensor::concat_rows`].
    ///
    /// # Errors
    /// [`RuntimeError::InvalidInput`] for a scalar, or when `rows` does not add up to the first
    /// dimension.
    pub fn split_rows(&self, rows: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
        let Some((&total, inner)) = self.shape.split_first() else {
            return Err(RuntimeError::invalid_input(
                &self.name,
                "a scalar has no rows to split",
            ));
        };
        if rows.iter().try_fold(0usize, |sum, &n| sum.checked_add(n)) != Some(total) {
            return Err(RuntimeError::invalid_input(
                &self.name,
                format!("cannot split {total} rows into pieces of {rows:?}"),
            ));
        }
        // The element count is valid (constructor invariant), so the row size cannot overflow.
        let row_len: usize = inner.iter().product();
        let mut pieces = Vec::with_capacity(rows.len());
        let mut start = 0usize;
        for &n in rows {
            let end = start + n * row_len;
            let data = each_variant!(&self.data, |Variant, values| {
                let Some(piece) = values.get(start..end) else {
                    return Err(RuntimeError::invalid_input(
                        &self.name,
                        format!("rows {start}..{end} lie outside the data"),
                    ));
                };
                Variant(piece.to_vec())
            });
            let mut shape = self.shape.clone();
            if let Some(outer) = shape.first_mut() {
                *outer = n;
            }
            pieces.push(Tensor {
                name: self.name.clone(),
                shape,
                data,
            });
            start = end;
        }
        Ok(pieces)
    }

    /// A view ONNX Runtime reads in place (no copy), except strings, which ONNX Runtime stores
    /// in its own format and therefore copies.
    pub(crate) fn to_session_input(&self) -> ort::Result<(Cow<'_, str>, SessionInputValue<'_>)> {
        let shape = self.shape.as_slice();
        let value: SessionInputValue<'_> = match &self.data {
            TensorData::Bool(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::U8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::U16(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::U32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::U64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::I8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::I16(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::I32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::I64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::F32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::F64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::F16(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::BF16(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            TensorData::String(v) => {
                ort::value::Tensor::from_string_array((shape, v.as_slice()))?.into()
            }
        };
        Ok((Cow::Borrowed(self.name.as_str()), value))
    }

    /// Copies a session output into a `Tensor`.
    pub(crate) fn from_session_output(
        name: &str,
        value: &DynValue,
    ) -> Result<Tensor, RuntimeError> {
        let unsupported = |what: &dyn fmt::Display| {
            RuntimeError::inference(format!(
                "output {name:?} is {what}, which Ferry cannot return"
            ))
        };
        let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
            return Err(unsupported(&"not a tensor"));
        };
        let shape = shape
            .iter()
            .map(|&dim| usize::try_from(dim))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| unsupported(&format_args!("of shape {shape}")))?;
        let failed =
            |e: ort::Error| RuntimeError::inference(format!("reading output {name:?}: {e}"));
        macro_rules! copy {
            ($ty:ty, $variant:ident) => {
                TensorData::$variant(
                    value
                        .try_extract_tensor::<$ty>()
                        .map_err(failed)?
                        .1
                        .to_vec(),
                )
            };
        }
        let data = match ty {
            TensorElementType::Bool => copy!(bool, Bool),
            TensorElementType::Uint8 => copy!(u8, U8),
            TensorElementType::Uint16 => copy!(u16, U16),
            TensorElementType::Uint32 => copy!(u32, U32),
            TensorElementType::Uint64 => copy!(u64, U64),
            TensorElementType::Int8 => copy!(i8, I8),
            TensorElementType::Int16 => copy!(i16, I16),
            TensorElementType::Int32 => copy!(i32, I32),
            TensorElementType::Int64 => copy!(i64, I64),
            TensorElementType::Float32 => copy!(f32, F32),
            TensorElementType::Float64 => copy!(f64, F64),
            TensorElementType::Float16 => copy!(half::f16, F16),
            TensorElementType::Bfloat16 => copy!(half::bf16, BF16),
            TensorElementType::String => {
                TensorData::String(value.try_extract_strings().map_err(failed)?.1)
            }
            other => return Err(unsupported(&format_args!("a {other} tensor"))),
        };
        Tensor::new(name, shape, data).map_err(|e| RuntimeError::inference(e.to_string()))
    }
}

/// Product of the dimensions, or `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(name: &str, shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor::new(name, shape, values.to_vec()).unwrap()
    }

    #[test]
    fn every_oip_datatype_round_trips_through_its_name() {
        for dt in ALL_DATATYPES {
            assert_eq!(dt.as_oip().parse::<DataType>().unwrap(), dt);
        }
        assert!("COMPLEX64".parse::<DataType>().is_err());
        assert!("fp32".parse::<DataType>().is_err());
    }

    #[test]
    fn a_tensor_whose_data_does_not_fill_its_shape_is_refused() {
        let err = Tensor::new("x", vec![2, 3], vec![1.0_f32; 5]).unwrap_err();
        assert_eq!(
            err,
            RuntimeError::InvalidInput {
                input: "x".to_owned(),
                reason: "shape [2, 3] holds 6 elements but 5 were given".to_owned()
            }
        );
        assert!(Tensor::new("x", vec![usize::MAX, 2], Vec::<u8>::new()).is_err());
        assert!(Tensor::new("x", vec![0, 4], Vec::<u8>::new()).is_ok());
        assert!(Tensor::new("x", vec![], vec![7_i64]).is_ok());
    }

    #[test]
    fn concatenated_rows_split_back_into_the_original_tensors() {
        let a = f32s("x", vec![1, 2], &[1.0, 2.0]);
        let b = f32s("x", vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let c = f32s("x", vec![0, 2], &[]);
        let stacked = Tensor::concat_rows(&[&a, &b, &c]).unwrap();
        assert_eq!(stacked.shape(), [3, 2]);
        assert_eq!(
            stacked.data(),
            &TensorData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        assert_eq!(stacked.split_rows(&[1, 2, 0]).unwrap(), vec![a, b, c]);
    }

    #[test]
    fn strings_stack_and_split_like_numbers() {
        let a = Tensor::new("s", vec![1], vec!["a".to_owned()]).unwrap();
        let b = Tensor::new("s", vec![2], vec!["b".to_owned(), "c".to_owned()]).unwrap();
        let stacked = Tensor::concat_rows(&[&a, &b]).unwrap();
        assert_eq!(stacked.datatype(), DataType::Bytes);
        assert_eq!(stacked.split_rows(&[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn tensors_of_different_inner_shape_or_type_do_not_stack() {
        let a = f32s("x", vec![1, 2], &[1.0, 2.0]);
        let wide = f32s("x", vec![1, 3], &[1.0, 2.0, 3.0]);
        let ints = Tensor::new("x", vec![1, 2], vec![1_i64, 2]).unwrap();
        let scalar = f32s("x", vec![], &[1.0]);
        assert!(Tensor::concat_rows(&[&a, &wide]).is_err());
        assert!(Tensor::concat_rows(&[&a, &ints]).is_err());
        assert!(Tensor::concat_rows(&[&scalar]).is_err());
        assert!(Tensor::concat_rows(&[]).is_err());
    }

    #[test]
    fn splitting_into_pieces_that_do_not_add_up_is_refused() {
        let a = f32s("x", vec![3, 1], &[1.0, 2.0, 3.0]);
        assert!(a.split_rows(&[1, 1]).is_err());
        assert!(a.split_rows(&[2, 2]).is_err());
        assert!(a.split_rows(&[usize::MAX, 4]).is_err());
        assert!(f32s("x", vec![], &[1.0]).split_rows(&[1]).is_err());
    }

    #[test]
    fn zeros_exist_for_every_datatype() {
        for dt in ALL_DATATYPES {
            let zeros = Tensor::zeros("z", dt, vec![2, 3]).unwrap();
            assert_eq!(zeros.datatype(), dt);
            assert_eq!(zeros.data().len(), 6);
        }
    }
}
