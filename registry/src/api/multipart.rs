//! `multipart/form-data` request bodies, read part by part without copying the parts' bytes.
//!
//! An upload is one large part (the model) and a small one (metadata). A general multipart
//! reader (`multer`, behind axum's `Multipart`) copies every received chunk into one buffer and
//! hands out pieces of it; on a 500 MiB upload that copy and its page faults were ~15% of the
//! registry's CPU. Here a part's data is handed out as slices of the chunks hyper received
//! ([`Bytes::slice`]): only the few bytes at a chunk's end that might begin the next boundary
//! are held back (copied) until the next chunk says whether they do, and part headers (small,
//! bounded) are copied when they straddle two chunks.
//!
//! [`Parser`] is the pure core (fed chunks, yields events); [`MultipartBody`] is the extractor
//! that feeds it from the request body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::RequestExt;
use axum::body::BodyDataStream;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use memchr::memmem;

use crate::error::Error;

/// Longest boundary accepted (RFC 2046 allows 70 characters; clients stay well under 100).
const MAX_BOUNDARY: usize = 200;
/// Most bytes before the first boundary (clients send none).
const MAX_PREAMBLE: usize = 64 * 1024;
/// Most bytes of one part's headers.
const MAX_HEADERS: usize = 16 * 1024;

/// The headers of one part that the registry reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartHead {
    /// `name` from `Content-Disposition: form-data; name="…"`, if present.
    pub name: Option<String>,
}

/// What [`Parser::next_event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its data follows as [`Event::Data`] until the next `Part` or `End`.
    Part(PartHead),
    /// Some of the current part's bytes (never empty).
    Data(Bytes),
    /// The closing boundary: no more parts.
    End,
}

/// Where the parser is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first boundary; the bytes seen so far.
    Preamble(usize),
    /// Just after a boundary: `--` (the end) or a part's headers follow.
    AfterBoundary,
    /// Inside a part's header block.
    Headers,
    /// Inside a part's data.
    Data,
    /// After the closing boundary; whatever follows is ignored.
    Done,
}

/// Splits a `multipart/form-data` body into parts, fed one chunk at a time.
pub struct Parser {
    /// `\r\n--` and the boundary: what ends a part's data.
    delimiter: memmem::Finder<'static>,
    state: State,
    /// Bytes that cannot be decided yet: a possible start of the delimiter at a chunk's end,
    /// or the start of a header block. Small and bounded.
    held: BytesMut,
    /// The unread rest of the last chunk.
    input: Bytes,
}

