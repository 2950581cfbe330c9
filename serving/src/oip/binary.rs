//! The binary tensor data extension (KServe v2 / Triton): tensor bytes after the JSON.
//!
//! A request in this form has an `Inference-Header-Content-Length: N` header; its first `N`
//! bytes are the JSON document, and every input whose `parameters` hold `binary_data_size`
//! (and no `data`) takes that many bytes from what follows, in the order the inputs are listed.
//! Elements are little-endian and row-major; `BOOL` is one byte (0 or 1); each `BYTES` element
//! is a 4-byte little-endian length and that many bytes. A response does the same for the
//! outputs asked for with `parameters.binary_data: true` (or all of them with the request
//! parameter `binary_data_output: true`).
//!
//! Pure functions: the sizes are checked against the shape before a byte is copied, and every
//! mismatch is an [`OipError`] naming the input and the numbers.

use super::error::OipError;
use super::validation::Header;
use crate::runtime::{DataType, TensorData};

/// The tensor bytes after the JSON header, handed out input by input.
#[derive(Debug)]
pub(super) struct BinaryPart<'b> {
    /// `None` when the request had no `Inference-Header-Content-Length` (plain JSON).
    bytes: Option<&'b [u8]>,
    taken: usize,
}

impl<'b> BinaryPart<'b> {
    pub(super) fn none() -> Self {
        BinaryPart {
            bytes: None,
            taken: 0,
        }
    }

    pub(super) fn new(bytes: &'b [u8]) -> Self {
        BinaryPart {
            bytes: Some(bytes),
            taken: 0,
        }
    }

    /// The next `size` bytes, for input `name`.
    pub(super) fn take(&mut self, name: &str, size: usize) -> Result<&'b [u8], OipError> {
        let Some(bytes) = self.bytes else {
            return Err(OipError::input_error(
                name,
                format!(
                    "`binary_data_size` is {size} but the request has no \
                     `Inference-Header-Content-Length` header saying where the JSON ends and \
                     the binary data begins"
                ),
            ));
        };
        let left = bytes.len() - self.taken;
        if size > left {
            return Err(OipError::input_error(
                name,
                format!(
                    "`binary_data_size` is {size} but only {left} bytes of binary data are left \
                     in the body (the body is truncated, or an earlier input's size is wrong)"
                ),
            ));
        }
        let out = &bytes[self.taken..self.taken + size];
        self.taken += size;
        Ok(out)
    }

    /// Refuses bytes no input claimed.
    pub(super) fn finish(&self) -> Result<(), OipError> {
        match self.bytes {
            Some(bytes) if self.taken < bytes.len() => Err(OipError::Malformed(format!(
                "malformed request: {} bytes of binary data follow the JSON header, but the \
                 inputs' `binary_data_size` add up to {}",
                bytes.len(),
                self.taken
            ))),
            _ => Ok(()),
        }
    }
}

/// Reads an input's `parameters.binary_data_size`, if it has one.
///
/// # Errors
/// When it is there but not a non-negative integer.
pub(super) fn declared_size(
    name: &str,
    parameters: Option<&super::Parameters>,
) -> Result<Option<usize>, OipError> {
    let Some(value) = parameters.and_then(|p| p.get("binary_data_size")) else {
        return Ok(None);
    };
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            OipError::input_error(
                name,
                format!("`binary_data_size` must be a non-negative integer, got {value}"),
            )
        })
}

/// Bytes per element of a fixed-size datatype; `None` for `BYTES`.
fn element_size(datatype: DataType) -> Option<usize> {
    Some(match datatype {
        DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
        DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
        DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
        DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        _ => return None,
    })
}

