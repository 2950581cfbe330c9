//! `POST /v2/models/{name}[/versions/{v}]/infer` over REST: extract the call, read the body
//! within its limits, run it through the inference service ([`crate::infer`]), and answer with
//! the route that answered in `x-ferry-route`.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;

use super::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::ServingState;
use crate::error::ServingError;
use crate::infer::{self, Call, Wire};
use crate::oip;

/// The least time a client is given to send its body, however short the request timeout.
const MIN_BODY_TIME: Duration = Duration::from_secs(10);

/// The header that tells which route answered.
const ROUTE_HEADER: &str = "x-ferry-route";

pub(super) async fn infer(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&state, &name, None, &headers, body).await
}

pub(super) async fn version_infer(
    State(state): State<ServingState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&state, &name, Some(&version), &headers, body).await
}

async fn answer(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let wire = match binary_header(headers) {
        Ok(Some(json_len)) => Wire::Binary { json_len },
        Ok(None) => Wire::Json,
        Err(e) => return e.into_response(),
    };
    let call = Call {
        name,
        version,
        headers,
        started,
        wire,
        timeout: None,
    };
    // The body's share of the buffering budget, held until the answer is built.
    let mut budget = None;
    let outcome = infer::predict(
        state,
        call,
        read_body(state, headers, body, started, &mut budget),
    )
    .await;
    drop(budget);
    let mut response = match outcome.result {
        Ok(body) => {
            let mut response = body.into_response();
            let headers = response.headers_mut();
            if let Some(n) = outcome.json_len {
                // Binary tensors follow the JSON: the body as a whole is not JSON.
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                headers.insert(oip::HEADER_CONTENT_LENGTH, HeaderValue::from(n));
            } else {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            response
        }
        Err(e) => e.into_response(),
    };
    if let Some(route) = outcome.route {
        response
            .headers_mut()
            .insert(ROUTE_HEADER, HeaderValue::from_static(route));
    }
    response
}

/// The `Inference-Header-Content-Length` of a request in the binary tensor data extension's
/// form: how many bytes of the body are JSON.
fn binary_header(headers: &HeaderMap) -> Result<Option<usize>, ServingError> {
    let Some(value) = headers.get(oip::HEADER_CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ServingError::BadRequest(format!(
                "Inference-Header-Content-Length must be a number of bytes, got {:?}",
                String::from_utf8_lossy(value.as_bytes())
                    .chars()
                    .take(40)
                    .collect::<String>()
            ))
        })
}

/// The whole request body, within the request timeout or [`MIN_BODY_TIME`], whichever is longer
/// (a body trickling in slower is cut off with 408, so a slow client cannot hold a connection and
/// a buffer for long), the size limit (413 as soon as the bytes pass it), and the process's
/// budget of buffered bytes (503 when it is spent: up front for a declared `Content-Length`,
/// else as the bytes arrive). The share taken is left in `budget`.
pub(super) async fn read_body(
    state: &ServingState,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
    budget: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Bytes, ServingError> {
    use futures::StreamExt;
    let limit = state.config.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared {
        if declared > limit {
            return Err(ServingError::PayloadTooLarge(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        reserve(state, budget, declared)?;
    }
    let allowed = state.config.request_timeout.max(MIN_BODY_TIME);
    let deadline = tokio::time::Instant::from_std(started + allowed);
    let mut stream = body.into_data_stream();
    let mut buffer = bytes::BytesMut::new();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                ServingError::RequestTimeout(format!(
                    "the request body did not arrive within {} ms",
                    allowed.as_millis()
                ))
            })?;
        let Some(chunk) = next else {
            return Ok(buffer.freeze());
        };
        let chunk = chunk
            .map_err(|e| ServingError::BadRequest(format!("cannot read the request body: {e}")))?;
        if buffer.len() + chunk.len() > limit {
            return Err(ServingError::PayloadTooLarge(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        reserve(state, budget, buffer.len() + chunk.len())?;
        buffer.extend_from_slice(&chunk);
    }
}

/// Grows `budget` to cover `bytes`, or 503 when the process holds too many bodies already.
fn reserve(
    state: &ServingState,
    budget: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    bytes: usize,
) -> Result<(), ServingError> {
    let needed = bytes.div_ceil(1024);
    let held = budget
        .as_ref()
        .map_or(0, tokio::sync::OwnedSemaphorePermit::num_permits);
    if needed <= held {
        return Ok(());
    }
    let more = u32::try_from(needed - held).unwrap_or(u32::MAX);
    let Ok(permit) = state.body_budget.clone().try_acquire_many_owned(more) else {
        return Err(ServingError::Unavailable {
            message: format!(
                "the server holds as many request bodies as it may buffer ({} MiB, \
                 --max-buffered-bodies); retry shortly",
                state.config.max_buffered_bytes / (1024 * 1024)
            ),
            retry_after: Duration::from_secs(1),
        });
    };
    match budget {
        Some(held) => held.merge(permit),
        None => *budget = Some(permit),
    }
    Ok(())
}
