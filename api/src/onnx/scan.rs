//! The streaming walk over the protobuf wire format of `onnx.ModelProto`.
//!
//! A byte-at-a-time state machine for tags, varints and length prefixes (they may be split across
//! chunks), and bulk moves for everything length-delimited: weights and nodes are skipped without
//! being copied, and the few small fields a signature needs are copied into one bounded buffer.
//! Messages are entered only along the fixed path ModelProto → GraphProto → (Sparse)TensorProto,
//! so the stack is at most three frames deep whatever the input.

use std::collections::HashSet;

use prost::Message as _;

use super::proto;
use super::{ModelSignature, OnnxError, Opset, TensorSpec};

/// Producer strings and initializer names longer than this are skipped, not read.
const MAX_STRING: u64 = 4 * 1024;
/// One `opset_import` entry is a domain and a number; more than this is not an opset.
const MAX_OPSET_ENTRY: u64 = 4 * 1024;
/// One graph input or output; a description this large would already be absurd.
const MAX_VALUE_INFO: u64 = 1024 * 1024;
/// All graph inputs and outputs together, so many small ones cannot add up to a lot of memory.
const MAX_VALUE_INFO_TOTAL: u64 = 16 * 1024 * 1024;
/// Graph inputs plus outputs.
const MAX_GRAPH_IO: usize = 16 * 1024;
const MAX_OPSETS: usize = 1024;
/// Initializer names are remembered (to tell real inputs from IR<4 weight inputs); these bound
/// what a hostile file of millions of tiny named tensors can make the registry hold.
const MAX_INITIALIZERS: usize = 256 * 1024;
const MAX_INITIALIZER_NAME_BYTES: usize = 16 * 1024 * 1024;
/// A capture buffer that grew past this is dropped rather than kept for the next capture.
const KEEP_BUFFER: usize = 64 * 1024;
/// Protobuf field numbers are 29 bits.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;
/// Messages nested in one another (subgraphs in node attributes in subgraphs…): deeper is
/// refused, so the scanner's stack stays small whatever the file.
const MAX_DEPTH: usize = 128;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: u64 = 1;

/// Reads a [`ModelSignature`] from an ONNX model fed in chunks of any size, so an upload can be
/// checked while it streams to storage.
///
/// Memory stays flat whatever the model's size: weights and nodes are skipped, never copied; what
/// is kept is bounded (1 MiB per graph input/output and 16 MiB for all of them, 4 KiB per opset
/// import, 256 Ki initializer names of at most 4 KiB each and 16 MiB in all). A model past those
/// bounds is refused with [`OnnxError::TooLarge`] or [`OnnxError::TooMany`]. The work is a few
/// steps per top-level field, so it can run inline on the task that receives the upload.
///
/// Feed every chunk with [`feed`](Self::feed) as it arrives, then call
/// [`finish`](Self::finish). After an error, every later call returns that same error.
#[derive(Debug, Default)]
pub struct OnnxScanner {
    /// Bytes consumed so far: the absolute offset of the next byte.
    pos: u64,
    state: State,
    varint: u64,
    varint_len: u32,
    /// Number and start offset of the field being read, for errors.
    field: u64,
    field_start: u64,
    /// Messages entered below the top-level ModelProto, innermost last.
    stack: Vec<Frame>,
    buf: Vec<u8>,
    failed: Option<OnnxError>,
    found: Found,
}

#[derive(Debug, Default)]
struct Found {
    ir_version: Option<i64>,
    opsets: Vec<Opset>,
    producer_name: String,
    producer_version: String,
    graph: bool,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    value_info_bytes: u64,
    initializers: HashSet<String>,
    initializer_name_bytes: usize,
}

#[derive(Debug)]
struct Frame {
    message: Message,
    /// Absolute offset where this message ends.
    end: u64,
    /// For tensors: `TensorProto.name` and whether `data_location` is EXTERNAL.
    name: Option<String>,
    external: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message {
    Model,
    Graph,
    Initializer,
    SparseInitializer,
    SparseValues,
    SparseIndices,
    /// Where else a tensor can hide its data in a file next to the model: nodes (of the graph,
    /// of subgraphs, of functions), their attributes (`Constant`'s value, `If`/`Loop` bodies),
    /// subgraphs, functions and training graphs. Entered only to find EXTERNAL tensors.
    Node,
    Attribute,
    SubGraph,
    Function,
    TrainingInfo,
    NestedSparse,
    NestedTensor,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Varint(Reading),
    Skip(u64),
    Capture(Capture, u64),
}

impl Default for State {
    fn default() -> Self {
        State::Varint(Reading::Tag)
    }
}

/// What the varint being read is.
#[derive(Clone, Copy, Debug)]
enum Reading {
    Tag,
    /// A varint field's value, and what to do with it (`None`: ignore).
    Value(Option<VarintUse>),
    /// A length prefix, and what to do with the bytes it announces (`None`: skip).
    Length(Option<BytesUse>),
}

#[derive(Clone, Copy, Debug)]
enum VarintUse {
    IrVersion,
    DataLocation,
}

#[derive(Clone, Copy, Debug)]
enum BytesUse {
    Enter(Message),
    Capture(Capture),
}

#[derive(Clone, Copy, Debug)]
enum Capture {
    Opset,
    ProducerName,
    ProducerVersion,
    TensorName,
    Input,
    Output,
}

/// What a field of a message means to the scanner.
enum Plan {
    Varint(VarintUse),
    Bytes(BytesUse),
    /// Skipped according to its wire type.
    Skip,
}

fn plan(message: Message, field: u64) -> Plan {
    use Message::{
        Attribute, Function, Graph, Initializer, Model, NestedSparse, NestedTensor, Node,
        SparseIndices, SparseInitializer, SparseValues, SubGraph, TrainingInfo,
    };
    match (message, field) {
        (Model, 20) => Plan::Bytes(BytesUse::Enter(TrainingInfo)),
        (Model, 25) => Plan::Bytes(BytesUse::Enter(Function)),
        (TrainingInfo, 1 | 3) | (Attribute, 6 | 11) => Plan::Bytes(BytesUse::Enter(SubGraph)),
        (Graph | SubGraph, 1) | (Function, 7) => Plan::Bytes(BytesUse::Enter(Node)),
        (Node, 5) | (Function, 11) => Plan::Bytes(BytesUse::Enter(Attribute)),
        (Attribute, 5 | 10) | (SubGraph, 5) | (NestedSparse, 1 | 2) => {
            Plan::Bytes(BytesUse::Enter(NestedTensor))
        }
        (Attribute, 22 | 23) | (SubGraph, 15) => Plan::Bytes(BytesUse::Enter(NestedSparse)),
        (NestedTensor, 8) => Plan::Bytes(BytesUse::Capture(Capture::TensorName)),
        (NestedTensor, 14) => Plan::Varint(VarintUse::DataLocation),
        (Model, 1) => Plan::Varint(VarintUse::IrVersion),
        (Model, 2) => Plan::Bytes(BytesUse::Capture(Capture::ProducerName)),
        (Model, 3) => Plan::Bytes(BytesUse::Capture(Capture::ProducerVersion)),
        (Model, 7) => Plan::Bytes(BytesUse::Enter(Graph)),
        (Model, 8) => Plan::Bytes(BytesUse::Capture(Capture::Opset)),
        (Graph, 5) => Plan::Bytes(BytesUse::Enter(Initializer)),
        (Graph, 11) => Plan::Bytes(BytesUse::Capture(Capture::Input)),
        (Graph, 12) => Plan::Bytes(BytesUse::Capture(Capture::Output)),
        (Graph, 15) => Plan::Bytes(BytesUse::Enter(SparseInitializer)),
        (SparseInitializer, 1) => Plan::Bytes(BytesUse::Enter(SparseValues)),
        (SparseInitializer, 2) => Plan::Bytes(BytesUse::Enter(SparseIndices)),
        (Initializer | SparseValues, 8) => Plan::Bytes(BytesUse::Capture(Capture::TensorName)),
        (Initializer | SparseValues | SparseIndices, 14) => Plan::Varint(VarintUse::DataLocation),
        _ => Plan::Skip,
    }
}

impl Message {
    fn proto_name(self) -> &'static str {
        match self {
            Message::Model => "ModelProto",
            Message::Graph => "GraphProto",
            Message::Initializer | Message::SparseValues | Message::SparseIndices => "TensorProto",
            Message::SparseInitializer | Message::NestedSparse => "SparseTensorProto",
            Message::NestedTensor => "TensorProto",
            Message::Node => "NodeProto",
            Message::Attribute => "AttributeProto",
            Message::SubGraph => "GraphProto",
            Message::Function => "FunctionProto",
            Message::TrainingInfo => "TrainingInfoProto",
        }
    }