/// Decodes one input's binary data against its checked header. `source` names where the bytes
/// came from in messages (`` `binary_data_size` ``, `raw_input_contents[0]`).
///
/// # Errors
/// A size that does not match the shape, a `BOOL` byte other than 0 or 1, `BYTES` elements
/// that overrun the data, are too few or too many, or are not UTF-8.
pub(super) fn decode(
    name: &str,
    header: &Header,
    bytes: &[u8],
    source: &str,
) -> Result<TensorData, OipError> {
    let fail = |reason: String| OipError::input_error(name, reason);
    let Some(size) = element_size(header.datatype) else {
        return decode_bytes(name, header, bytes);
    };
    let expected = header.len.checked_mul(size).ok_or_else(|| {
        fail(format!(
            "shape {:?} holds more elements than memory can address",
            header.shape
        ))
    })?;
    if bytes.len() != expected {
        return Err(fail(format!(
            "{source} is {} bytes, but shape {:?} of {} needs {} elements × {size} \
             bytes = {expected}",
            bytes.len(),
            header.shape,
            header.datatype,
            header.len
        )));
    }
    macro_rules! le {
        ($variant:ident, $ty:ty) => {
            TensorData::$variant(
                bytes
                    .chunks_exact(size)
                    .map(|c| <$ty>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        };
    }
    Ok(match header.datatype {
        DataType::Bool => {
            if let Some(at) = bytes.iter().position(|b| *b > 1) {
                return Err(fail(format!(
                    "BOOL element {at} is the byte {}; BOOL elements are one byte, 0 or 1",
                    bytes[at]
                )));
            }
            TensorData::Bool(bytes.iter().map(|b| *b == 1).collect())
        }
        DataType::Uint8 => TensorData::U8(bytes.to_vec()),
        DataType::Int8 => TensorData::I8(bytes.iter().map(|b| i8::from_le_bytes([*b])).collect()),
        DataType::Uint16 => le!(U16, u16),
        DataType::Int16 => le!(I16, i16),
        DataType::Uint32 => le!(U32, u32),
        DataType::Int32 => le!(I32, i32),
        DataType::Fp32 => le!(F32, f32),
        DataType::Uint64 => le!(U64, u64),
        DataType::Int64 => le!(I64, i64),
        DataType::Fp64 => le!(F64, f64),
        DataType::Fp16 => le!(F16, half::f16),
        DataType::Bf16 => le!(BF16, half::bf16),
        other => {
            return Err(fail(format!(
                "{other} tensors are not supported by Ferry yet"
            )));
        }
    })
}

/// One `BYTES` element as the text an ONNX string tensor holds.
///
/// # Errors
/// When it is not UTF-8 or holds a NUL character.
pub(super) fn text_element(name: &str, index: usize, element: Vec<u8>) -> Result<String, OipError> {
    let fail = |reason: String| OipError::input_error(name, reason);
    let text = String::from_utf8(element).map_err(|e| {
        fail(format!(
            "BYTES element {index} is not UTF-8 ({}); Ferry serves ONNX string tensors, which \
             hold text",
            e.utf8_error()
        ))
    })?;
    if text.contains('\0') {
        return Err(fail(format!(
            "BYTES element {index} contains a NUL character, which ONNX Runtime strings cannot \
             hold"
        )));
    }
    Ok(text)
}

/// `BYTES`: `header.len` elements, each a 4-byte little-endian length and its bytes.
fn decode_bytes(name: &str, header: &Header, mut bytes: &[u8]) -> Result<TensorData, OipError> {
    let fail = |reason: String| OipError::input_error(name, reason);
    // Each element costs at least its 4-byte length: a shape claiming more is refused before
    // anything is allocated for it.
    if header.len > bytes.len() / 4 {
        return Err(fail(format!(
            "shape {:?} holds {} BYTES elements, but {} bytes of binary data can hold at most {}",
            header.shape,
            header.len,
            bytes.len(),
            bytes.len() / 4
        )));
    }
    let mut out = Vec::with_capacity(header.len);
    for index in 0..header.len {
        let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(fail(format!(
                "BYTES element {index}: the data ends inside its 4-byte length"
            )));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if length > rest.len() {
            return Err(fail(format!(
                "BYTES element {index} claims {length} bytes, but only {} are left",
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(length);
        out.push(text_element(name, index, element.to_vec())?);
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err(fail(format!(
            "{} bytes of binary data are left after the {} BYTES elements of shape {:?}",
            bytes.len(),
            header.len,
            header.shape
        )));
    }
    Ok(TensorData::String(out))
}

/// Appends `data` in the extension's layout; returns the bytes written.
pub(super) fn encode(data: &TensorData, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    macro_rules! le {
        ($values:expr) => {
            for v in $values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => le!(v),
        TensorData::U16(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::F16(v) => le!(v),
        TensorData::BF16(v) => le!(v),
        TensorData::String(v) => {
            for s in v {
                // An element over 4 GiB cannot be described; no ONNX string gets near that.
                let length = u32::try_from(s.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(&s.as_bytes()[..length as usize]);
            }
        }
    }
    out.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(datatype: DataType, shape: Vec<usize>) -> Header {
        let len = shape.iter().product();
        Header {
            index: 0,
            datatype,
            shape,
            len,
        }
    }

    #[test]
    fn every_fixed_size_type_reads_back_what_was_written() {
        let cases = [
            (DataType::Bool, TensorData::Bool(vec![true, false, true])),
            (DataType::Uint8, TensorData::U8(vec![0, 7, 255])),
            (DataType::Int8, TensorData::I8(vec![-128, 0, 127])),
            (DataType::Uint16, TensorData::U16(vec![1, 2, 65535])),
            (DataType::Int16, TensorData::I16(vec![-3, 0, 3])),
            (DataType::Uint32, TensorData::U32(vec![1, 2, u32::MAX])),
            (DataType::Int32, TensorData::I32(vec![-1, 0, i32::MAX])),
            (DataType::Uint64, TensorData::U64(vec![1, 2, u64::MAX])),
            (DataType::Int64, TensorData::I64(vec![i64::MIN, 0, 9])),
            (DataType::Fp32, TensorData::F32(vec![0.5, -1.25, f32::MAX])),
            (DataType::Fp64, TensorData::F64(vec![0.1, -2.0, f64::MIN])),
            (
                DataType::Fp16,
                TensorData::F16([0.5, -2.0, 65504.0].map(half::f16::from_f32).to_vec()),
            ),
            (
                DataType::Bf16,
                TensorData::BF16([0.5, -2.0, 1e38].map(half::bf16::from_f32).to_vec()),
            ),
        ];
        for (datatype, data) in cases {
            let mut bytes = Vec::new();
            let written = encode(&data, &mut bytes);
            assert_eq!(written, bytes.len());
            assert_eq!(
                decode(
                    "x",
                    &header(datatype, vec![3]),
                    &bytes,
                    "`binary_data_size`"
                )
                .unwrap(),
                data
            );
        }
    }

    #[test]
    fn fp32_is_little_endian_row_major() {
        let bytes = [1.0_f32, 2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<_>>();
        assert_eq!(bytes[..4], [0, 0, 0x80, 0x3f]);
        assert_eq!(
            decode(
                "x",
                &header(DataType::Fp32, vec![1, 2]),
                &bytes,
                "`binary_data_size`"
            )
            .unwrap(),
            TensorData::F32(vec![1.0, 2.0])
        );
    }

    #[test]
    fn a_size_that_disagrees_with_the_shape_names_both() {
        let err = decode(
            "input",
            &header(DataType::Fp32, vec![2, 32]),
            &[0; 128],
            "`binary_data_size`",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"input\""), "{err}");
        assert!(err.contains("128 bytes"), "{err}");
        assert!(err.contains("64 elements × 4 bytes = 256"), "{err}");
    }

    #[test]
    fn bytes_elements_are_length_prefixed_and_checked() {
        let data = TensorData::String(vec!["héllo".into(), String::new(), "x".into()]);
        let mut bytes = Vec::new();
        encode(&data, &mut bytes);
        assert_eq!(bytes[..4], 6_u32.to_le_bytes());
        assert_eq!(
            decode(
                "s",
                &header(DataType::Bytes, vec![3]),
                &bytes,
                "`binary_data_size`"
            )
            .unwrap(),
            data
        );
        let cases: [(&[u8], usize, &str); 6] = [
            (&[2, 0, 0, 0, b'a', 0], 1, "NUL character"),
            (&[5, 0, 0, 0, b'a'], 1, "claims 5 bytes, but only 1"),
            (&[1, 0, 0, 0, b'a', 9], 1, "1 bytes of binary data are left"),
            (&[1, 0, 0, 0, 0xff], 1, "not UTF-8"),
            (&[1, 0, 0, 0, b'a'], 2, "can hold at most 1"),
            (
                &[1, 0, 0, 0, b'a', 0, 0, 0],
                2,
                "ends inside its 4-byte length",
            ),
        ];
        for (bytes, len, says) in cases {
            let err = decode(
                "s",
                &header(DataType::Bytes, vec![len]),
                bytes,
                "`binary_data_size`",
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(says), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn bool_bytes_other_than_0_and_1_are_refused() {
        let err = decode(
            "b",
            &header(DataType::Bool, vec![2]),
            &[1, 2],
            "`binary_data_size`",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("element 1 is the byte 2"), "{err}");
    }

    #[test]
    fn the_part_hands_out_bytes_in_order_and_refuses_overruns_and_leftovers() {
        let body = [1_u8, 2, 3, 4, 5];
        let mut part = BinaryPart::new(&body);
        assert_eq!(part.take("a", 2).unwrap(), [1, 2]);
        let err = part.take("b", 4).unwrap_err().to_string();
        assert!(err.contains("only 3 bytes"), "{err}");
        assert_eq!(part.take("b", 2).unwrap(), [3, 4]);
        let err = part.finish().unwrap_err().to_string();
        assert!(
            err.contains("5 bytes of binary data") && err.contains("add up to 4"),
            "{err}"
        );
        let err = BinaryPart::none().take("a", 1).unwrap_err().to_string();
        assert!(err.contains("Inference-Header-Content-Length"), "{err}");
    }
}
