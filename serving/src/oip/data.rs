//! A tensor's `data`, decoded straight into a vector of its element type.
//!
//! The datatype and shape are checked first ([`Header`]), so each JSON value is converted as it
//! is read: no `serde_json::Value` tree, no second pass. `data` may be flat (`[1, 2, 3, 4]`) or
//! nested exactly like the shape (`[[1, 2], [3, 4]]` for `[2, 2]`), row-major either way; which
//! one is decided by the first entry. Arrays cannot nest deeper than the shape's rank, which
//! [`MAX_RANK`](super::MAX_RANK) bounds, so recursion stays shallow whatever the body holds.

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::error::OipError;
use super::validation::Header;
use crate::runtime::{DataType, TensorData};

/// Decodes one input's `data` against its checked header. Failures of the data itself (wrong
/// element types, out-of-range numbers, counts that disagree with the shape) are written to
/// `failure` with their full explanation; the serde error returned alongside only stops parsing.
pub(super) struct DataSeed<'a> {
    /// The input's name, for messages.
    pub input: &'a str,
    pub header: &'a Header,
    /// Most elements the JSON text can hold (about half its length in bytes): the vector is
    /// reserved up to this, never more, so a shape claiming billions of elements reserves only
    /// what the body could back.
    pub capacity: usize,
    pub failure: &'a mut Option<OipError>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = TensorData;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<TensorData, D::Error> {
        let DataSeed {
            input,
            header,
            capacity,
            failure,
        } = self;
        let mut fill = Fill {
            input,
            shape: &header.shape,
            len: header.len,
            layout: Layout::Unknown,
            path: Vec::with_capacity(header.shape.len() + 1),
            failure,
        };
        let capacity = header.len.min(capacity);
        macro_rules! decode {
            ($variant:ident) => {{
                let mut values = Vec::with_capacity(capacity);
                deserializer.deserialize_any(Node {
                    fill: &mut fill,
                    values: &mut values,
                    depth: 0,
                })?;
                Ok(TensorData::$variant(values))
            }};
        }
        match header.datatype {
            DataType::Bool => decode!(Bool),
            DataType::Uint8 => decode!(U8),
            DataType::Uint16 => decode!(U16),
            DataType::Uint32 => decode!(U32),
            DataType::Uint64 => decode!(U64),
            DataType::Int8 => decode!(I8),
            DataType::Int16 => decode!(I16),
            DataType::Int32 => decode!(I32),
            DataType::Int64 => decode!(I64),
            DataType::Fp32 => decode!(F32),
            DataType::Fp64 => decode!(F64),
            DataType::Fp16 => decode!(F16),
            DataType::Bf16 => decode!(BF16),
            DataType::Bytes => decode!(String),
        }
    }
}

/// Decodes `data` that came before the input's datatype or shape and was kept as raw JSON.
pub(super) fn decode_raw(
    raw: &RawValue,
    input: &str,
    header: &Header,
) -> Result<TensorData, OipError> {
    let text = raw.get();
    let mut failure = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = DataSeed {
        input,
        header,
        capacity: text.len() / 2 + 1,
        failure: &mut failure,
    };
    seed.deserialize(&mut deserializer).map_err(|e| {
        failure.unwrap_or_else(|| {
            // Positions would count from the start of `data`, not of the body: leave them out.
            let message = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            OipError::input_error(input, format!("`data`: {message}"))
        })
    })
}

/// Whether `data` is flat or nested, decided by its first entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Unknown,
    Flat,
    Nested,
}

/// What all levels of one `data` array share.
struct Fill<'a> {
    input: &'a str,
    shape: &'a [usize],
    /// Elements the shape holds.
    len: usize,
    layout: Layout,
    /// Index of the entry being read at each depth, for messages (`data[1][0]`).
    path: Vec<usize>,
    failure: &'a mut Option<OipError>,
}

