//! `inference.GRPCInferenceService` (the KServe v2 / Triton gRPC protocol) on the same port as
//! REST: a gRPC call is an HTTP/2 `POST /inference.GRPCInferenceService/{Method}` with
//! `content-type: application/grpc`, so it is one more route. Unary calls only, which is all the
//! service has (Triton's streaming `ModelStreamInfer` is answered `UNIMPLEMENTED`).
//!
//! The handler unframes the one message (a byte saying "not compressed", a 4-byte length, the
//! protobuf), checks the bearer token by the same rule as REST ([`super::auth::authorize`]),
//! and calls the same services REST does: `ModelInfer` goes through [`crate::infer::predict`]
//! (split, sticky routing by the endpoint's header sent as metadata, shadows, feedback ids,
//! drift, the prediction log) with the body read under the same limits, and the metadata calls
//! build the same documents. Errors are gRPC statuses in trailers, mapped by
//! [`ServingError::grpc_code`]; `grpc-timeout` shortens the request's deadline.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferry_api::http::auth::Role;
use http_body_util::BodyExt;
use prost::Message;

use super::extract::Path;
use crate::ServingState;
use crate::error::{GrpcCode, ServingError};
use crate::infer::{self, Call, Wire};
use crate::oip;
use crate::oip::grpc::proto;

/// The service's path prefix.
const SERVICE: &str = "/inference.GRPCInferenceService";

/// Largest message of a call other than `ModelInfer` (they carry a name or two).
const SMALL_MESSAGE: usize = 64 * 1024;

/// The header that tells which route answered (also sent as gRPC initial metadata).
const ROUTE_HEADER: &str = "x-ferry-route";

/// The gRPC routes.
pub(super) fn routes() -> Router<ServingState> {
    Router::new().route(&format!("{SERVICE}/{{method}}"), post(call))
}

/// A gRPC failure: a status code and a message.
struct Status {
    code: GrpcCode,
    message: String,
}

impl Status {
    fn new(code: GrpcCode, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
}

impl From<ServingError> for Status {
    fn from(e: ServingError) -> Self {
        Status::new(e.grpc_code(), e.public_message())
    }
}

async fn call(
    State(state): State<ServingState>,
    Path(method): Path<String>,
    http_method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    if !is_grpc(&headers) {
        // What the gRPC spec asks of a server sent something else on its paths.
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this path takes gRPC (content-type: application/grpc)",
        )
            .into_response();
    }
    if let Err(refused) =
        super::auth::authorize(&state.tokens, &http_method, &uri, &headers, Role::Read)
    {
        drop(body);
        return status_response(&Status::from(refused), None);
    }
    let timeout = match grpc_timeout(&headers) {
        Ok(t) => t,
        Err(status) => return status_response(&status, None),
    };
    let answered = match method.as_str() {
        "ModelInfer" => return model_infer(&state, &headers, body, started, timeout).await,
        "ServerLive" => {
            unary(body, |_: proto::ServerLiveRequest| {
                Ok(proto::ServerLiveResponse { live: true })
            })
            .await
        }
        "ServerReady" => {
            unary(body, |_: proto::ServerReadyRequest| {
                Ok(proto::ServerReadyResponse {
                    ready: state.ready.load(std::sync::atomic::Ordering::Acquire),
                })
            })
            .await
        }
        "ModelReady" => {
            unary(body, |r: proto::ModelReadyRequest| {
                // Not ready is an answer here, not an error: the REST route's 404/503 is `false`.
                let ready = super::find_model(&state, &r.name)
                    .and_then(|m| super::find_version(&m, version(&r.version)))
                    .is_ok();
                Ok(proto::ModelReadyResponse { ready })
            })
            .await
        }
        "ServerMetadata" => {
            unary(body, |_: proto::ServerMetadataRequest| {
                let m = oip::server_metadata(env!("CARGO_PKG_VERSION"));
                Ok(proto::ServerMetadataResponse {
                    name: m.name,
                    version: m.version,
                    extensions: m.extensions,
                })
            })
            .await
        }
        "ModelMetadata" => {
            unary(body, |r: proto::ModelMetadataRequest| {
                let m = super::metadata_document(&state, &r.name, version(&r.version))?;
                let tensors = |list: Vec<oip::MetadataTensor>| {
                    list.into_iter()
                        .map(|t| proto::TensorMetadata {
                            name: t.name,
                            datatype: t.datatype,
                            shape: t.shape,
                        })
                        .collect()
                };
                Ok(proto::ModelMetadataResponse {
                    name: m.name,
                    versions: m.versions,
                    platform: m.platform,
                    inputs: tensors(m.inputs),
                    outputs: tensors(m.outputs),
                })
            })
            .await
        }
        "ModelConfig" => {
            unary(body, |r: proto::ModelConfigRequest| {
                let c = super::config_document(&state, &r.name, version(&r.version))?;
                Ok(proto::ModelConfigResponse {
                    config: Some(model_config(c)),
                })
            })
            .await
        }
        "RepositoryIndex" => {
            unary(body, |r: proto::RepositoryIndexRequest| {
                let models = super::repository_entries(&state)
                    .into_iter()
                    .filter(|e| !r.ready || e.state == "READY")
                    .map(|e| proto::ModelIndex {
                        name: e.name,
                        version: e.version,
                        state: e.state,
                        reason: e.reason,
                    })
                    .collect();
                Ok(proto::RepositoryIndexResponse { models })
            })
            .await
        }
        other => Err(Status::new(
            GrpcCode::Unimplemented,
            format!(
                "Ferry does not implement {}; it serves ServerLive, ServerReady, ModelReady, \
                 ServerMetadata, ModelMetadata, ModelInfer, ModelConfig and RepositoryIndex",
                ferry_api::names::printable(other)
            ),
        )),
    };
    match answered {
        Ok(message) => framed_response(&message, None),
        Err(status) => status_response(&status, None),
    }
}