    /// Names of the fields an error is likely to be about.
    fn field_name(self, field: u64) -> Option<&'static str> {
        use Message::{
            Attribute, Graph, Initializer, Model, NestedTensor, Node, SparseIndices,
            SparseInitializer, SparseValues,
        };
        Some(match (self, field) {
            (Model, 1) => "ir_version",
            (Model, 2) => "producer_name",
            (Model, 3) => "producer_version",
            (Model, 4) => "domain",
            (Model, 5) => "model_version",
            (Model, 6) => "doc_string",
            (Model, 7) => "graph",
            (Model, 8) => "opset_import",
            (Model, 14) => "metadata_props",
            (Model, 20) => "training_info",
            (Model, 25) => "functions",
            (Graph, 1) => "node",
            (Graph, 2) => "name",
            (Graph, 5) => "initializer",
            (Graph, 10) => "doc_string",
            (Graph, 11) => "input",
            (Graph, 12) => "output",
            (Graph, 13) => "value_info",
            (Graph, 15) => "sparse_initializer",
            (NestedTensor, 8) => "name",
            (NestedTensor, 14) => "data_location",
            (Node, 5) => "attribute",
            (Attribute, 5) => "t",
            (Attribute, 6) => "g",
            (Attribute, 10) => "tensors",
            (Attribute, 11) => "graphs",
            (Initializer | SparseValues | SparseIndices, 1) => "dims",
            (Initializer | SparseValues | SparseIndices, 2) => "data_type",
            (Initializer | SparseValues | SparseIndices, 8) => "name",
            (Initializer | SparseValues | SparseIndices, 9) => "raw_data",
            (Initializer | SparseValues | SparseIndices, 13) => "external_data",
            (Initializer | SparseValues | SparseIndices, 14) => "data_location",
            (SparseInitializer, 1) => "values",
            (SparseInitializer, 2) => "indices",
            _ => return None,
        })
    }
}

/// How many of `left` bytes the `available` bytes of a chunk cover.
fn take(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

fn wire_type_name(wire: u64) -> &'static str {
    match wire {
        0 => "varint",
        1 => "64-bit",
        2 => "length-delimited",
        3 => "start group",
        4 => "end group",
        5 => "32-bit",
        _ => "invalid",
    }
}