impl Fill<'_> {
    /// Records why the data is refused (the first reason wins) and returns the error that
    /// unwinds the parser.
    fn refuse<E: de::Error>(&mut self, reason: String) -> E {
        if self.failure.is_none() {
            *self.failure = Some(OipError::input_error(self.input, reason));
        }
        E::custom("refused")
    }

    /// Entries the array at `depth` must hold, once the layout is known.
    fn entries(&self, depth: usize) -> Option<usize> {
        match self.layout {
            Layout::Unknown => None,
            Layout::Flat => (depth == 0).then_some(self.len),
            Layout::Nested => self.shape.get(depth).copied(),
        }
    }

    /// `data[i][j]…` for the value at `depth`.
    fn at(&self, depth: usize) -> String {
        let mut place = "data".to_owned();
        for index in self.path.iter().take(depth) {
            // Writing to a String cannot fail.
            let _ = write!(place, "[{index}]");
        }
        place
    }

    fn count_mismatch(&self, depth: usize, count: usize, more: bool) -> String {
        let count = if more {
            format!("more than {count}")
        } else {
            count.to_string()
        };
        match self.layout {
            Layout::Nested => format!(
                "{} has {count} entries, but dim {depth} of shape {:?} is {}",
                self.at(depth),
                self.shape,
                self.shape.get(depth).copied().unwrap_or(0)
            ),
            Layout::Flat | Layout::Unknown => format!(
                "shape {:?} holds {} elements, but data has {count}",
                self.shape, self.len
            ),
        }
    }
}

/// One value inside `data` (or `data` itself at depth 0): an element or an array of them.
struct Node<'f, 'a, T> {
    fill: &'f mut Fill<'a>,
    values: &'f mut Vec<T>,
    depth: usize,
}

impl<'de, T: Element> DeserializeSeed<'de> for Node<'_, '_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if let Some(parent) = self.depth.checked_sub(1) {
            let index = self.fill.path.get(parent).copied().unwrap_or(0);
            // Refuse one entry too many before reading it: a flat array far longer than its
            // shape stops here instead of filling memory.
            if let Some(limit) = self.fill.entries(parent)
                && index >= limit
            {
                let reason = self.fill.count_mismatch(parent, limit, true);
                return Err(self.fill.refuse(reason));
            }
        }
        deserializer.deserialize_any(self)
    }
}

impl<T: Element> Node<'_, '_, T> {
    fn leaf<E: de::Error>(self, value: Scalar<'_>) -> Result<(), E> {
        let fill = self.fill;
        if self.depth == 0 {
            return Err(fill.refuse(format!("`data` must be an array, got {}", value.kind())));
        }
        match fill.layout {
            Layout::Unknown => fill.layout = Layout::Flat,
            Layout::Nested if self.depth < fill.shape.len() => {
                let reason = format!(
                    "{} is {}, but shape {:?} calls for an array of {} there",
                    fill.at(self.depth),
                    value.kind(),
                    fill.shape,
                    fill.shape.get(self.depth).copied().unwrap_or(0)
                );
                return Err(fill.refuse(reason));
            }
            Layout::Nested | Layout::Flat => {}
        }
        match T::convert(value) {
            Ok(element) => {
                self.values.push(element);
                Ok(())
            }
            Err(rejected) => {
                let reason = rejected.explain::<T>(self.values.len());
                Err(fill.refuse(reason))
            }
        }
    }

    fn array<'de, A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Node {
            fill,
            values,
            depth,
        } = self;
        if depth > 0 {
            match fill.layout {
                Layout::Unknown => fill.layout = Layout::Nested,
                Layout::Flat => {
                    let reason = format!(
                        "{} is an array, but data[0] is not: send data flat, or nested like the \
                         shape {:?}",
                        fill.at(depth),
                        fill.shape
                    );
                    return Err(fill.refuse(reason));
                }
                Layout::Nested => {}
            }
            if depth >= fill.shape.len() {
                let reason = format!(
                    "{} nests deeper than the shape {:?} (rank {})",
                    fill.at(depth),
                    fill.shape,
                    fill.shape.len()
                );
                return Err(fill.refuse(reason));
            }
        }
        fill.path.truncate(depth);
        fill.path.push(0);
        let mut count = 0_usize;
        loop {
            if let Some(index) = fill.path.get_mut(depth) {
                *index = count;
            }
            let node = Node {
                fill: &mut *fill,
                values: &mut *values,
                depth: depth + 1,
            };
            if seq.next_element_seed(node)?.is_none() {
                break;
            }
            count += 1;
        }
        // An empty `data` has no first entry to tell its layout; it is flat: no elements.
        let expected = fill.entries(depth).unwrap_or(fill.len);
        if count != expected {
            let reason = fill.count_mismatch(depth, count, false);
            return Err(fill.refuse(reason));
        }
        Ok(())
    }
}

