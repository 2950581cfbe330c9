//! `POST /v2/models/{name}[/versions/{v}]/infer` bodies, decoded in one pass into the tensors the
//! runtime takes, and checked against the model's signature on the way.
//!
//! Each input's name, datatype and shape are checked as soon as its `data` begins (they come
//! first in what clients send), so a request with the wrong datatype is refused before a single
//! number is parsed, and the numbers are then read straight into a typed vector. `data` that
//! comes before them is kept as raw JSON and decoded once the input's object ends.

use std::borrow::Cow;
use std::fmt;

use ferry_api::onnx::ModelSignature;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::Parameters;
use super::binary::{self, BinaryPart};
use super::data::{self, DataSeed};
use super::error::OipError;
use super::validation::{self, Header};
use crate::runtime::{Tensor, TensorData};

/// An infer request, decoded and checked against the model's signature: ready for
/// [`LoadedModel::infer`](crate::runtime::LoadedModel::infer).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    /// The request's `id`, to echo in the response.
    pub id: Option<String>,
    /// One tensor per model input, in the model's input order whatever order the request used.
    pub inputs: Vec<Tensor>,
    /// The outputs asked for, in the order asked, each one the model has; `None` for all of
    /// them (no `outputs`, or an empty list).
    pub outputs: Option<Vec<String>>,
    /// The request-level `parameters`, as given.
    pub parameters: Option<Parameters>,
    /// Which outputs the client wants as binary data (the binary tensor data extension).
    pub binary_outputs: BinaryOutputs,
}

/// Which outputs are answered as binary data: those whose `parameters.binary_data` is `true`,
/// and, with the request parameter `binary_data_output: true`, every output not set otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryOutputs {
    /// `binary_data_output` of the request's `parameters`.
    pub all: bool,
    /// Outputs with their own `binary_data`, by name.
    pub named: Vec<(String, bool)>,
}

impl BinaryOutputs {
    /// Whether output `name` is answered as binary data.
    #[must_use]
    pub fn is_binary(&self, name: &str) -> bool {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.all, |(_, binary)| *binary)
    }
}

/// Decodes an infer request body (`{id?, parameters?, inputs: [{name, shape, datatype,
/// parameters?, data}], outputs?: [{name, parameters?}]}`) and checks it against `signature`.
///
/// `data` may be flat or nested like the shape, row-major. In FP32/FP64 data, `null` reads as
/// NaN (JSON has no NaN). Integers may be written as integral floats (`3.0`). Zero-size
/// dimensions are accepted where the model leaves the dimension open: an empty batch is a
/// valid, if idle, request, and the runtime stacks and splits it like any other. Unknown fields
/// are ignored, as the protocol leaves room for extensions.
///
/// # Errors
/// An [`OipError`] (answered 400) naming what is wrong: malformed JSON or wrong JSON types
/// (with serde_json's line and column); an input that is unknown, missing, repeated, of another
/// datatype, rank or fixed dimension than the model declares, with negative dims or more
/// elements than memory can address, data whose count or nesting disagrees with its shape, or
/// elements out of range for its datatype (naming the element's row-major index, FP16's and
/// BF16's ranges included); `binary_data_size` without the binary extension's header
/// (see [`decode_binary_infer_request`]); inputs whose batch sizes or same-named dims disagree;
/// unknown or repeated requested outputs; and `binary_data`/`binary_data_output` parameters
/// that are not booleans.
pub fn decode_infer_request(
    body: &[u8],
    signature: &ModelSignature,
) -> Result<DecodedRequest, OipError> {
    decode(body, BinaryPart::none(), signature)
}