impl OnnxScanner {
    /// A scanner at the start of a model.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes the next chunk of the model, of any size (empty chunks are fine).
    ///
    /// # Errors
    /// As soon as the bytes seen so far cannot be the start of an acceptable ONNX model; the
    /// upload can be aborted then. Errors are sticky.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), OnnxError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.consume(chunk);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Ends the stream and returns the signature.
    ///
    /// A stream cut exactly between two complete top-level fields (say, between two opset imports)
    /// cannot be told from a complete model, since protobuf has no end marker: callers must still
    /// check that the transport delivered the whole body.
    ///
    /// # Errors
    /// [`OnnxError::Truncated`] when the bytes stop inside a field or message;
    /// [`OnnxError::NotOnnx`] when the model lacks an IR version, an opset import, a graph or a
    /// graph output; any error an earlier [`feed`](Self::feed) returned.
    pub fn finish(self) -> Result<ModelSignature, OnnxError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if let Some(context) = self.unfinished() {
            return Err(OnnxError::Truncated {
                offset: self.pos,
                context,
            });
        }
        if self.pos == 0 {
            return Err(OnnxError::NotOnnx("the file is empty".to_owned()));
        }
        let found = self.found;
        let ir_version = match found.ir_version {
            Some(version) if version > 0 => version,
            Some(version) => {
                return Err(OnnxError::NotOnnx(format!(
                    "ModelProto.ir_version is {version}, not a valid IR version"
                )));
            }
            None => {
                return Err(OnnxError::NotOnnx(
                    "ModelProto.ir_version is missing".to_owned(),
                ));
            }
        };
        if !found.graph {
            return Err(OnnxError::NotOnnx(
                "the model has no graph (ModelProto.graph)".to_owned(),
            ));
        }
        if found.outputs.is_empty() {
            return Err(OnnxError::NotOnnx(
                "the graph declares no outputs".to_owned(),
            ));
        }
        if found.opsets.is_empty() {
            return Err(OnnxError::NotOnnx(
                "the model imports no operator set (ModelProto.opset_import)".to_owned(),
            ));
        }
        let initializers = found.initializers;
        let inputs = found
            .inputs
            .into_iter()
            .filter(|input| !initializers.contains(&input.name))
            .collect();
        let producer = format!("{} {}", found.producer_name, found.producer_version)
            .trim()
            .to_owned();
        Ok(ModelSignature {
            inputs,
            outputs: found.outputs,
            ir_version,
            opsets: found.opsets,
            producer: (!producer.is_empty()).then_some(producer),
        })
    }

    /// What the stream would be cut short inside if it ended now.
    fn unfinished(&self) -> Option<String> {
        let field = self.field_desc();
        match self.state {
            State::Varint(Reading::Tag) if self.varint_len == 0 => {}
            State::Varint(Reading::Tag) => return Some("a field tag".to_owned()),
            State::Varint(Reading::Value(_)) => return Some(format!("the value of {field}")),
            State::Varint(Reading::Length(_)) => return Some(format!("the length of {field}")),
            State::Skip(left) | State::Capture(_, left) => {
                return Some(format!("{field} ({left} more bytes expected)"));
            }
        }
        self.stack.last().map(|frame| {
            format!(
                "a {} that should end at byte {}",
                frame.message.proto_name(),
                frame.end
            )
        })
    }

    fn consume(&mut self, mut chunk: &[u8]) -> Result<(), OnnxError> {
        while !chunk.is_empty() {
            match self.state {
                State::Skip(left) => {
                    let n = take(left, chunk.len());
                    chunk = chunk.get(n..).unwrap_or_default();
                    self.pos += n as u64;
                    match left - n as u64 {
                        0 => self.field_done()?,
                        left => self.state = State::Skip(left),
                    }
                }
                State::Capture(what, left) => {
                    let n = take(left, chunk.len());
                    let (head, rest) = chunk.split_at_checked(n).unwrap_or((chunk, &[]));
                    self.buf.extend_from_slice(head);
                    chunk = rest;
                    self.pos += n as u64;
                    match left - n as u64 {
                        0 => {
                            self.captured(what)?;
                            self.field_done()?;
                        }
                        left => self.state = State::Capture(what, left),
                    }
                }
                State::Varint(reading) => {
                    let Some((&byte, rest)) = chunk.split_first() else {
                        break;
                    };
                    chunk = rest;
                    if let Some(value) = self.varint_byte(byte, reading)? {
                        match reading {
                            Reading::Tag => self.tag(value)?,
                            Reading::Value(target) => {
                                self.value(value, target);
                                self.field_done()?;
                            }
                            Reading::Length(target) => self.length(value, target)?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The message being read and where it ends (`None`: the top-level model, which ends with the stream).
    fn message(&self) -> (Message, Option<u64>) {
        self.stack.last().map_or((Message::Model, None), |frame| {
            (frame.message, Some(frame.end))
        })
    }

    fn field_desc(&self) -> String {
        let message = self.message().0;
        match message.field_name(self.field) {
            Some(name) => format!("{}.{name}", message.proto_name()),
            None => format!("{} field {}", message.proto_name(), self.field),
        }
    }

    fn malformed(&self, reason: String) -> OnnxError {
        OnnxError::Malformed {
            offset: self.field_start,
            reason,
        }
    }

    fn varint_byte(&mut self, byte: u8, reading: Reading) -> Result<Option<u64>, OnnxError> {
        if self.varint_len == 0 && matches!(reading, Reading::Tag) {
            self.field_start = self.pos;
        }
        if let (message, Some(end)) = self.message()
            && self.pos >= end
        {
            let what = match reading {
                Reading::Tag => "a field tag".to_owned(),
                Reading::Value(_) => format!("the value of {}", self.field_desc()),
                Reading::Length(_) => format!("the length of {}", self.field_desc()),
            };
            return Err(self.malformed(format!(
                "{what} runs past the end of its enclosing {}",
                message.proto_name()
            )));
        }
        self.pos += 1;
        // The tenth byte may only carry the 64th bit; anything more is not a valid varint.
        if self.varint_len == 9 && byte > 1 {
            return Err(self.malformed("a varint is longer than 64 bits".to_owned()));
        }
        self.varint |= u64::from(byte & 0x7f) << (7 * self.varint_len);
        self.varint_len += 1;
        if byte & 0x80 != 0 {
            return Ok(None);
        }
        let value = self.varint;
        self.varint = 0;
        self.varint_len = 0;
        Ok(Some(value))
    }

    fn tag(&mut self, tag: u64) -> Result<(), OnnxError> {
        let wire = tag & 7;
        self.field = tag >> 3;
        let message = self.message().0;
        if self.field == 0 || self.field > MAX_FIELD_NUMBER {
            return Err(self.malformed(format!(
                "invalid protobuf field number {} in {}",
                self.field,
                message.proto_name()
            )));
        }
        let wrong_wire = |scanner: &Self, expected: u64| {
            scanner.malformed(format!(
                "{} has wire type {wire} ({}), expected {}",
                scanner.field_desc(),
                wire_type_name(wire),
                wire_type_name(expected)
            ))
        };
        self.state = match (wire, plan(message, self.field)) {
            (0, Plan::Varint(target)) => State::Varint(Reading::Value(Some(target))),
            (0, Plan::Skip) => State::Varint(Reading::Value(None)),
            (2, Plan::Bytes(target)) => State::Varint(Reading::Length(Some(target))),
            (2, Plan::Skip) => State::Varint(Reading::Length(None)),
            (1 | 5, Plan::Skip) => {
                let size = if wire == 1 { 8 } else { 4 };
                self.check_fits(size)?;
                State::Skip(size)
            }
            (0 | 1 | 5, Plan::Bytes(_)) => return Err(wrong_wire(self, 2)),
            (1 | 2 | 5, Plan::Varint(_)) => return Err(wrong_wire(self, 0)),
            (3 | 4, _) => {
                return Err(self.malformed(format!(
                    "{} uses a protobuf group (wire type {wire}), which ONNX never does",
                    self.field_desc()
                )));
            }
            _ => {
                return Err(self.malformed(format!(
                    "{} has invalid wire type {wire}",
                    self.field_desc()
                )));
            }
        };
        Ok(())
    }

    /// Fails when `len` bytes starting here would run past the enclosing message.
    fn check_fits(&self, len: u64) -> Result<(), OnnxError> {
        let (message, end) = self.message();
        let fits = match (self.pos.checked_add(len), end) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(field_end), Some(end)) => field_end <= end,
        };
        if fits {
            return Ok(());
        }
        let left = end.map_or(String::new(), |end| {
            format!(
                ", but only {} remain in its {}",
                end - self.pos,
                message.proto_name()
            )
        });
        Err(self.malformed(format!("{} declares {len} bytes{left}", self.field_desc())))
    }

    fn value(&mut self, value: u64, target: Option<VarintUse>) {
        match target {
            // int64 fields are two's-complement varints.
            Some(VarintUse::IrVersion) => self.found.ir_version = Some(value as i64),
            Some(VarintUse::DataLocation) => {
                if let Some(frame) = self.stack.last_mut() {
                    frame.external = value == EXTERNAL;
                }
            }
            None => {}
        }
    }

    fn length(&mut self, len: u64, target: Option<BytesUse>) -> Result<(), OnnxError> {
        self.check_fits(len)?;
        match target {
            None => self.skip(len),
            Some(BytesUse::Enter(message)) => {
                if message == Message::Graph {
                    self.found.graph = true;
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(
                        self.malformed(format!("messages are nested more than {MAX_DEPTH} deep"))
                    );
                }
                self.stack.push(Frame {
                    message,
                    end: self.pos + len,
                    name: None,
                    external: false,
                });
                // An empty message ends right here.
                self.field_done()
            }
            Some(BytesUse::Capture(what)) => self.capture(what, len),
        }
    }

    fn skip(&mut self, len: u64) -> Result<(), OnnxError> {
        if len == 0 {
            return self.field_done();
        }
        self.state = State::Skip(len);
        Ok(())
    }

    fn capture(&mut self, what: Capture, len: u64) -> Result<(), OnnxError> {
        let too_large = |scanner: &Self, limit: u64| OnnxError::TooLarge {
            what: scanner.field_desc(),
            offset: scanner.field_start,
            size: len,
            limit,
        };
        match what {
            Capture::Opset if len > MAX_OPSET_ENTRY => {
                return Err(too_large(self, MAX_OPSET_ENTRY));
            }
            Capture::Input | Capture::Output => {
                if len > MAX_VALUE_INFO {
                    return Err(too_large(self, MAX_VALUE_INFO));
                }
                self.found.value_info_bytes += len;
                if self.found.value_info_bytes > MAX_VALUE_INFO_TOTAL {
                    return Err(OnnxError::TooLarge {
                        what: "all graph inputs and outputs together".to_owned(),
                        offset: self.field_start,
                        size: self.found.value_info_bytes,
                        limit: MAX_VALUE_INFO_TOTAL,
                    });
                }
            }
            // Too long to be a real name: leave it out, as if absent (a repeated field keeps the last).
            Capture::ProducerName | Capture::ProducerVersion | Capture::TensorName
                if len > MAX_STRING =>
            {
                self.captured_string(what, None);
                return self.skip(len);
            }
            _ => {}
        }
        self.buf.clear();
        if len == 0 {
            self.captured(what)?;
            return self.field_done();
        }
        self.state = State::Capture(what, len);
        Ok(())
    }

    /// Handles a complete capture, which is in `self.buf`.
    fn captured(&mut self, what: Capture) -> Result<(), OnnxError> {
        let buf = std::mem::take(&mut self.buf);
        let result = match what {
            Capture::Opset => self.opset(&buf),
            Capture::Input => self.value_info(&buf, "input"),
            Capture::Output => self.value_info(&buf, "output"),
            Capture::ProducerName | Capture::ProducerVersion | Capture::TensorName => {
                self.captured_string(what, Some(&buf));
                Ok(())
            }
        };
        if buf.capacity() <= KEEP_BUFFER {
            self.buf = buf;
        }
        result
    }

    fn captured_string(&mut self, what: Capture, bytes: Option<&[u8]>) {
        match what {
            Capture::ProducerName => {
                self.found.producer_name = bytes
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
            }
            Capture::ProducerVersion => {
                self.found.producer_version = bytes
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
            }
            Capture::TensorName => {
                if let Some(frame) = self.stack.last_mut() {
                    // A name that is not UTF-8 cannot equal an input name, which prost requires to be.
                    frame.name = bytes.and_then(|bytes| String::from_utf8(bytes.to_vec()).ok());
                }
            }
            Capture::Opset | Capture::Input | Capture::Output => {}
        }
    }

    fn opset(&mut self, bytes: &[u8]) -> Result<(), OnnxError> {
        let opset = proto::OperatorSetIdProto::decode(bytes).map_err(|err| {
            self.malformed(format!(
                "ModelProto.opset_import is not a valid OperatorSetIdProto ({err})"
            ))
        })?;
        if self.found.opsets.len() >= MAX_OPSETS {
            return Err(OnnxError::TooMany {
                what: "opset imports",
                limit: MAX_OPSETS,
            });
        }
        let domain = if opset.domain.is_empty() {
            "ai.onnx".to_owned()
        } else {
            opset.domain
        };
        self.found.opsets.push(Opset {
            domain,
            version: opset.version,
        });
        Ok(())
    }

    fn value_info(&mut self, bytes: &[u8], role: &'static str) -> Result<(), OnnxError> {
        let found = &self.found;
        if found.inputs.len() + found.outputs.len() >= MAX_GRAPH_IO {
            return Err(OnnxError::TooMany {
                what: "graph inputs and outputs",
                limit: MAX_GRAPH_IO,
            });
        }
        let list = if role == "input" {
            &mut self.found.inputs
        } else {
            &mut self.found.outputs
        };
        let invalid = |reason: String| OnnxError::InvalidValueInfo {
            role,
            index: list.len(),
            offset: self.field_start,
            reason,
        };
        let spec = proto::ValueInfoProto::decode(bytes)
            .map_err(|err| format!("not a valid ValueInfoProto ({err})"))
            .and_then(TensorSpec::from_value_info)
            .map_err(invalid)?;
        list.push(spec);
        Ok(())
    }

    /// Back at a field boundary: closes every message that ends here.
    fn field_done(&mut self) -> Result<(), OnnxError> {
        self.state = State::Varint(Reading::Tag);
        while self.stack.last().is_some_and(|frame| frame.end == self.pos) {
            if let Some(frame) = self.stack.pop() {
                self.close(frame)?;
            }
        }
        Ok(())
    }

    fn close(&mut self, frame: Frame) -> Result<(), OnnxError> {
        let tensor = match frame.message {
            Message::Initializer => match &frame.name {
                Some(name) => format!("initializer {name:?}"),
                None => "an unnamed initializer".to_owned(),
            },
            Message::SparseValues => match &frame.name {
                Some(name) => format!("sparse initializer {name:?}"),
                None => "an unnamed sparse initializer".to_owned(),
            },
            Message::SparseIndices => "the indices of a sparse initializer".to_owned(),
            Message::NestedTensor => {
                if !frame.external {
                    return Ok(());
                }
                match &frame.name {
                    Some(name) => format!("tensor {name:?} (in a node attribute or subgraph)"),
                    None => "a tensor in a node attribute or subgraph".to_owned(),
                }
            }
            Message::Model
            | Message::Graph
            | Message::SparseInitializer
            | Message::Node
            | Message::Attribute
            | Message::SubGraph
            | Message::Function
            | Message::TrainingInfo
            | Message::NestedSparse => return Ok(()),
        };
        if frame.external {
            return Err(OnnxError::ExternalData { tensor });
        }
        if let Some(name) = frame.name {
            self.remember_initializer(name)?;
        }
        Ok(())
    }

    fn remember_initializer(&mut self, name: String) -> Result<(), OnnxError> {
        let found = &mut self.found;
        if found.initializers.contains(&name) {
            return Ok(());
        }
        if found.initializers.len() >= MAX_INITIALIZERS {
            return Err(OnnxError::TooMany {
                what: "initializers",
                limit: MAX_INITIALIZERS,
            });
        }
        found.initializer_name_bytes += name.len();
        if found.initializer_name_bytes > MAX_INITIALIZER_NAME_BYTES {
            return Err(OnnxError::TooLarge {
                what: "all initializer names together".to_owned(),
                offset: self.field_start,
                size: found.initializer_name_bytes as u64,
                limit: MAX_INITIALIZER_NAME_BYTES as u64,
            });
        }
        found.initializers.insert(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::super::proto::{
        Dimension, DimensionValue, OptionalTypeProto, TensorShapeProto, TensorTypeProto, TypeProto,
        TypeValue, ValueInfoProto,
    };
    use super::super::{Dim, inspect};
    use super::*;

    // ---- helpers -------------------------------------------------------------------------

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|err| {
            panic!("{path}: {err} (generate it with scripts/gen_fixtures.py)")
        })
    }

    fn scan_in_chunks(bytes: &[u8], size: usize) -> Result<ModelSignature, OnnxError> {
        let mut scanner = OnnxScanner::new();
        for chunk in bytes.chunks(size.max(1)) {
            scanner.feed(chunk)?;
        }
        scanner.finish()
    }

    /// Deterministic xorshift64*, so failures reproduce without a rand dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn varint(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
        out
    }

    fn varint_field(field: u64, value: u64) -> Vec<u8> {
        [varint(field << 3), varint(value)].concat()
    }

    fn bytes_field(field: u64, payload: &[u8]) -> Vec<u8> {
        [
            varint(field << 3 | 2),
            varint(payload.len() as u64),
            payload.to_vec(),
        ]
        .concat()
    }

    fn batch_dims(rest: &[i64]) -> Vec<DimensionValue> {
        std::iter::once(DimensionValue::DimParam("batch".to_owned()))
            .chain(rest.iter().map(|size| DimensionValue::DimValue(*size)))
            .collect()
    }

    fn value_info(name: &str, elem_type: i32, dims: Vec<DimensionValue>) -> Vec<u8> {
        ValueInfoProto {
            name: name.to_owned(),
            r#type: Some(TypeProto {
                value: Some(TypeValue::Tensor(TensorTypeProto {
                    elem_type,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .into_iter()
                            .map(|value| Dimension { value: Some(value) })
                            .collect(),
                    }),
                })),
            }),
        }
        .encode_to_vec()
    }

    /// A TensorProto with `name`, FLOAT data type, `raw` as raw_data, and optionally external.
    fn tensor(name: &str, raw: &[u8], external: bool) -> Vec<u8> {
        let mut out = [
            varint_field(1, raw.len() as u64 / 4),
            varint_field(2, 1),
            bytes_field(8, name.as_bytes()),
            bytes_field(9, raw),
        ]
        .concat();
        if external {
            out.extend(bytes_field(
                13,
                &[bytes_field(1, b"location"), bytes_field(2, b"w.bin")].concat(),
            ));
            out.extend(varint_field(14, 1));
        }
        out
    }

    fn opset(domain: &str, version: u64) -> Vec<u8> {
        bytes_field(
            8,
            &[bytes_field(1, domain.as_bytes()), varint_field(2, version)].concat(),
        )
    }

    fn model(graph: &[u8]) -> Vec<u8> {
        [
            varint_field(1, 7),
            bytes_field(2, b"test"),
            bytes_field(3, b"0.1"),
            bytes_field(7, graph),
            opset("", 17),
            opset("ai.onnx.ml", 3),
        ]
        .concat()
    }

    /// x FP32 [batch,4] and w (an initializer listed as input, as IR < 4 did) → y FP32 [batch,2].
    fn ir3_graph() -> Vec<u8> {
        [
            bytes_field(1, &bytes_field(4, b"Relu")),
            bytes_field(2, b"g"),
            bytes_field(5, &tensor("w", &[0; 32], false)),
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(
                11,
                &value_info(
                    "w",
                    1,
                    vec![DimensionValue::DimValue(4), DimensionValue::DimValue(2)],
                ),
            ),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
        ]
        .concat()
    }

    fn spec(name: &str, datatype: &str, dims: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape: Some(dims),
        }
    }

    fn batch() -> Dim {
        Dim::Symbolic("batch".to_owned())
    }

    fn fixture_signature(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> ModelSignature {
        ModelSignature {
            inputs,
            outputs,
            ir_version: 8,
            opsets: vec![Opset {
                domain: "ai.onnx".to_owned(),
                version: 17,
            }],
            producer: Some("ferry-fixtures 1".to_owned()),
        }
    }

    const SMALL_FIXTURES: [&str; 4] = [
        "mlp.onnx",
        "two_inputs.onnx",
        "int64.onnx",
        "fixed_shape.onnx",
    ];

    // ---- real models ---------------------------------------------------------------------

    #[test]
    fn mlp_fixture_has_a_symbolic_batch_input_and_a_two_class_output() {
        let signature = inspect(&fixture("mlp.onnx")).unwrap();
        assert_eq!(
            signature,
            fixture_signature(
                vec![spec("input", "FP32", vec![batch(), Dim::Fixed(32)])],
                vec![spec("probabilities", "FP32", vec![batch(), Dim::Fixed(2)])],
            )
        );
        assert!(signature.inputs[0].is_dynamic_batch());
    }

    #[test]
    fn two_inputs_fixture_lists_both_inputs_in_graph_order() {
        assert_eq!(
            inspect(&fixture("two_inputs.onnx")).unwrap(),
            fixture_signature(
                vec![
                    spec("x", "FP32", vec![batch(), Dim::Fixed(4)]),
                    spec("scale", "INT64", vec![batch(), Dim::Fixed(1)]),
                ],
                vec![spec("y", "FP32", vec![batch(), Dim::Fixed(4)])],
            )
        );
    }

    #[test]
    fn int64_fixture_reads_integer_tensors_and_not_its_axes_initializer() {
        assert_eq!(
            inspect(&fixture("int64.onnx")).unwrap(),
            fixture_signature(
                vec![spec("ids", "INT64", vec![batch(), Dim::Fixed(8)])],
                vec![spec("sum", "INT64", vec![batch(), Dim::Fixed(1)])],
            )
        );
    }

    #[test]
    fn fixed_shape_fixture_has_only_fixed_dims_and_no_dynamic_batch() {
        let signature = inspect(&fixture("fixed_shape.onnx")).unwrap();
        assert_eq!(
            signature,
            fixture_signature(
                vec![spec("image", "FP32", [1, 3, 4, 4].map(Dim::Fixed).to_vec())],
                vec![spec("pooled", "FP32", vec![Dim::Fixed(1), Dim::Fixed(3)])],
            )
        );
        assert!(!signature.inputs[0].is_dynamic_batch());
    }

    #[test]
    fn fixture_signatures_match_what_the_generator_recorded() {
        let expected: serde_json::Value =
            serde_json::from_slice(&fixture("expected.json")).unwrap();
        for name in SMALL_FIXTURES {
            let signature = inspect(&fixture(name)).unwrap();
            let recorded = &expected["models"][name]["signature"];
            assert_eq!(
                serde_json::json!({"inputs": signature.inputs, "outputs": signature.outputs}),
                *recorded,
                "{name}"
            );
        }
    }

    #[test]
    fn every_fixture_gives_the_same_signature_whatever_the_chunk_size() {
        for name in SMALL_FIXTURES {
            let bytes = fixture(name);
            let whole = inspect(&bytes).unwrap();
            for size in [1, 7, 4096, bytes.len()] {
                assert_eq!(
                    scan_in_chunks(&bytes, size).unwrap(),
                    whole,
                    "{name} in chunks of {size}"
                );
            }
        }
        let synthetic = model(&ir3_graph());
        for size in [1, 2, 3, 7, 4096] {
            assert_eq!(
                scan_in_chunks(&synthetic, size),
                inspect(&synthetic),
                "chunks of {size}"
            );
        }
    }

    // ---- not ONNX ------------------------------------------------------------------------

    #[test]
    fn empty_input_is_not_an_onnx_model() {
        let err = inspect(&[]).unwrap_err();
        assert_eq!(err, OnnxError::NotOnnx("the file is empty".to_owned()));
        assert_eq!(err.to_string(), "not an ONNX model: the file is empty");
        let mut scanner = OnnxScanner::new();
        scanner.feed(&[]).unwrap();
        scanner.feed(&[]).unwrap();
        assert_eq!(scanner.finish().unwrap_err(), err);
    }

    #[test]
    fn text_is_not_an_onnx_model() {
        for text in [
            "hello world, this is not a model\n",
            "{\"inputs\": [1, 2, 3]}",
            "ir_version: 8\ngraph { }\n",
        ] {
            let err = inspect(text.as_bytes()).unwrap_err();
            assert!(
                err.to_string().starts_with("not an ONNX model")
                    || err.to_string().starts_with("truncated"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn a_png_header_is_not_an_onnx_model() {
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00";
        assert!(inspect(png).is_err());
    }

    #[test]
    fn random_garbage_is_an_error_not_a_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let len = rng.below(600);
            let bytes = rng.bytes(len);
            assert!(inspect(&bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn groups_and_invalid_wire_types_are_refused() {
        let err = inspect(&[0x0b]).unwrap_err();
        assert!(
            err.to_string().contains("protobuf group (wire type 3)"),
            "{err}"
        );
        let err = inspect(&[0x0f]).unwrap_err();
        assert!(err.to_string().contains("invalid wire type 7"), "{err}");
        let err = inspect(&[0x0a, 0x00]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not an ONNX model: ModelProto.ir_version has wire type 2 (length-delimited), expected varint (at byte 0)"
        );
        let err = inspect(&[0x08, 0x08, 0x38, 0x00]).unwrap_err();
        assert!(
            err.to_string().contains("ModelProto.graph has wire type 0"),
            "{err}"
        );
        let err = inspect(&[0x00]).unwrap_err();
        assert!(
            err.to_string().contains("invalid protobuf field number 0"),
            "{err}"
        );
    }

    #[test]
    fn varints_longer_than_64_bits_are_refused() {
        let err = inspect(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ])
        .unwrap_err();
        assert_eq!(
            err,
            OnnxError::Malformed {
                offset: 0,
                reason: "a varint is longer than 64 bits".to_owned()
            }
        );
        // The largest 10-byte varint is fine (an ir_version of -1), and refused for what it means.
        let err = inspect(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("truncated") || err.to_string().contains("ir_version"),
            "{err}"
        );
    }

    #[test]
    fn models_missing_an_ir_version_graph_output_or_opset_are_refused() {
        let graph = ir3_graph();
        let without = |skip: usize| -> Vec<u8> {
            let parts = [varint_field(1, 7), bytes_field(7, &graph), opset("", 17)];
            parts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .flat_map(|(_, p)| p.clone())
                .collect()
        };
        assert_eq!(
            inspect(&without(0)).unwrap_err().to_string(),
            "not an ONNX model: ModelProto.ir_version is missing"
        );
        assert_eq!(
            inspect(&without(1)).unwrap_err().to_string(),
            "not an ONNX model: the model has no graph (ModelProto.graph)"
        );
        assert_eq!(
            inspect(&without(2)).unwrap_err().to_string(),
            "not an ONNX model: the model imports no operator set (ModelProto.opset_import)"
        );
        let no_outputs = model(&bytes_field(11, &value_info("x", 1, batch_dims(&[4]))));
        assert_eq!(
            inspect(&no_outputs).unwrap_err().to_string(),
            "not an ONNX model: the graph declares no outputs"
        );
        let mut zero_ir = model(&graph);
        zero_ir[1] = 0;
        assert!(
            inspect(&zero_ir)
                .unwrap_err()
                .to_string()
                .contains("ir_version is 0")
        );
    }

    // ---- truncation and bounds -----------------------------------------------------------

    #[test]
    fn every_truncated_prefix_of_a_model_is_an_error() {
        // Each ends with its only opset import, the last field exporters write (graph 7, opset 8).
        let synthetic = [
            varint_field(1, 7),
            bytes_field(7, &ir3_graph()),
            opset("", 17),
        ]
        .concat();
        for bytes in [
            fixture("two_inputs.onnx"),
            fixture("int64.onnx"),
            fixture("fixed_shape.onnx"),
            synthetic,
        ] {
            for len in 0..bytes.len() {
                let prefix = &bytes[..len];
                match inspect(prefix) {
                    Ok(signature) => panic!(
                        "prefix of {len}/{} bytes accepted: {signature:?}",
                        bytes.len()
                    ),
                    Err(OnnxError::Truncated { offset, .. }) => assert_eq!(offset, len as u64),
                    Err(OnnxError::NotOnnx(_)) => {}
                    Err(other) => panic!("prefix of {len} bytes: unexpected {other}"),
                }
            }
        }
    }

    #[test]
    fn a_cut_between_two_opset_imports_is_the_one_truncation_the_bytes_cannot_show() {
        // Protobuf has no end marker: a model cut right after a complete top-level field parses as
        // a complete model. Only the transport (Content-Length, multipart boundary) can tell.
        let bytes = model(&ir3_graph());
        let cut = bytes.len() - opset("ai.onnx.ml", 3).len();
        assert_eq!(inspect(&bytes[..cut]).unwrap().opsets.len(), 1);
        assert_eq!(inspect(&bytes).unwrap().opsets.len(), 2);
    }

    #[test]
    fn every_truncated_prefix_of_the_mlp_is_an_error() {
        let bytes = fixture("mlp.onnx");
        for len in 0..bytes.len() {
            assert!(
                inspect(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn truncation_inside_weights_says_where_and_how_much_is_missing() {
        let bytes = model(&ir3_graph());
        let cut = bytes.windows(4).position(|w| w == [0; 4]).unwrap() + 10;
        assert_eq!(
            inspect(&bytes[..cut]).unwrap_err().to_string(),
            format!(
                "truncated ONNX model: the data ends at byte {cut}, inside TensorProto.raw_data (22 more bytes expected)"
            )
        );
    }

    #[test]
    fn a_field_longer_than_its_enclosing_message_is_refused() {
        // The graph says it is 10 bytes long, its first input says 100.
        let input = bytes_field(11, &value_info("x", 1, batch_dims(&[4])));
        let mut graph = [
            varint(7 << 3 | 2),
            varint(10),
            varint(11 << 3 | 2),
            varint(100),
        ]
        .concat();
        graph.extend_from_slice(&input[..8]);
        let bytes = [varint_field(1, 8), graph].concat();
        assert_eq!(
            inspect(&bytes).unwrap_err(),
            OnnxError::Malformed {
                offset: 4,
                reason: "GraphProto.input declares 100 bytes, but only 8 remain in its GraphProto"
                    .to_owned()
            }
        );
        // A fixed64 field needs 8 bytes inside a tensor that has 3 left.
        let tensor = [varint(1 << 3 | 1), vec![0; 2]].concat();
        let graph = bytes_field(5, &tensor);
        let err = inspect(&[varint_field(1, 8), bytes_field(7, &graph)].concat()).unwrap_err();
        assert!(
            err.to_string()
                .contains("declares 8 bytes, but only 2 remain in its TensorProto"),
            "{err}"
        );
        // A varint running over the end of the message.
        let graph = [
            bytes_field(5, &[0x10, 0x80]),
            bytes_field(12, &value_info("y", 1, vec![])),
        ]
        .concat();
        let err = inspect(&[varint_field(1, 8), bytes_field(7, &graph)].concat()).unwrap_err();
        assert!(
            err.to_string()
                .contains("runs past the end of its enclosing TensorProto"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_input_is_refused_before_its_bytes_arrive() {
        let head = [
            varint_field(1, 8),
            varint(7 << 3 | 2),
            varint(1 << 30),
            varint(11 << 3 | 2),
            varint(2 << 20),
        ]
        .concat();
        let mut scanner = OnnxScanner::new();
        let err = scanner.feed(&head).unwrap_err();
        assert_eq!(
            err,
            OnnxError::TooLarge {
                what: "GraphProto.input".to_owned(),
                offset: 8,
                size: 2 << 20,
                limit: MAX_VALUE_INFO
            }
        );
        assert!(scanner.buf.capacity() == 0);
    }

    #[test]
    fn a_huge_length_prefix_is_skipped_without_allocating() {
        let mut scanner = OnnxScanner::new();
        scanner.feed(&varint_field(1, 8)).unwrap();
        scanner
            .feed(&[varint(99 << 3 | 2), varint(1 << 40)].concat())
            .unwrap();
        scanner.feed(&[7; 1000]).unwrap();
        assert_eq!(scanner.buf.capacity(), 0);
        let err = scanner.finish().unwrap_err();
        assert!(
            err.to_string()
                .contains("ModelProto field 99 (1099511626776 more bytes expected)"),
            "{err}"
        );
        // Lengths that overflow the offset are refused, not wrapped.
        let err = inspect(&[varint(99 << 3 | 2), varint(u64::MAX)].concat()).unwrap_err();
        assert!(
            err.to_string()
                .contains("declares 18446744073709551615 bytes"),
            "{err}"
        );
    }

    #[test]
    fn weights_are_skipped_without_being_buffered() {
        let weights = vec![0x5a; 8 << 20];
        let graph = [
            bytes_field(5, &tensor("w", &weights, false)),
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
        ]
        .concat();
        let bytes = model(&graph);
        let mut scanner = OnnxScanner::new();
        for chunk in bytes.chunks(64 << 10) {
            scanner.feed(chunk).unwrap();
            assert!(scanner.buf.capacity() <= KEEP_BUFFER);
        }
        assert_eq!(scanner.finish().unwrap().inputs[0].name, "x");
    }

    #[test]
    fn absurdly_nested_input_types_are_refused_not_recursed() {
        let mut ty = TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type: 1,
                shape: None,
            })),
        };
        for _ in 0..200 {
            ty = TypeProto {
                value: Some(TypeValue::Optional(OptionalTypeProto {
                    elem_type: Some(Box::new(ty)),
                })),
            };
        }
        let deep = ValueInfoProto {
            name: "deep".to_owned(),
            r#type: Some(ty),
        }
        .encode_to_vec();
        let graph = [bytes_field(12, &deep)].concat();
        let err = inspect(&model(&graph)).unwrap_err();
        assert!(
            matches!(
                &err,
                OnnxError::InvalidValueInfo {
                    role: "output",
                    index: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut scanner = OnnxScanner::new();
        let err = scanner.feed(&[0x0f]).unwrap_err();
        assert_eq!(scanner.feed(&model(&ir3_graph())).unwrap_err(), err);
        assert_eq!(scanner.finish().unwrap_err(), err);
    }

    // ---- ONNX semantics ------------------------------------------------------------------

    #[test]
    fn a_graph_input_that_names_an_initializer_is_not_a_real_input() {
        let signature = inspect(&model(&ir3_graph())).unwrap();
        assert_eq!(
            signature,
            ModelSignature {
                inputs: vec![spec("x", "FP32", vec![batch(), Dim::Fixed(4)])],
                outputs: vec![spec("y", "FP32", vec![batch(), Dim::Fixed(2)])],
                ir_version: 7,
                opsets: vec![
                    Opset {
                        domain: "ai.onnx".to_owned(),
                        version: 17
                    },
                    Opset {
                        domain: "ai.onnx.ml".to_owned(),
                        version: 3
                    },
                ],
                producer: Some("test 0.1".to_owned()),
            }
        );
    }

    #[test]
    fn an_initializer_after_the_inputs_still_hides_its_input() {
        let graph = [
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(11, &value_info("w", 1, vec![])),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
            bytes_field(5, &tensor("w", &[0; 4], false)),
        ]
        .concat();
        let names: Vec<String> = inspect(&model(&graph))
            .unwrap()
            .inputs
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn a_sparse_initializer_hides_the_input_named_by_its_values() {
        let sparse = [
            bytes_field(1, &tensor("s", &[0; 8], false)),
            bytes_field(
                2,
                &[
                    varint_field(1, 2),
                    varint_field(2, 7),
                    bytes_field(9, &[0; 16]),
                ]
                .concat(),
            ),
            varint_field(3, 10),
        ]
        .concat();
        let graph = [
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(11, &value_info("s", 1, vec![DimensionValue::DimValue(10)])),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
            bytes_field(15, &sparse),
        ]
        .concat();
        let names: Vec<String> = inspect(&model(&graph))
            .unwrap()
            .inputs
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn an_initializer_with_external_data_is_refused_with_a_hint_to_embed_it() {
        let graph = [
            bytes_field(5, &tensor("fc1.weight", &[], true)),
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
        ]
        .concat();
        let err = inspect(&model(&graph)).unwrap_err();
        assert_eq!(
            err,
            OnnxError::ExternalData {
                tensor: "initializer \"fc1.weight\"".to_owned()
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("external-data models are not supported"),
            "{message}"
        );
        assert!(
            message.contains("onnx.save_model(model, path, save_as_external_data=False)"),
            "{message}"
        );
        // Sparse initializers too.
        let sparse = bytes_field(15, &bytes_field(1, &tensor("s", &[], true)));
        let err = inspect(&model(&[sparse, graph[..].to_vec()].concat())).unwrap_err();
        assert_eq!(
            err,
            OnnxError::ExternalData {
                tensor: "sparse initializer \"s\"".to_owned()
            }
        );
    }

    #[test]
    fn external_tensors_are_refused_wherever_they_hide_and_embedded_ones_anywhere_pass() {
        let io = [
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
        ]
        .concat();
        let constant = |external: bool| {
            // Constant's `value` attribute (AttributeProto.t = 5) in a node (GraphProto.node = 1).
            let attribute = [
                bytes_field(1, b"value"),
                bytes_field(5, &tensor("c", &[0; 8], external)),
            ]
            .concat();
            [bytes_field(4, b"Constant"), bytes_field(5, &attribute)].concat()
        };
        // An `If` whose then-branch (AttributeProto.g = 6) holds a Constant, or an initializer.
        let if_node = |body: &[u8]| {
            let attribute = [bytes_field(1, b"then_branch"), bytes_field(6, body)].concat();
            [bytes_field(4, b"If"), bytes_field(5, &attribute)].concat()
        };
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            (
                "Constant node",
                model(&[bytes_field(1, &constant(true)), io.clone()].concat()),
                model(&[bytes_field(1, &constant(false)), io.clone()].concat()),
            ),
            (
                "subgraph's node",
                model(
                    &[
                        bytes_field(1, &if_node(&bytes_field(1, &constant(true)))),
                        io.clone(),
                    ]
                    .concat(),
                ),
                model(
                    &[
                        bytes_field(1, &if_node(&bytes_field(1, &constant(false)))),
                        io.clone(),
                    ]
                    .concat(),
                ),
            ),
            (
                "subgraph's initializer",
                model(
                    &[
                        bytes_field(1, &if_node(&bytes_field(5, &tensor("i", &[0; 8], true)))),
                        io.clone(),
                    ]
                    .concat(),
                ),
                model(
                    &[
                        bytes_field(1, &if_node(&bytes_field(5, &tensor("i", &[0; 8], false)))),
                        io.clone(),
                    ]
                    .concat(),
                ),
            ),
            (
                "function's node",
                [
                    model(&io),
                    bytes_field(25, &bytes_field(7, &constant(true))),
                ]
                .concat(),
                [
                    model(&io),
                    bytes_field(25, &bytes_field(7, &constant(false))),
                ]
                .concat(),
            ),
            (
                "training graph",
                [
                    model(&io),
                    bytes_field(
                        20,
                        &bytes_field(1, &bytes_field(5, &tensor("t", &[], true))),
                    ),
                ]
                .concat(),
                [
                    model(&io),
                    bytes_field(
                        20,
                        &bytes_field(1, &bytes_field(5, &tensor("t", &[0; 8], false))),
                    ),
                ]
                .concat(),
            ),
        ];
        for (place, external, embedded) in cases {
            let err = inspect(&external).expect_err(place);
            assert!(
                matches!(err, OnnxError::ExternalData { .. }),
                "{place}: {err}"
            );
            let signature = inspect(&embedded).unwrap_or_else(|e| panic!("{place}: {e}"));
            // A subgraph's tensors never count as the model's initializers or inputs.
            assert_eq!(signature.inputs.len(), 1, "{place}");
            assert_eq!(signature.inputs[0].name, "x", "{place}");
        }
    }

    #[test]
    fn subgraphs_nested_too_deep_are_refused() {
        let mut graph = bytes_field(1, &[bytes_field(4, b"Identity")].concat());
        for _ in 0..100 {
            let attribute = [bytes_field(1, b"body"), bytes_field(6, &graph)].concat();
            graph = bytes_field(
                1,
                &[bytes_field(4, b"Loop"), bytes_field(5, &attribute)].concat(),
            );
        }
        let err = inspect(&model(&graph)).unwrap_err();
        assert!(err.to_string().contains("nested more than"), "{err}");
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let noise = [
            varint_field(1000, 42),
            [varint(1001 << 3 | 1), vec![1; 8]].concat(),
            [varint(1002 << 3 | 5), vec![2; 4]].concat(),
            bytes_field(1003, b"unknown"),
        ]
        .concat();
        let tensor_with_noise =
            [noise.clone(), tensor("w", &[0; 32], false), noise.clone()].concat();
        let graph = [
            noise.clone(),
            bytes_field(5, &tensor_with_noise),
            bytes_field(13, &value_info("hidden", 1, vec![])),
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(11, &value_info("w", 1, vec![])),
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
            noise.clone(),
        ]
        .concat();
        let bytes = [
            bytes_field(
                14,
                &[bytes_field(1, b"key"), bytes_field(2, b"value")].concat(),
            ),
            // Training info and functions are scanned for external tensors; these hold none.
            bytes_field(20, &bytes_field(2, b"binding")),
            bytes_field(25, &bytes_field(1, b"a function")),
            bytes_field(6, b"doc"),
            model(&graph),
            noise,
        ]
        .concat();
        assert_eq!(
            inspect(&bytes).unwrap(),
            inspect(&model(&ir3_graph())).unwrap()
        );
    }

    #[test]
    fn fields_may_come_in_any_order() {
        let graph = [
            bytes_field(12, &value_info("y", 1, batch_dims(&[2]))),
            bytes_field(11, &value_info("x", 1, batch_dims(&[4]))),
            bytes_field(11, &value_info("w", 1, vec![])),
            bytes_field(5, &tensor("w", &[0; 32], false)),
        ]
        .concat();
        let bytes = [
            opset("", 17),
            opset("ai.onnx.ml", 3),
            bytes_field(7, &graph),
            bytes_field(3, b"0.1"),
            bytes_field(2, b"test"),
            varint_field(1, 7),
        ]
        .concat();
        assert_eq!(
            inspect(&bytes).unwrap(),
            inspect(&model(&ir3_graph())).unwrap()
        );
    }

    #[test]
    fn producer_is_name_and_version_trimmed_or_none() {
        let base = |name: &[u8], version: &[u8]| {
            [
                varint_field(1, 8),
                bytes_field(2, name),
                bytes_field(3, version),
                bytes_field(7, &ir3_graph()),
                bytes_field(8, &varint_field(2, 17)),
            ]
            .concat()
        };
        assert_eq!(inspect(&base(b"", b"")).unwrap().producer, None);
        assert_eq!(
            inspect(&base(b"pytorch", b"")).unwrap().producer.as_deref(),
            Some("pytorch")
        );
        assert_eq!(
            inspect(&base(b"", b"2.5")).unwrap().producer.as_deref(),
            Some("2.5")
        );
        let long = vec![b'a'; 5000];
        assert_eq!(
            inspect(&base(&long, b"1")).unwrap().producer.as_deref(),
            Some("1")
        );
    }

    // ---- fuzz ----------------------------------------------------------------------------

    fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
        let mut bytes = original.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(7) {
                0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                1 if at < bytes.len() => bytes[at] = rng.next() as u8,
                2 => bytes.insert(at, rng.next() as u8),
                3 if at < bytes.len() => {
                    bytes.remove(at);
                }
                4 => bytes.truncate(at),
                5 => {
                    // Plant a long varint: lengths near limits and overflows.
                    let value = [u64::MAX, 1 << 31, (1 << 20) + 1, 4097, rng.next()][rng.below(5)];
                    bytes.splice(at..at, varint(value));
                }
                _ => {
                    let end = (at + rng.below(64)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len() + 1);
                    bytes.splice(to..to, copy);
                }
            }
        }
        bytes
    }

    #[test]
    fn random_mutations_of_valid_models_never_panic_and_do_not_depend_on_chunking() {
        let originals = [
            model(&ir3_graph()),
            fixture("two_inputs.onnx"),
            fixture("fixed_shape.onnx"),
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut accepted = 0;
        for round in 0..4000 {
            let original = &originals[round % originals.len()];
            let bytes = mutate(&mut rng, original);
            let whole = inspect(&bytes);
            let chunked = {
                let mut scanner = OnnxScanner::new();
                let mut rest = &bytes[..];
                let mut result = Ok(());
                while !rest.is_empty() && result.is_ok() {
                    let (chunk, tail) = rest.split_at(rng.below(rest.len()) + 1);
                    result = scanner.feed(chunk);
                    rest = tail;
                }
                result.and_then(|()| scanner.finish())
            };
            assert_eq!(chunked, whole, "round {round}: {bytes:?}");
            if let Ok(signature) = whole {
                accepted += 1;
                assert!(!signature.outputs.is_empty() && signature.ir_version > 0);
            }
        }
        // Some mutations hit bytes that do not matter (names, weights): the accepting path is exercised too.
        assert!(accepted > 100, "only {accepted} mutations were accepted");
    }
}