impl<'de, T: Element> Visitor<'de> for Node<'_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor element or an array of them")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Scalar::Signed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Scalar::Unsigned(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Scalar::Str(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.leaf(Scalar::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf(Scalar::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.array(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        let reason = if self.depth == 0 {
            "`data` must be an array, got an object".to_owned()
        } else {
            format!(
                "element {} is an object; {} data must be {}",
                self.values.len(),
                T::DATATYPE,
                T::EXPECTED
            )
        };
        Err(self.fill.refuse(reason))
    }
}

/// A JSON scalar as the parser hands it over.
enum Scalar<'a> {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'a str),
    String(String),
    Null,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Bool(_) => "a boolean",
            Scalar::Unsigned(_) | Scalar::Signed(_) | Scalar::Float(_) => "a number",
            Scalar::Str(_) | Scalar::String(_) => "a string",
            Scalar::Null => "null",
        }
    }
}

/// Why a JSON scalar is not an element of the tensor's type.
enum Rejected {
    /// The wrong kind of JSON value (`"a string"`…).
    Kind(&'static str),
    /// A number outside the type's range: the number and the range.
    OutOfRange(String, String),
    /// A number with a fraction where an integer is needed.
    NotInteger(f64),
    /// An integral number written as a float beyond 2^53, where f64 cannot hold every integer.
    Inexact(f64),
    /// A string with a NUL character, which ONNX Runtime's string tensors cannot carry.
    Nul,
}

impl Rejected {
    fn explain<T: Element>(self, index: usize) -> String {
        let datatype = T::DATATYPE;
        match self {
            Rejected::Kind(kind) => {
                format!(
                    "element {index} is {kind}; {datatype} data must be {}",
                    T::EXPECTED
                )
            }
            Rejected::OutOfRange(value, range) => {
                format!("element {index} is {value}, out of range for {datatype} ({range})")
            }
            Rejected::NotInteger(value) => {
                format!("element {index} is {value:?}, not an integer as {datatype} needs")
            }
            Rejected::Inexact(value) => format!(
                "element {index} is {value:?}; write integers beyond 2^53 without a fraction or \
                 exponent"
            ),
            Rejected::Nul => format!(
                "element {index} contains a NUL character, which ONNX Runtime strings cannot hold"
            ),
        }
    }
}

/// A tensor element type and how JSON values convert into it.
trait Element: Sized {
    const DATATYPE: DataType;
    /// What its JSON values look like, for messages.
    const EXPECTED: &'static str;
    fn convert(value: Scalar<'_>) -> Result<Self, Rejected>;
}

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    const EXPECTED: &'static str = "true or false";

    fn convert(value: Scalar<'_>) -> Result<Self, Rejected> {
        match value {
            Scalar::Bool(v) => Ok(v),
            other => Err(Rejected::Kind(other.kind())),
        }
    }
}

impl Element for String {
    const DATATYPE: DataType = DataType::Bytes;
    const EXPECTED: &'static str = "strings";