/// Decodes a request in the binary tensor data extension's form: the first `header_len` bytes
/// of `body` (the `Inference-Header-Content-Length` header's value) are the JSON document, and
/// the inputs with `parameters.binary_data_size` take their data from the bytes after it, in
/// the order they are listed (see [`binary`](super::binary) for the layout). Inputs with JSON
/// `data` may be mixed in.
///
/// # Errors
/// What [`decode_infer_request`] refuses, and: a `header_len` past the body; a
/// `binary_data_size` that is not a non-negative integer, that disagrees with the input's shape
/// and datatype, or that runs past the body; an input with both `data` and `binary_data_size`;
/// malformed `BYTES` elements; and bytes left over after the last input.
pub fn decode_binary_infer_request(
    body: &[u8],
    header_len: usize,
    signature: &ModelSignature,
) -> Result<DecodedRequest, OipError> {
    if header_len > body.len() {
        return Err(OipError::Malformed(format!(
            "malformed request: Inference-Header-Content-Length is {header_len} but the body \
             has only {} bytes",
            body.len()
        )));
    }
    let (json, tensors) = body.split_at(header_len);
    decode(json, BinaryPart::new(tensors), signature)
}

fn decode(
    body: &[u8],
    mut binary: BinaryPart<'_>,
    signature: &ModelSignature,
) -> Result<DecodedRequest, OipError> {
    let mut diagnostics = Diagnostics::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let seed = RequestSeed {
        signature,
        diagnostics: &mut diagnostics,
        binary: &mut binary,
        body_len: body.len(),
    };
    let request = seed
        .deserialize(&mut deserializer)
        .and_then(|request| deserializer.end().map(|()| request))
        .map_err(|e| diagnostics.explain(&e))?;
    binary.finish()?;
    finish(request, signature)
}

/// The checks that need the whole request.
fn finish(request: RawRequest, signature: &ModelSignature) -> Result<DecodedRequest, OipError> {
    let Some(given) = request.inputs else {
        return Err(OipError::Malformed(
            "malformed request: missing field `inputs` (an array of input tensors)".to_owned(),
        ));
    };
    let mut inputs = Vec::with_capacity(given.len());
    for (spec, tensor) in signature.inputs.iter().zip(given) {
        inputs.push(tensor.ok_or_else(|| validation::missing_input(spec))?);
    }
    validation::check_dims_agree(signature, &inputs)?;
    let mut binary_outputs = BinaryOutputs {
        all: flag(request.parameters.as_ref(), "binary_data_output", None)?,
        named: Vec::new(),
    };
    for output in request.outputs.iter().flatten() {
        if let Some(parameters) = &output.parameters
            && parameters.contains_key("binary_data")
        {
            let binary = flag(Some(parameters), "binary_data", Some(&output.name))?;
            binary_outputs.named.push((output.name.clone(), binary));
        }
    }
    let outputs = match request.outputs {
        None => None,
        Some(requested) => {
            if let Some(classified) = requested.iter().find(|output| {
                output
                    .parameters
                    .as_ref()
                    .is_some_and(|p| p.contains_key("classification"))
            }) {
                return Err(OipError::output_error(
                    &classified.name,
                    "the classification extension is not supported; request the output \
                     without the `classification` parameter",
                ));
            }
            let names = requested.into_iter().map(|output| output.name).collect();
            validation::check_outputs(signature, names)?
        }
    };
    Ok(DecodedRequest {
        id: request.id,
        inputs,
        outputs,
        parameters: request.parameters,
        binary_outputs,
    })
}

/// A boolean parameter (`false` when absent), refused when it is something else.
fn flag(
    parameters: Option<&Parameters>,
    key: &str,
    output: Option<&str>,
) -> Result<bool, OipError> {
    match parameters.and_then(|p| p.get(key)) {
        None => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => {
            let reason = format!("parameter `{key}` must be true or false, got {other}");
            Err(match output {
                Some(name) => OipError::output_error(name, reason),
                None => OipError::Malformed(format!("malformed request: {reason}")),
            })
        }
    }
}

/// What went wrong while parsing, beyond serde's own error: the full explanation of a refusal
/// made by these visitors, or else where in the document serde's error happened.
#[derive(Default)]
struct Diagnostics {
    failure: Option<OipError>,
    context: Option<Context>,
}

