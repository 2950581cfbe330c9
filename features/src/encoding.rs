//! One entity's row of a feature view as bytes, and the CSV cells it is parsed from.

use ferry_api::features::FeatureDtype;

/// The first byte of every row: the layout below.
const FORMAT: u8 = 1;

/// Longest entity key value, in bytes (longer ones are refused: they are ids, not documents).
pub const MAX_ENTITY_LEN: usize = 256;

/// One feature's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// FP32 and FP64.
    Float(f64),
    /// INT32 and INT64.
    Int(i64),
    /// BOOL.
    Bool(bool),
}

/// A cell that is not a value of its feature's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct CellError {
    /// The cell, cut to 64 characters.
    pub text: String,
    /// What the type takes.
    pub expected: &'static str,
}

/// Bytes that are not a row of the view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Another format byte, or none.
    #[error("not a row of format {FORMAT}")]
    Format,
    /// Fewer or more bytes than the view's types need.
    #[error("the row holds {got} bytes, the view's features need {need}")]
    Length {
        /// Bytes found.
        got: usize,
        /// Bytes the bitmap and the present features take.
        need: usize,
    },
}

/// The Redis key of `entity`'s row in version `version` of view `view`.
pub fn row_key(view: &str, version: i64, entity: &str) -> String {
    format!("ferry:fv:{view}:{version}:{entity}")
}

/// Reads a CSV cell as a value of `dtype`; an empty cell is a missing value (`None`).
///
/// # Errors
/// [`CellError`] naming what the type takes.
pub fn parse_cell(dtype: FeatureDtype, text: &str) -> Result<Option<Value>, CellError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |expected| CellError {
        text: text.chars().take(64).collect(),
        expected,
    };
    match dtype {
        FeatureDtype::Fp32 | FeatureDtype::Fp64 => text
            .parse::<f64>()
            .map(|v| Some(Value::Float(v)))
            .map_err(|_| bad("a number")),
        FeatureDtype::Int32 => text
            .parse::<i32>()
            .map(|v| Some(Value::Int(i64::from(v))))
            .map_err(|_| bad("a 32-bit integer")),
        FeatureDtype::Int64 => text
            .parse::<i64>()
            .map(|v| Some(Value::Int(v)))
            .map_err(|_| bad("a 64-bit integer")),
        FeatureDtype::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(Value::Bool(true))),
            "false" | "0" => Ok(Some(Value::Bool(false))),
            _ => Err(bad("a boolean (true, false, 1, 0)")),
        },
    }
}

/// A value as the number the skew check compares ([`ferry_api::skew`]): rounded to its
/// feature's type the way the online store keeps it (FP32 to the nearest `f32`), BOOL as 0 or 1.
pub fn as_number(dtype: FeatureDtype, value: Option<Value>) -> Option<f64> {
    let value = value?;
    let f = match value {
        Value::Float(f) => f,
        Value::Int(n) => n as f64,
        Value::Bool(b) => f64::from(u8::from(b)),
    };
    Some(match dtype {
        FeatureDtype::Fp32 => f64::from(f as f32),
        FeatureDtype::Fp64 => f,
        FeatureDtype::Int32 => f64::from(f as i32),
        FeatureDtype::Int64 => (f as i64) as f64,
        FeatureDtype::Bool => f64::from(u8::from(f != 0.0)),
    })
}

fn width(dtype: FeatureDtype) -> usize {
    match dtype {
        FeatureDtype::Fp32 | FeatureDtype::Int32 => 4,
        FeatureDtype::Fp64 | FeatureDtype::Int64 => 8,
        FeatureDtype::Bool => 1,
    }
}

/// A row's bytes: values in the view's order, `None` for a missing one. A value of another
/// type than its feature's is converted (`Int` into a float feature, a float into an integer
/// feature truncated): [`parse_cell`] never makes one.
pub fn encode(dtypes: &[FeatureDtype], values: &[Option<Value>]) -> Vec<u8> {
    let bitmap = dtypes.len().div_ceil(8);
    let mut out = Vec::with_capacity(1 + bitmap + dtypes.len() * 8);
    out.push(FORMAT);
    out.resize(1 + bitmap, 0);
    for (i, dtype) in dtypes.iter().enumerate() {
        let Some(value) = values.get(i).copied().flatten() else {
            out[1 + i / 8] |= 1 << (i % 8);
            continue;
        };
        let (f, n, b) = match value {
            Value::Float(f) => (f, f as i64, f != 0.0),
            Value::Int(n) => (n as f64, n, n != 0),
            Value::Bool(b) => (f64::from(u8::from(b)), i64::from(b), b),
        };
        match dtype {
            FeatureDtype::Fp32 => out.extend_from_slice(&(f as f32).to_le_bytes()),
            FeatureDtype::Fp64 => out.extend_from_slice(&f.to_le_bytes()),
            FeatureDtype::Int32 => out.extend_from_slice(&(n as i32).to_le_bytes()),
            FeatureDtype::Int64 => out.extend_from_slice(&n.to_le_bytes()),
            FeatureDtype::Bool => out.push(u8::from(b)),
        }
    }
    out
}