impl Parser {
    /// A parser for parts separated by `boundary` (the `Content-Type` parameter).
    ///
    /// # Errors
    /// A boundary that is empty or longer than 200 bytes.
    pub fn new(boundary: &str) -> Result<Self, String> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
            return Err(format!(
                "the multipart boundary must be 1 to {MAX_BOUNDARY} bytes, not {}",
                boundary.len()
            ));
        }
        let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        Ok(Parser {
            delimiter: memmem::Finder::new(&delimiter).into_owned(),
            state: State::Preamble(0),
            // The body may start with the boundary itself; as if a line break preceded it.
            held: BytesMut::from(&b"\r\n"[..]),
            input: Bytes::new(),
        })
    }

    /// Gives the parser the body's next chunk; call only after [`Parser::next_event`] said `None`.
    pub fn push(&mut self, chunk: Bytes) {
        debug_assert!(self.input.is_empty(), "push before the last chunk was read");
        self.input = chunk;
    }

    /// The next event, or `None` when the parser needs the next chunk.
    ///
    /// # Errors
    /// A body that does not follow the multipart syntax, saying where.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        loop {
            match self.state {
                State::Preamble(seen) => match self.scan_data()? {
                    Scan::Data(bytes) => {
                        let seen = seen + bytes.len();
                        if seen > MAX_PREAMBLE {
                            return Err(format!(
                                "more than {MAX_PREAMBLE} bytes before the first boundary"
                            ));
                        }
                        self.state = State::Preamble(seen);
                    }
                    Scan::Delimiter(bytes) => {
                        if seen + bytes.len() > MAX_PREAMBLE {
                            return Err(format!(
                                "more than {MAX_PREAMBLE} bytes before the first boundary"
                            ));
                        }
                        self.state = State::AfterBoundary;
                    }
                    Scan::NeedMore => return Ok(None),
                },
                State::AfterBoundary => {
                    self.fill_held(2);
                    if self.held.len() < 2 {
                        return Ok(None);
                    }
                    if self.held.starts_with(b"--") {
                        self.state = State::Done;
                        self.held.clear();
                        self.input.clear();
                        return Ok(Some(Event::End));
                    }
                    self.state = State::Headers;
                }
                State::Headers => {
                    let Some(block) = self.take_until(b"\r\n\r\n", MAX_HEADERS)? else {
                        return Ok(None);
                    };
                    self.state = State::Data;
                    return parse_headers(&block).map(|head| Some(Event::Part(head)));
                }
                State::Data => match self.scan_data()? {
                    Scan::Data(bytes) => return Ok(Some(Event::Data(bytes))),
                    Scan::Delimiter(bytes) => {
                        self.state = State::AfterBoundary;
                        if !bytes.is_empty() {
                            return Ok(Some(Event::Data(bytes)));
                        }
                    }
                    Scan::NeedMore => return Ok(None),
                },
                State::Done => {
                    self.input.clear();
                    return Ok(Some(Event::End));
                }
            }
        }
    }

    /// What the body's end means here: fine after the closing boundary, else a cut-off body.
    ///
    /// # Errors
    /// The body ended before the closing boundary.
    pub fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            State::Preamble(_) => Err("the body ended before the first boundary".into()),
            State::AfterBoundary | State::Headers => {
                Err("the body ended inside a part's headers".into())
            }
            State::Data => Err("the body ended inside a part, before the closing boundary".into()),
        }
    }

    /// Data up to the next delimiter, as slices of the input where possible.
    fn scan_data(&mut self) -> Result<Scan, String> {
        let dlen = self.delimiter.needle().len();
        if !self.held.is_empty() {
            if self.input.is_empty() {
                return Ok(Scan::NeedMore);
            }
            // A delimiter starting in the held bytes ends within `dlen` bytes of the input.
            let old = self.held.len();
            let take = self.input.len().min(dlen);
            let mut window = BytesMut::with_capacity(old + take);
            window.extend_from_slice(&self.held);
            window.extend_from_slice(&self.input[..take]);
            if let Some(p) = self.delimiter.find(&window) {
                self.input.advance(p + dlen - old);
                self.held.clear();
                return Ok(Scan::Delimiter(window.split_to(p).freeze()));
            }
            if take == dlen {
                // No delimiter starts in the held bytes: they are data.
                return Ok(Scan::Data(self.held.split().freeze()));
            }
            // The whole input is shorter than a delimiter: hold it too and decide later.
            self.input.clear();
            let keep = self.partial_delimiter_at_end(&window);
            self.held = window.split_off(window.len() - keep);
            return Ok(if window.is_empty() {
                Scan::NeedMore
            } else {
                Scan::Data(window.freeze())
            });
        }
        if self.input.is_empty() {
            return Ok(Scan::NeedMore);
        }
        if let Some(p) = self.delimiter.find(&self.input) {
            let data = self.input.split_to(p);
            self.input.advance(dlen);
            return Ok(Scan::Delimiter(data));
        }
        let keep = self.partial_delimiter_at_end(&self.input);
        let data = self.input.split_to(self.input.len() - keep);
        self.held.extend_from_slice(&self.input);
        self.input.clear();
        Ok(if data.is_empty() {
            Scan::NeedMore
        } else {
            Scan::Data(data)
        })
    }

    /// The length of the longest end of `bytes` that is a proper start of the delimiter.
    fn partial_delimiter_at_end(&self, bytes: &[u8]) -> usize {
        let delimiter = self.delimiter.needle();
        let from = bytes.len().saturating_sub(delimiter.len() - 1);
        let tail = &bytes[from..];
        // The delimiter starts with `\r`: only a `\r` can start a partial one; the first match
        // is the longest.
        memchr::memchr_iter(b'\r', tail)
            .map(|i| &tail[i..])
            .find(|end| delimiter.starts_with(end))
            .map_or(0, <[u8]>::len)
    }

    /// Moves input bytes into `held` until it has `n`.
    fn fill_held(&mut self, n: usize) {
        let take = n.saturating_sub(self.held.len()).min(self.input.len());
        self.held.extend_from_slice(&self.input[..take]);
        self.input.advance(take);
    }

    /// The bytes before `pattern` (which is consumed), or `None` when more input is needed.
    /// `held` never contains `pattern` between calls.
    fn take_until(&mut self, pattern: &[u8], limit: usize) -> Result<Option<Bytes>, String> {
        if self.held.is_empty()
            && let Some(p) = memmem::find(&self.input, pattern)
        {
            let before = self.input.split_to(p);
            self.input.advance(pattern.len());
            return Ok(Some(before));
        }
        let old = self.held.len();
        let room = (limit + pattern.len()).saturating_sub(old);
        let take = room.min(self.input.len());
        self.held.extend_from_slice(&self.input[..take]);
        // The pattern may straddle the old held bytes and the new ones.
        let from = old.saturating_sub(pattern.len() - 1);
        if let Some(p) = memmem::find(&self.held[from..], pattern).map(|p| p + from) {
            self.input.advance(p + pattern.len() - old);
            let before = self.held.split_to(p).freeze();
            self.held.clear();
            return Ok(Some(before));
        }
        self.input.advance(take);
        if self.held.len() >= limit + pattern.len() {
            return Err(format!("a part's headers are longer than {limit} bytes"));
        }
        Ok(None)
    }
}