/// Where a serde error happened: an input (by name, once known) and a field.
struct Context {
    input: Option<String>,
    place: String,
}

impl Context {
    fn field(input: Option<&str>, position: usize, field: &str) -> Self {
        match input {
            Some(name) => Context {
                input: Some(name.to_owned()),
                place: format!("`{field}`"),
            },
            None => Context {
                input: None,
                place: format!("inputs[{position}].{field}"),
            },
        }
    }

    fn place(place: impl Into<String>) -> Self {
        Context {
            input: None,
            place: place.into(),
        }
    }
}

impl Diagnostics {
    /// Records a refusal (the first one wins) and returns the error that unwinds the parser.
    fn fail<E: de::Error>(&mut self, error: OipError) -> E {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        E::custom("refused")
    }

    /// Records where `error` happened, unless something deeper already did.
    fn note<E>(&mut self, error: E, context: impl FnOnce() -> Context) -> E {
        if self.failure.is_none() && self.context.is_none() {
            self.context = Some(context());
        }
        error
    }

    fn explain(self, error: &serde_json::Error) -> OipError {
        if let Some(failure) = self.failure {
            return failure;
        }
        match (error.classify(), self.context) {
            (
                Category::Data,
                Some(Context {
                    input: Some(input),
                    place,
                }),
            ) => OipError::input_error(&input, format!("{place}: {error}")),
            (Category::Data, Some(Context { input: None, place })) => {
                OipError::Malformed(format!("malformed request: {place}: {error}"))
            }
            (Category::Data, None) => OipError::Malformed(format!("malformed request: {error}")),
            (_, context) => {
                let place = match context {
                    Some(Context {
                        input: Some(input),
                        place,
                    }) => format!(" in {place} of input {:?}", super::error::shorten(&input)),
                    Some(Context { input: None, place }) => format!(" in {place}"),
                    None => String::new(),
                };
                let hint = if error.to_string().starts_with("recursion limit exceeded") {
                    " (JSON nested more than 128 levels deep)"
                } else {
                    ""
                };
                OipError::Malformed(format!("invalid JSON{place}: {error}{hint}"))
            }
        }
    }
}

/// The request as parsed, before the checks that need all of it.
#[derive(Default)]
struct RawRequest {
    id: Option<String>,
    parameters: Option<Parameters>,
    /// Decoded inputs by their position in the signature.
    inputs: Option<Vec<Option<Tensor>>>,
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

/// Field names, matched without allocating; unknown ones are skipped.
macro_rules! fields {
    ($name:ident { $($variant:ident = $key:literal),+ $(,)? }) => {
        enum $name {
            $($variant,)+
            Other,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FieldVisitor;
                impl Visitor<'_> for FieldVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok(match v {
                            $($key => $name::$variant,)+
                            _ => $name::Other,
                        })
                    }
                }
                deserializer.deserialize_identifier(FieldVisitor)
            }
        }
    };
}

fields!(RequestField {
    Id = "id",
    Parameters = "parameters",
    Inputs = "inputs",
    Outputs = "outputs",
});

fields!(InputField {
    Name = "name",
    Shape = "shape",
    Datatype = "datatype",
    Parameters = "parameters",
    Data = "data",
});

/// Refuses a field given twice, as serde's derive does.
fn once<E: de::Error>(seen: &mut bool, field: &'static str) -> Result<(), E> {
    if std::mem::replace(seen, true) {
        return Err(E::duplicate_field(field));
    }
    Ok(())
}

