//! Checks of a request against the model's signature: names, datatypes, ranks, fixed and named
//! dimensions, element counts, batch sizes and requested outputs. Every failure names the input
//! (or output) and says what the model expects next to what was given.

use std::fmt::Write as _;

use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};

use super::MAX_RANK;
use super::error::OipError;
use crate::runtime::{DataType, Tensor};

/// An input whose name, datatype and shape passed the checks: what its data is decoded against.
#[derive(Debug)]
pub(super) struct Header {
    /// Position of the input in the signature.
    pub index: usize,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    /// Elements the shape holds.
    pub len: usize,
}

/// Checks one input's declaration against the signature, before its data is read, so a request
/// with the wrong datatype or shape is refused without parsing megabytes of numbers.
///
/// `given` tells which signature inputs the request already had, to refuse repeats.
pub(super) fn check_input(
    signature: &ModelSignature,
    given: &[Option<Tensor>],
    name: &str,
    datatype: &str,
    shape: &[i64],
) -> Result<Header, OipError> {
    let fail = |reason: String| OipError::input_error(name, reason);
    let Some(index) = signature.inputs.iter().position(|spec| spec.name == name) else {
        return Err(fail(format!(
            "the model has no such input; its inputs are {}",
            names(&signature.inputs)
        )));
    };
    if given.get(index).is_some_and(Option::is_some) {
        return Err(fail("given more than once".to_owned()));
    }
    let spec = &signature.inputs[index];

    let Some(given_type) = DataType::from_oip(datatype) else {
        return Err(fail(format!(
            "unknown datatype {:?}; expected {}",
            super::error::shorten(datatype),
            spec.datatype
        )));
    };
    let Some(expected_type) = DataType::from_oip(&spec.datatype) else {
        return Err(fail(format!(
            "the model declares it as {}, which Ferry cannot serve",
            spec.datatype
        )));
    };
    if given_type != expected_type {
        return Err(fail(format!(
            "expected datatype {expected_type}, got {given_type}"
        )));
    }

    match &spec.shape {
        Some(dims) if dims.len() != shape.len() => {
            return Err(fail(format!(
                "expected rank {} (shape {}), got rank {} (shape {shape:?})",
                dims.len(),
                oip_shape(dims),
                shape.len()
            )));
        }
        None if shape.len() > MAX_RANK => {
            return Err(fail(format!(
                "shape has {} dims; Ferry accepts at most {MAX_RANK}",
                shape.len()
            )));
        }
        _ => {}
    }
    let mut dims = Vec::with_capacity(shape.len());
    let mut len = 1_usize;
    for (position, &dim) in shape.iter().enumerate() {
        if dim < 0 {
            return Err(fail(format!(
                "dim {position} is {dim} in shape {shape:?}; dims must be 0 or more"
            )));
        }
        if let Some(Dim::Fixed(fixed)) = spec.shape.as_ref().and_then(|d| d.get(position))
            && *fixed != dim
        {
            return Err(fail(format!(
                "dim {position} must be {fixed}, got {dim} (expected shape {}, got {shape:?})",
                spec.shape.as_deref().map(oip_shape).unwrap_or_default()
            )));
        }
        let Some(size) = usize::try_from(dim).ok() else {
            return Err(too_many_elements(name, shape));
        };
        len = len
            .checked_mul(size)
            .ok_or_else(|| too_many_elements(name, shape))?;
        dims.push(size);
    }
    // An empty input carries no data for the body size to bound, but the graph still runs over
    // its other dims: `[100000000, 0]` would cost as much as a hundred million rows.
    if len == 0 {
        let extent = dims
            .iter()
            .filter(|d| **d != 0)
            .try_fold(1_usize, |acc, d| acc.checked_mul(*d));
        if extent.is_none_or(|e| e > MAX_EMPTY_EXTENT) {
            return Err(fail(format!(
                "shape {shape:?} holds no elements but spans more than {MAX_EMPTY_EXTENT} \
                 (its dims other than 0, multiplied); an empty input may span at most that"
            )));
        }
    }
    Ok(Header {
        index,
        datatype: given_type,
        shape: dims,
        len,
    })
}

/// Most an empty input may span (the product of its dims other than 0): as many elements as a
/// request could carry in a body, so that an empty input costs no more than a full one.
pub const MAX_EMPTY_EXTENT: usize = 1 << 20;