/// `ModelInfer`: the body read under REST's limits, then the shared inference service.
async fn model_infer(
    state: &ServingState,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
    timeout: Option<Duration>,
) -> Response {
    // The model's name is inside the message: read it first (the body's limits and deadline
    // are REST's), then give the message to the inference service as its body.
    let mut budget = None;
    let message = match super::infer::read_body(state, headers, body, started, &mut budget).await {
        Ok(framed) => match unframe(&framed) {
            Ok(message) => message,
            Err(status) => return status_response(&status, None),
        },
        Err(e) => return status_response(&Status::from(e), None),
    };
    let (name, version) = match model_of(&message) {
        Ok(names) => names,
        Err(status) => return status_response(&status, None),
    };
    let call = Call {
        name: &name,
        version: (!version.is_empty()).then_some(version.as_str()),
        headers,
        started,
        wire: Wire::Grpc,
        timeout,
    };
    let outcome = infer::predict(state, call, async { Ok(message) }).await;
    drop(budget);
    let route = outcome.route;
    match outcome.result {
        Ok(encoded) => framed_response(&encoded, route),
        Err(e) => status_response(&Status::from(e), route),
    }
}

/// The model name and version of a `ModelInferRequest`, read without decoding its tensors:
/// the inference service needs them before it decodes the rest against the model.
fn model_of(message: &[u8]) -> Result<(String, String), Status> {
    /// The first two fields of `ModelInferRequest`; prost skips the others unread.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Names {
        #[prost(string, tag = "1")]
        model_name: String,
        #[prost(string, tag = "2")]
        model_version: String,
    }
    let names = Names::decode(message).map_err(|e| {
        Status::new(
            GrpcCode::InvalidArgument,
            format!("malformed request: not a ModelInferRequest message ({e})"),
        )
    })?;
    if names.model_name.is_empty() {
        return Err(Status::new(
            GrpcCode::InvalidArgument,
            "model_name is empty: name the model or endpoint to call",
        ));
    }
    Ok((names.model_name, names.model_version))
}

/// A unary call other than `ModelInfer`: read the (small) request message, answer.
async fn unary<Req, Resp>(
    body: Body,
    handle: impl FnOnce(Req) -> Result<Resp, Status>,
) -> Result<Bytes, Status>
where
    Req: Message + Default,
    Resp: Message,
{
    let limited = http_body_util::Limited::new(body, SMALL_MESSAGE + 5);
    let framed = tokio::time::timeout(Duration::from_secs(10), limited.collect())
        .await
        .map_err(|_| {
            Status::new(
                GrpcCode::DeadlineExceeded,
                "the request message did not arrive within 10 s",
            )
        })?
        .map_err(|e| {
            Status::new(
                GrpcCode::ResourceExhausted,
                format!("cannot read the request message (at most {SMALL_MESSAGE} bytes): {e}"),
            )
        })?
        .to_bytes();
    let request = Req::decode(unframe(&framed)?).map_err(|e| {
        Status::new(
            GrpcCode::InvalidArgument,
            format!("malformed request message: {e}"),
        )
    })?;
    let response = handle(request)?;
    Ok(Bytes::from(response.encode_to_vec()))
}