struct RequestSeed<'a, 'b> {
    signature: &'a ModelSignature,
    diagnostics: &'a mut Diagnostics,
    /// The tensor bytes after the JSON (binary tensor data extension).
    binary: &'a mut BinaryPart<'b>,
    body_len: usize,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = RawRequest;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawRequest, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = RawRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let RequestSeed {
            signature,
            diagnostics,
            binary,
            body_len,
        } = self;
        let mut request = RawRequest::default();
        let mut seen = [false; 4];
        while let Some(field) = map.next_key::<RequestField>()? {
            match field {
                RequestField::Id => {
                    once(&mut seen[0], "id")?;
                    request.id = map
                        .next_value()
                        .map_err(|e| diagnostics.note(e, || Context::place("`id`")))?;
                }
                RequestField::Parameters => {
                    once(&mut seen[1], "parameters")?;
                    request.parameters = map
                        .next_value()
                        .map_err(|e| diagnostics.note(e, || Context::place("`parameters`")))?;
                }
                RequestField::Inputs => {
                    once(&mut seen[2], "inputs")?;
                    let seed = InputsSeed {
                        signature,
                        diagnostics: &mut *diagnostics,
                        binary: &mut *binary,
                        body_len,
                    };
                    let inputs = map
                        .next_value_seed(seed)
                        .map_err(|e| diagnostics.note(e, || Context::place("`inputs`")))?;
                    request.inputs = Some(inputs);
                }
                RequestField::Outputs => {
                    once(&mut seen[3], "outputs")?;
                    request.outputs = map
                        .next_value()
                        .map_err(|e| diagnostics.note(e, || Context::place("`outputs`")))?;
                }
                RequestField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(request)
    }
}

/// The `inputs` array: decoded inputs by their position in the signature.
struct InputsSeed<'a, 'b> {
    signature: &'a ModelSignature,
    diagnostics: &'a mut Diagnostics,
    binary: &'a mut BinaryPart<'b>,
    body_len: usize,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = Vec<Option<Tensor>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = Vec<Option<Tensor>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of input tensors")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let InputsSeed {
            signature,
            diagnostics,
            binary,
            body_len,
        } = self;
        let mut given: Vec<Option<Tensor>> = std::iter::repeat_with(|| None)
            .take(signature.inputs.len())
            .collect();
        let mut position = 0_usize;
        loop {
            let seed = InputSeed {
                signature,
                given: &given,
                position,
                diagnostics: &mut *diagnostics,
                binary: &mut *binary,
                body_len,
            };
            let next = seq.next_element_seed(seed).map_err(|e| {
                diagnostics.note(e, || Context::place(format!("inputs[{position}]")))
            })?;
            let Some((index, tensor)) = next else { break };
            // `index` is a position in the signature and repeats were refused.
            if let Some(slot) = given.get_mut(index) {
                *slot = Some(tensor);
            }
            position += 1;
        }
        Ok(given)
    }
}

/// One input object: its position in the signature and its tensor.
struct InputSeed<'a, 'b> {
    signature: &'a ModelSignature,
    /// The inputs decoded so far, to refuse repeats.
    given: &'a [Option<Tensor>],
    /// Position in the request's `inputs`, for messages about inputs without a name.
    position: usize,
    diagnostics: &'a mut Diagnostics,
    binary: &'a mut BinaryPart<'b>,
    body_len: usize,
}