fn too_many_elements(name: &str, shape: &[i64]) -> OipError {
    OipError::input_error(
        name,
        format!("shape {shape:?} has more elements than memory can address"),
    )
}

/// Checks the request as a whole once every input is decoded (`inputs` in signature order, all
/// present): inputs that grow with the batch have the same number of rows, and dimensions the
/// graph gives the same name have the same size.
pub(super) fn check_dims_agree(
    signature: &ModelSignature,
    inputs: &[Tensor],
) -> Result<(), OipError> {
    let pairs: Vec<(&TensorSpec, &Tensor)> = signature.inputs.iter().zip(inputs).collect();

    // Batching stacks inputs along dim 0, so their rows must agree. Two first dims the graph
    // names differently ("n" and "m") are declared independent and are left alone.
    for (later, (spec, tensor)) in pairs.iter().enumerate() {
        if !spec.is_dynamic_batch() {
            continue;
        }
        for (first_spec, first) in pairs.iter().take(later) {
            if !first_spec.is_dynamic_batch() || differently_named(first_spec, spec) {
                continue;
            }
            if first.rows() != tensor.rows() {
                return Err(OipError::input_error(
                    tensor.name(),
                    format!(
                        "has {} rows (dim 0), but input {:?} has {}; the inputs of one request \
                         must have the same number of rows",
                        tensor.rows().unwrap_or(0),
                        first.name(),
                        first.rows().unwrap_or(0)
                    ),
                ));
            }
        }
    }

    // ONNX dims that share a name have one size wherever the name appears.
    let mut named: Vec<(&str, usize, &str, usize)> = Vec::new();
    for (spec, tensor) in &pairs {
        let Some(dims) = &spec.shape else { continue };
        for (position, (dim, &size)) in dims.iter().zip(tensor.shape()).enumerate() {
            let Dim::Symbolic(symbol) = dim else { continue };
            match named.iter().find(|(seen, ..)| seen == symbol) {
                Some(&(_, first_size, first_input, first_position)) if first_size != size => {
                    return Err(OipError::input_error(
                        tensor.name(),
                        format!(
                            "dim {position} is {size}, but dim {first_position} of input \
                             {first_input:?} is {first_size}; the model names both {symbol:?}, \
                             so they must be equal"
                        ),
                    ));
                }
                Some(_) => {}
                None => named.push((symbol, size, tensor.name(), position)),
            }
        }
    }
    Ok(())
}

fn differently_named(a: &TensorSpec, b: &TensorSpec) -> bool {
    let first = |spec: &TensorSpec| spec.shape.as_deref().and_then(<[Dim]>::first).cloned();
    matches!(
        (first(a), first(b)),
        (Some(Dim::Symbolic(x)), Some(Dim::Symbolic(y))) if x != y
    )
}

/// The error for an input the signature has and the request lacks.
pub(super) fn missing_input(spec: &TensorSpec) -> OipError {
    let shape = spec.shape.as_deref().map_or_else(
        || "any shape".to_owned(),
        |dims| format!("shape {}", oip_shape(dims)),
    );
    OipError::input_error(
        &spec.name,
        format!(
            "missing from the request; the model takes {} of {shape}",
            spec.datatype
        ),
    )
}

/// Checks requested output names; an empty list means all outputs, as when none is given.
pub(super) fn check_outputs(
    signature: &ModelSignature,
    requested: Vec<String>,
) -> Result<Option<Vec<String>>, OipError> {
    if requested.is_empty() {
        return Ok(None);
    }
    for (position, name) in requested.iter().enumerate() {
        if !signature.outputs.iter().any(|spec| &spec.name == name) {
            return Err(OipError::output_error(
                name,
                format!(
                    "the model has no such output; its outputs are {}",
                    names(&signature.outputs)
                ),
            ));
        }
        if requested[..position].contains(name) {
            return Err(OipError::output_error(name, "requested more than once"));
        }
    }
    Ok(Some(requested))
}

/// `"a", "b"`, or `none` for an empty list.
fn names(specs: &[TensorSpec]) -> String {
    if specs.is_empty() {
        return "none".to_owned();
    }
    let mut out = String::new();
    for (i, spec) in specs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{:?}", spec.name);
    }
    out
}

/// The shape as OIP metadata shows it: `[-1, 32]`.
pub(super) fn oip_shape(dims: &[Dim]) -> String {
    format!("{:?}", dims.iter().map(Dim::as_oip).collect::<Vec<_>>())
}