/// The values of a row [`encode`]d for the same `dtypes`.
///
/// # Errors
/// [`DecodeError`] for bytes of another format or length.
pub fn decode(dtypes: &[FeatureDtype], bytes: &[u8]) -> Result<Vec<Option<Value>>, DecodeError> {
    if bytes.first() != Some(&FORMAT) {
        return Err(DecodeError::Format);
    }
    let bitmap = dtypes.len().div_ceil(8);
    let missing = |i: usize| {
        bytes
            .get(1 + i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    };
    let need = 1
        + bitmap
        + dtypes
            .iter()
            .enumerate()
            .filter(|(i, _)| bytes.len() > bitmap && !missing(*i))
            .map(|(_, d)| width(*d))
            .sum::<usize>();
    if bytes.len() != need {
        return Err(DecodeError::Length {
            got: bytes.len(),
            need,
        });
    }
    let mut at = 1 + bitmap;
    let mut out = Vec::with_capacity(dtypes.len());
    for (i, dtype) in dtypes.iter().enumerate() {
        if missing(i) {
            out.push(None);
            continue;
        }
        let w = width(*dtype);
        let b = &bytes[at..at + w];
        at += w;
        let mut four = [0u8; 4];
        let mut eight = [0u8; 8];
        out.push(Some(match dtype {
            FeatureDtype::Fp32 => {
                four.copy_from_slice(b);
                Value::Float(f64::from(f32::from_le_bytes(four)))
            }
            FeatureDtype::Fp64 => {
                eight.copy_from_slice(b);
                Value::Float(f64::from_le_bytes(eight))
            }
            FeatureDtype::Int32 => {
                four.copy_from_slice(b);
                Value::Int(i64::from(i32::from_le_bytes(four)))
            }
            FeatureDtype::Int64 => {
                eight.copy_from_slice(b);
                Value::Int(i64::from_le_bytes(eight))
            }
            FeatureDtype::Bool => Value::Bool(b[0] != 0),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use FeatureDtype::{Bool, Fp32, Fp64, Int32, Int64};

    #[test]
    fn a_row_round_trips_with_missing_values_and_every_type() {
        let dtypes = [Fp32, Int64, Bool, Fp64, Int32, Fp32, Fp32, Fp32, Int64];
        let values = vec![
            Some(Value::Float(1.5)),
            Some(Value::Int(-7)),
            Some(Value::Bool(true)),
            None,
            Some(Value::Int(42)),
            Some(Value::Float(f64::from(f32::MAX))),
            None,
            Some(Value::Float(0.0)),
            Some(Value::Int(i64::MAX)),
        ];
        let bytes = encode(&dtypes, &values);
        // Format byte, two bitmap bytes (9 features), then 4+8+1+4+4+4+8 bytes of values.
        assert_eq!(bytes.len(), 1 + 2 + 33);
        assert_eq!(decode(&dtypes, &bytes).unwrap(), values);
    }

    #[test]
    fn rows_of_another_format_or_length_are_refused() {
        let dtypes = [Fp32, Int64];
        let bytes = encode(&dtypes, &[Some(Value::Float(1.0)), Some(Value::Int(2))]);
        assert_eq!(decode(&dtypes, &[]), Err(DecodeError::Format));
        assert_eq!(decode(&dtypes, &[9, 0]), Err(DecodeError::Format));
        assert!(matches!(
            decode(&dtypes, &bytes[..bytes.len() - 1]),
            Err(DecodeError::Length { .. })
        ));
        assert!(matches!(
            decode(&[Fp32, Int64, Bool], &bytes),
            Err(DecodeError::Length { .. })
        ));
    }

    #[test]
    fn cells_are_read_by_their_feature_type() {
        assert_eq!(parse_cell(Fp32, " 2.5 "), Ok(Some(Value::Float(2.5))));
        assert_eq!(parse_cell(Fp64, ""), Ok(None));
        assert_eq!(parse_cell(Int64, "-3"), Ok(Some(Value::Int(-3))));
        assert_eq!(parse_cell(Bool, "TRUE"), Ok(Some(Value::Bool(true))));
        assert_eq!(parse_cell(Bool, "0"), Ok(Some(Value::Bool(false))));
        let e = parse_cell(Int32, "3000000000").unwrap_err();
        assert_eq!(e.to_string(), "`3000000000` is not a 32-bit integer");
        assert!(parse_cell(Int64, "1.5").is_err());
        assert!(parse_cell(Bool, "yes").is_err());
        assert_eq!(row_key("customers", 2, "c-17"), "ferry:fv:customers:2:c-17");
        // The skew check compares values as the store keeps them.
        assert_eq!(
            as_number(Fp32, Some(Value::Float(0.1))),
            Some(f64::from(0.1f32))
        );
        assert_eq!(as_number(Fp64, Some(Value::Float(0.1))), Some(0.1));
        assert_eq!(as_number(Bool, Some(Value::Bool(true))), Some(1.0));
        assert_eq!(as_number(Int64, None), None);
    }
}