/// The one message of a unary request: a flag byte (0: not compressed), its length (4 bytes,
/// big-endian), the protobuf.
fn unframe(framed: &Bytes) -> Result<Bytes, Status> {
    let Some((prefix, rest)) = framed.split_first_chunk::<5>() else {
        return Err(Status::new(
            GrpcCode::InvalidArgument,
            format!(
                "the request holds {} bytes, less than a gRPC message prefix (5)",
                framed.len()
            ),
        ));
    };
    if prefix[0] != 0 {
        return Err(Status::new(
            GrpcCode::Unimplemented,
            "compressed messages are not supported; send them uncompressed (grpc-encoding \
             identity)",
        ));
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length != rest.len() {
        return Err(Status::new(
            GrpcCode::InvalidArgument,
            format!(
                "the message prefix says {length} bytes but {} follow; a unary call carries \
                 exactly one message",
                rest.len()
            ),
        ));
    }
    Ok(framed.slice(5..))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+proto"))
}

/// `grpc-timeout` (digits and a unit: H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let bad = || {
        Status::new(
            GrpcCode::InvalidArgument,
            format!(
                "grpc-timeout {:?} is not up to 8 digits and a unit (H, M, S, m, u, n)",
                ferry_api::names::printable(text)
            ),
        )
    };
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    }))
}

fn version(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn model_config(c: oip::TritonConfig) -> proto::ModelConfig {
    let reshape = |r: Option<oip::Reshape>| r.map(|r| proto::ModelTensorReshape { shape: r.shape });
    proto::ModelConfig {
        name: c.name,
        platform: c.platform,
        backend: c.backend,
        max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
        input: c
            .input
            .into_iter()
            .map(|t| proto::ModelInput {
                name: t.name,
                data_type: proto::data_type_number(&t.data_type),
                dims: t.dims,
                reshape: reshape(t.reshape),
            })
            .collect(),
        output: c
            .output
            .into_iter()
            .map(|t| proto::ModelOutput {
                name: t.name,
                data_type: proto::data_type_number(&t.data_type),
                dims: t.dims,
                reshape: reshape(t.reshape),
            })
            .collect(),
        dynamic_batching: c.dynamic_batching.map(|d| proto::ModelDynamicBatching {
            max_queue_delay_microseconds: d.max_queue_delay_microseconds,
        }),
    }
}

/// A successful answer: the message framed, then `grpc-status: 0` in the trailers.
fn framed_response(message: &[u8], route: Option<&'static str>) -> Response {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(Bytes::from(framed))
        .with_trailers(async move { Some(Ok(trailers)) });
    let mut response = Response::new(Body::new(body));
    grpc_headers(response.headers_mut(), route);
    response
}

/// A failure, "trailers-only": the status in the response headers and no body.
fn status_response(status: &Status, route: Option<&'static str>) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    grpc_headers(headers, route);
    headers.insert(
        "grpc-status",
        HeaderValue::from(u16::from(status.code as u8)),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&status.message)) {
        headers.insert("grpc-message", v);
    }
    response
}

fn grpc_headers(headers: &mut HeaderMap, route: Option<&'static str>) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(route) = route {
        headers.insert(ROUTE_HEADER, HeaderValue::from_static(route));
    }
}

/// `grpc-message` is percent-encoded UTF-8: everything outside printable ASCII, and `%`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_garbage_is_refused() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(parse("2S").ok().flatten(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse("150m").ok().flatten(),
            Some(Duration::from_millis(150))
        );
        assert_eq!(parse("1H").ok().flatten(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("7u").ok().flatten(), Some(Duration::from_micros(7)));
        for bad in ["", "S", "12", "1x", "123456789S", "-1S", "1.5S"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()).ok().flatten(), None);
    }

    #[test]
    fn a_unary_message_must_be_one_uncompressed_frame() {
        let frame = |flag: u8, len: u32, body: &[u8]| {
            let mut v = vec![flag];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(body);
            Bytes::from(v)
        };
        assert_eq!(unframe(&frame(0, 3, b"abc")).ok().unwrap(), &b"abc"[..]);
        let short = unframe(&Bytes::from_static(b"\0\0")).err().unwrap();
        assert_eq!(short.code, GrpcCode::InvalidArgument);
        let compressed = unframe(&frame(1, 3, b"abc")).err().unwrap();
        assert_eq!(compressed.code, GrpcCode::Unimplemented);
        let two = unframe(&frame(0, 1, b"ab")).err().unwrap();
        assert!(
            two.message.contains("says 1 bytes but 2 follow"),
            "{}",
            two.message
        );
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(
            percent_encode("input \"x\": 100% wrong"),
            "input \"x\": 100%25 wrong"
        );
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }
}