/// What [`Parser::scan_data`] found.
enum Scan {
    /// Data (never empty); no delimiter yet.
    Data(Bytes),
    /// The data before a delimiter (maybe empty); the delimiter was consumed.
    Delimiter(Bytes),
    NeedMore,
}

/// The header block after a boundary: transport padding, a line break, then header lines.
fn parse_headers(block: &[u8]) -> Result<PartHead, String> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split("\r\n");
    let padding = lines.next().unwrap_or_default();
    if !padding.bytes().all(|b| b == b' ' || b == b'\t') {
        return Err("unexpected bytes after a boundary (expected a line break)".into());
    }
    let mut head = PartHead::default();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "a part's header line has no `:`: {}",
                ferry_api::names::printable(line)
            ));
        };
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            head.name = disposition_param(value, "name");
        }
    }
    Ok(head)
}

/// A parameter of a `Content-Disposition` value (`form-data; name="model"; filename="a;b"`),
/// quoted or not.
fn disposition_param(value: &str, wanted: &str) -> Option<String> {
    let mut rest = value.split_once(';')?.1;
    loop {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let after = after.trim_start();
        let (param, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut param = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => param.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => param.push(c),
                }
            }
            let after_quote = &quoted[end?..];
            (param, after_quote.split_once(';').map(|(_, n)| n))
        } else {
            let (token, next) = match after.split_once(';') {
                Some((token, next)) => (token, Some(next)),
                None => (after, None),
            };
            (token.trim().to_owned(), next)
        };
        if key.eq_ignore_ascii_case(wanted) {
            return Some(param);
        }
        rest = next?;
    }
}

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "the Content-Type is {}, not multipart/form-data",
            ferry_api::names::printable(essence)
        ));
    }
    params
        .filter_map(|param| param.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| "the multipart/form-data Content-Type has no boundary".into())
}

/// A `multipart/form-data` request body, read part by part ([`MultipartBody::next_part`], then
/// [`MultipartBody::next_chunk`] or [`MultipartBody::part_data`]). The body is bounded by the
/// route's `DefaultBodyLimit`.
pub struct MultipartBody {
    parser: Parser,
    body: BodyDataStream,
    /// A part's head read while looking for the end of the previous part's data.
    next_head: Option<PartHead>,
    /// No more parts: the closing boundary was read.
    ended: bool,
}

impl<S: Send + Sync> FromRequest<S> for MultipartBody {
    type Rejection = Error;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let media = |why: String| {
            Error::UnsupportedMediaType(format!(
                "expected a multipart/form-data body with parts `model` and `metadata`: {why}"
            ))
        };
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .ok_or_else(|| media("the request has no Content-Type".into()))?
            .to_str()
            .map_err(|_| media("the Content-Type is not printable ASCII".into()))?;
        let boundary = boundary(content_type).map_err(media)?;
        let parser = Parser::new(&boundary).map_err(media)?;
        Ok(MultipartBody {
            parser,
            body: req.with_limited_body().into_body().into_data_stream(),
            next_head: None,
            ended: false,
        })
    }
}