/// An input's `data`: decoded, or kept raw until its datatype and shape are known.
enum Data<'de> {
    Decoded(Header, TensorData),
    Raw(&'de RawValue),
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_, '_> {
    type Value = (usize, Tensor);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_, '_> {
    type Value = (usize, Tensor);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor object {name, shape, datatype, data}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let InputSeed {
            signature,
            given,
            position,
            diagnostics,
            binary,
            body_len,
        } = self;
        let mut name: Option<String> = None;
        let mut datatype: Option<Cow<'de, str>> = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut parameters: Option<Parameters> = None;
        let mut data: Option<Data<'de>> = None;
        let mut seen = [false; 4];
        while let Some(field) = map.next_key::<InputField>()? {
            match field {
                InputField::Name => {
                    once(&mut seen[0], "name")?;
                    let value = map.next_value::<String>().map_err(|e| {
                        diagnostics.note(e, || Context::field(None, position, "name"))
                    })?;
                    name = Some(value);
                }
                InputField::Datatype => {
                    once(&mut seen[1], "datatype")?;
                    let value = map.next_value::<Text<'de>>().map_err(|e| {
                        diagnostics
                            .note(e, || Context::field(name.as_deref(), position, "datatype"))
                    })?;
                    datatype = Some(value.0);
                }
                InputField::Shape => {
                    once(&mut seen[2], "shape")?;
                    let value = map.next_value::<Vec<i64>>().map_err(|e| {
                        diagnostics.note(e, || Context::field(name.as_deref(), position, "shape"))
                    })?;
                    shape = Some(value);
                }
                InputField::Parameters => {
                    once(&mut seen[3], "parameters")?;
                    parameters = map.next_value().map_err(|e| {
                        diagnostics.note(e, || {
                            Context::field(name.as_deref(), position, "parameters")
                        })
                    })?;
                }
                InputField::Data => {
                    if data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    data = Some(
                        if let (Some(name), Some(datatype), Some(shape)) =
                            (&name, &datatype, &shape)
                        {
                            let header =
                                validation::check_input(signature, given, name, datatype, shape)
                                    .map_err(|e| diagnostics.fail(e))?;
                            let seed = DataSeed {
                                input: name,
                                header: &header,
                                capacity: body_len / 2 + 1,
                                failure: &mut diagnostics.failure,
                            };
                            let values = map.next_value_seed(seed).map_err(|e| {
                                diagnostics.note(e, || Context::field(Some(name), position, "data"))
                            })?;
                            Data::Decoded(header, values)
                        } else {
                            Data::Raw(map.next_value().map_err(|e| {
                                diagnostics
                                    .note(e, || Context::field(name.as_deref(), position, "data"))
                            })?)
                        },
                    );
                }
                InputField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }

        let Some(name) = name else {
            return Err(diagnostics.fail(OipError::Malformed(format!(
                "malformed request: inputs[{position}] has no `name`"
            ))));
        };
        let missing = |field: &str| OipError::input_error(&name, format!("has no `{field}`"));
        let Some(datatype) = datatype else {
            return Err(diagnostics.fail(missing("datatype")));
        };
        let Some(shape) = shape else {
            return Err(diagnostics.fail(missing("shape")));
        };
        let declared =
            binary::declared_size(&name, parameters.as_ref()).map_err(|e| diagnostics.fail(e))?;
        let (header, values) = match (data, declared) {
            (Some(_), Some(_)) => {
                return Err(diagnostics.fail(OipError::input_error(
                    &name,
                    "has both `data` and `binary_data_size`; send its data one way",
                )));
            }
            (None, Some(size)) => {
                let header = validation::check_input(signature, given, &name, &datatype, &shape)
                    .map_err(|e| diagnostics.fail(e))?;
                let values = binary
                    .take(&name, size)
                    .and_then(|bytes| binary::decode(&name, &header, bytes, "`binary_data_size`"))
                    .map_err(|e| diagnostics.fail(e))?;
                (header, values)
            }
            (data, None) => match data {
                Some(Data::Decoded(header, values)) => (header, values),
                Some(Data::Raw(raw)) => {
                    let header =
                        validation::check_input(signature, given, &name, &datatype, &shape)
                            .map_err(|e| diagnostics.fail(e))?;
                    let values =
                        data::decode_raw(raw, &name, &header).map_err(|e| diagnostics.fail(e))?;
                    (header, values)
                }
                None => {
                    // Report an unknown name or a wrong datatype before the missing data.
                    validation::check_input(signature, given, &name, &datatype, &shape)
                        .map_err(|e| diagnostics.fail(e))?;
                    return Err(diagnostics.fail(OipError::input_error(
                        &name,
                        "has no `data` (nor `parameters.binary_data_size`)",
                    )));
                }
            },
        };
        let index = header.index;
        // The data was counted against the shape while decoding, so this cannot fail; if it
        // ever did, it is still the request's data that is wrong.
        let tensor = Tensor::new(name, header.shape, values)
            .map_err(|e| diagnostics.fail(OipError::Malformed(e.to_string())))?;
        Ok((index, tensor))
    }
}

/// A string borrowed from the body when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}