    fn convert(value: Scalar<'_>) -> Result<Self, Rejected> {
        let text = match value {
            Scalar::Str(v) => v.to_owned(),
            Scalar::String(v) => v,
            other => return Err(Rejected::Kind(other.kind())),
        };
        if text.contains('\0') {
            return Err(Rejected::Nul);
        }
        Ok(text)
    }
}

/// Largest magnitude below which every integer has an exact f64.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// An integral f64 (`3.0`, `1e3`) as an i64; JavaScript and numpy write integers that way.
fn integral(value: f64) -> Result<i64, Rejected> {
    if value.fract() != 0.0 {
        return Err(Rejected::NotInteger(value));
    }
    if value.abs() > EXACT_INTEGERS {
        return Err(Rejected::Inexact(value));
    }
    // Integral and within ±2^53, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    Ok(value as i64)
}

macro_rules! integer_element {
    ($($ty:ty => $datatype:ident),+ $(,)?) => {$(
        impl Element for $ty {
            const DATATYPE: DataType = DataType::$datatype;
            const EXPECTED: &'static str = "integers";

            fn convert(value: Scalar<'_>) -> Result<Self, Rejected> {
                let out_of_range =
                    |shown: String| Rejected::OutOfRange(shown, format!("{}..={}", <$ty>::MIN, <$ty>::MAX));
                match value {
                    Scalar::Unsigned(v) => <$ty>::try_from(v).map_err(|_| out_of_range(v.to_string())),
                    Scalar::Signed(v) => <$ty>::try_from(v).map_err(|_| out_of_range(v.to_string())),
                    Scalar::Float(v) => {
                        let exact = integral(v)?;
                        <$ty>::try_from(exact).map_err(|_| out_of_range(format!("{v:?}")))
                    }
                    other => Err(Rejected::Kind(other.kind())),
                }
            }
        }
    )+};
}

integer_element!(
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
);

// JSON has no NaN; `null` reads as NaN in float data, the mirror of how responses write
// non-finite floats (serde_json writes them as `null`).
impl Element for f32 {
    const DATATYPE: DataType = DataType::Fp32;
    const EXPECTED: &'static str = "numbers";

    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    fn convert(value: Scalar<'_>) -> Result<Self, Rejected> {
        match value {
            // Rounding to the nearest f32 is what parsing a float means.
            Scalar::Float(v) => {
                let narrowed = v as f32;
                if narrowed.is_infinite() {
                    return Err(Rejected::OutOfRange(
                        format!("{v:?}"),
                        format!("±{:?}", f32::MAX),
                    ));
                }
                Ok(narrowed)
            }
            Scalar::Unsigned(v) => Ok(v as f32),
            Scalar::Signed(v) => Ok(v as f32),
            Scalar::Null => Ok(f32::NAN),
            other => Err(Rejected::Kind(other.kind())),
        }
    }
}

// Half precision from JSON numbers: rounded to the nearest representable value, like f32;
// beyond the type's largest finite value is out of range (FP16's is only 65504).
macro_rules! half_element {
    ($($ty:ty => $datatype:ident),+ $(,)?) => {$(
        impl Element for $ty {
            const DATATYPE: DataType = DataType::$datatype;
            const EXPECTED: &'static str = "numbers";

            #[allow(clippy::cast_precision_loss)]
            fn convert(value: Scalar<'_>) -> Result<Self, Rejected> {
                let v = match value {
                    Scalar::Float(v) => v,
                    Scalar::Unsigned(v) => v as f64,
                    Scalar::Signed(v) => v as f64,
                    Scalar::Null => return Ok(<$ty>::NAN),
                    other => return Err(Rejected::Kind(other.kind())),
                };
                let narrowed = <$ty>::from_f64(v);
                if narrowed.is_infinite() {
                    return Err(Rejected::OutOfRange(
                        format!("{v:?}"),
                        format!("±{}", <$ty>::MAX),
                    ));
                }
                Ok(narrowed)
            }
        }
    )+};
}

half_element!(half::f16 => Fp16, half::bf16 => Bf16);

impl Element for f64 {
    const DATATYPE: DataType = DataType::Fp64;
    const EXPECTED: &'static str = "numbers";

    #[allow(clippy::cast_precision_loss)]
    fn convert(value: Scalar<'_>) -> Result<Self, Rejected> {
        match value {
            Scalar::Float(v) => Ok(v),
            Scalar::Unsigned(v) => Ok(v as f64),
            Scalar::Signed(v) => Ok(v as f64),
            Scalar::Null => Ok(f64::NAN),
            other => Err(Rejected::Kind(other.kind())),
        }
    }
}
