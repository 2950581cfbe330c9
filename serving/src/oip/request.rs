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
/// elements out of range for its datatype (naming the element's row-major index); FP16/BF16 or
/// binary data, which need the binary tensor extension; inputs whose batch sizes or
/// same-named dims disagree; and unknown or repeated requested outputs.
pub fn decode_infer_request(
    body: &[u8],
    signature: &ModelSignature,
) -> Result<DecodedRequest, OipError> {
    let mut diagnostics = Diagnostics::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let seed = RequestSeed {
        signature,
        diagnostics: &mut diagnostics,
        body_len: body.len(),
    };
    let request = seed
        .deserialize(&mut deserializer)
        .and_then(|request| deserializer.end().map(|()| request))
        .map_err(|e| diagnostics.explain(&e))?;
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
    })
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

struct RequestSeed<'a> {
    signature: &'a ModelSignature,
    diagnostics: &'a mut Diagnostics,
    body_len: usize,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = RawRequest;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawRequest, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = RawRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let RequestSeed {
            signature,
            diagnostics,
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
struct InputsSeed<'a> {
    signature: &'a ModelSignature,
    diagnostics: &'a mut Diagnostics,
    body_len: usize,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_> {
    type Value = Vec<Option<Tensor>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_> {
    type Value = Vec<Option<Tensor>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of input tensors")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let InputsSeed {
            signature,
            diagnostics,
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
struct InputSeed<'a> {
    signature: &'a ModelSignature,
    /// The inputs decoded so far, to refuse repeats.
    given: &'a [Option<Tensor>],
    /// Position in the request's `inputs`, for messages about inputs without a name.
    position: usize,
    diagnostics: &'a mut Diagnostics,
    body_len: usize,
}

/// An input's `data`: decoded, or kept raw until its datatype and shape are known.
enum Data<'de> {
    Decoded(Header, TensorData),
    Raw(&'de RawValue),
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_> {
    type Value = (usize, Tensor);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_> {
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
        let (header, values) = match data {
            Some(Data::Decoded(header, values)) => (header, values),
            Some(Data::Raw(raw)) => {
                let header = validation::check_input(signature, given, &name, &datatype, &shape)
                    .map_err(|e| diagnostics.fail(e))?;
                let values =
                    data::decode_raw(raw, &name, &header).map_err(|e| diagnostics.fail(e))?;
                (header, values)
            }
            None => {
                // Report an unknown name or a wrong datatype before the missing data.
                validation::check_input(signature, given, &name, &datatype, &shape)
                    .map_err(|e| diagnostics.fail(e))?;
                let binary = parameters
                    .as_ref()
                    .is_some_and(|p| p.contains_key("binary_data_size"));
                let reason = if binary {
                    "its data uses the binary tensor data extension, which Ferry does not \
                     support yet; send `data` as JSON (tritonclient: \
                     set_data_from_numpy(array, binary_data=False))"
                } else {
                    "has no `data`"
                };
                return Err(diagnostics.fail(OipError::input_error(&name, reason)));
            }
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