impl MultipartBody {
    /// The next part's head, skipping what is left of the current part; `None` after the last.
    ///
    /// # Errors
    /// 400 for a malformed or cut-off body, 413 past the route's body limit.
    pub async fn next_part(&mut self) -> Result<Option<PartHead>, Error> {
        if let Some(head) = self.next_head.take() {
            return Ok(Some(head));
        }
        while !self.ended {
            if let Event::Part(head) = std::future::poll_fn(|cx| self.poll_event(cx)).await? {
                return Ok(Some(head));
            }
        }
        Ok(None)
    }

    /// The current part's next bytes; `None` at its end.
    ///
    /// # Errors
    /// As [`MultipartBody::next_part`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        std::future::poll_fn(|cx| self.poll_chunk(cx))
            .await
            .transpose()
    }

    /// The current part's bytes as a stream.
    pub fn part_data(&mut self) -> impl Stream<Item = Result<Bytes, Error>> + Send + Unpin + '_ {
        futures::stream::poll_fn(|cx| self.poll_chunk(cx))
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        if self.next_head.is_some() || self.ended {
            return Poll::Ready(None);
        }
        Poll::Ready(match ready!(self.poll_event(cx)) {
            Ok(Event::Data(bytes)) => Some(Ok(bytes)),
            Ok(Event::Part(head)) => {
                self.next_head = Some(head);
                None
            }
            Ok(Event::End) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, Error>> {
        loop {
            match self.parser.next_event().map_err(malformed)? {
                Some(event) => {
                    self.ended = event == Event::End;
                    return Poll::Ready(Ok(event));
                }
                None => match ready!(Pin::new(&mut self.body).poll_next(cx)) {
                    Some(Ok(chunk)) => self.parser.push(chunk),
                    Some(Err(e)) => return Poll::Ready(Err(read_failed(&e))),
                    None => {
                        self.parser.finish().map_err(malformed)?;
                        self.ended = true;
                        return Poll::Ready(Ok(Event::End));
                    }
                },
            }
        }
    }
}

fn malformed(why: String) -> Error {
    Error::BadRequest(format!(
        "the multipart body is malformed or was cut off: {why}"
    ))
}

/// A body that could not be read: past the route's limit (413), or cut off.
fn read_failed(e: &axum::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return Error::PayloadTooLarge(format!("the upload is too large: {err}"));
        }
        source = err.source();
    }
    malformed(format!("reading the body failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "------------------------d74496d66958873e";

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, data) in parts {
            body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    /// A part's name and bytes.
    type Part = (Option<String>, Vec<u8>);

    /// The parts, feeding `chunks` in order.
    fn parse(chunks: &[&[u8]]) -> Result<Vec<Part>, String> {
        let mut parser = Parser::new(BOUNDARY)?;
        let mut parts: Vec<Part> = Vec::new();
        let mut chunks = chunks.iter();
        loop {
            match parser.next_event()? {
                Some(Event::Part(head)) => parts.push((head.name, Vec::new())),
                Some(Event::Data(bytes)) => {
                    assert!(!bytes.is_empty(), "empty data event");
                    parts
                        .last_mut()
                        .ok_or("data before a part")?
                        .1
                        .extend_from_slice(&bytes);
                }
                Some(Event::End) => return Ok(parts),
                None => match chunks.next() {
                    Some(chunk) => parser.push(Bytes::copy_from_slice(chunk)),
                    None => {
                        parser.finish()?;
                        return Ok(parts);
                    }
                },
            }
        }
    }

    fn owned(parts: &[(&str, &[u8])]) -> Vec<Part> {
        parts
            .iter()
            .map(|(n, d)| (Some((*n).to_owned()), d.to_vec()))
            .collect()
    }

    /// Data that looks like the delimiter's beginning in every way short of being it.
    fn tricky_data() -> Vec<u8> {
        let mut data = Vec::new();
        for k in 1..BOUNDARY.len() + 4 {
            data.extend_from_slice(&format!("\r\n--{BOUNDARY}").as_bytes()[..k]);
            data.push(b'x');
        }
        data.extend_from_slice(b"\r\r\n\r\n--\r");
        data
    }

    #[test]
    fn every_split_of_the_body_into_two_chunks_gives_the_same_parts() {
        let data = tricky_data();
        let parts = [("metadata", &b"{\"a\":1}"[..]), ("model", &data[..])];
        let body = body(&parts);
        for at in 0..=body.len() {
            let got = parse(&[&body[..at], &body[at..]]).unwrap();
            assert_eq!(got, owned(&parts), "split at {at}");
        }
    }

    #[test]
    fn one_byte_chunks_give_the_same_parts() {
        let data = tricky_data();
        let parts = [("model", &data[..]), ("empty", &b""[..]), ("m", &b"\r"[..])];
        let body = body(&parts);
        let chunks: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse(&chunks).unwrap(), owned(&parts));
        let chunks: Vec<&[u8]> = body.chunks(7).collect();
        assert_eq!(parse(&chunks).unwrap(), owned(&parts));
    }

    #[test]
    fn large_data_is_handed_out_as_slices_of_the_received_chunk() {
        let data = vec![7u8; 1 << 20];
        let body = Bytes::from(body(&[("model", &data)]));
        let mut parser = Parser::new(BOUNDARY).unwrap();
        parser.push(body.clone());
        assert!(matches!(parser.next_event().unwrap(), Some(Event::Part(_))));
        let Some(Event::Data(bytes)) = parser.next_event().unwrap() else {
            panic!("expected data");
        };
        assert_eq!(bytes.len(), data.len());
        let received = body.as_ptr_range();
        assert!(
            received.contains(&bytes.as_ptr()),
            "the data was copied instead of sliced"
        );
        assert_eq!(parser.next_event().unwrap(), Some(Event::End));
    }

    #[test]
    fn preamble_padding_epilogue_and_quoted_names_are_understood() {
        let body = format!(
            "ignored preamble\r\n--{BOUNDARY}  \t\r\n\
             content-disposition: form-data; filename=\"a;b\\\".onnx\"; NAME=\"mo\\\"del\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nbytes\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=plain\r\n\r\n\r\n\
             --{BOUNDARY}\r\nX-Other: 1\r\n\r\nz\r\n\
             --{BOUNDARY}--epilogue is ignored"
        );
        let got = parse(&[body.as_bytes()]).unwrap();
        assert_eq!(
            got,
            vec![
                (Some("mo\"del".to_owned()), b"bytes".to_vec()),
                (Some("plain".to_owned()), Vec::new()),
                (None, b"z".to_vec()),
            ]
        );
    }

    #[test]
    fn cut_off_or_malformed_bodies_say_what_is_wrong() {
        let full = body(&[("model", b"0123456789")]);
        for (cut, says) in [
            (10, "before the first boundary"),
            (BOUNDARY.len() + 10, "inside a part's headers"),
            (full.len() - BOUNDARY.len() - 8, "inside a part"),
        ] {
            let err = parse(&[&full[..cut]]).unwrap_err();
            assert!(err.contains(says), "cut at {cut}: {err}");
        }
        let err = parse(&[format!("--{BOUNDARY}garbage\r\n\r\n").as_bytes()]).unwrap_err();
        assert!(err.contains("after a boundary"), "{err}");
        let err = parse(&[format!("--{BOUNDARY}\r\nno colon\r\n\r\n").as_bytes()]).unwrap_err();
        assert!(err.contains("no `:`"), "{err}");
        let long = format!("--{BOUNDARY}\r\nX: {}", "a".repeat(MAX_HEADERS + 10));
        let err = parse(&[long.as_bytes()]).unwrap_err();
        assert!(err.contains("headers are longer"), "{err}");
        let preamble = vec![b'p'; MAX_PREAMBLE + 1];
        let err = parse(&[&preamble]).unwrap_err();
        assert!(err.contains("before the first boundary"), "{err}");
    }

    #[test]
    fn the_boundary_is_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b\"").unwrap(),
            "a b"
        );
        assert!(
            boundary("multipart/form-data")
                .unwrap_err()
                .contains("boundary")
        );
        assert!(
            boundary("application/json")
                .unwrap_err()
                .contains("not multipart")
        );
        assert!(Parser::new(&"b".repeat(MAX_BOUNDARY + 1)).is_err());
    }
}
