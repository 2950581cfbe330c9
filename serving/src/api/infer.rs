//! `POST /v2/models/{name}[/versions/{v}]/infer` over REST: extract the call, read the body
//! within its limits, run it through the inference service ([`crate::infer`]), and answer with
//! the route that answered in `x-ferry-route`.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::ServingState;
use crate::error::ServingError;
use crate::infer::{self, Call};

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
    let call = Call {
        name,
        version,
        headers,
        started,
    };
    let outcome = infer::predict(state, call, read_body(state, body, started)).await;
    let mut response = match outcome.result {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
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

/// The whole request body, within the request timeout or [`MIN_BODY_TIME`], whichever is longer
/// (a body trickling in slower is cut off with 408, so a slow client cannot hold a connection and
/// a buffer for long), and the size limit (413 as soon as the bytes pass it).
async fn read_body(
    state: &ServingState,
    body: Body,
    started: Instant,
) -> Result<Bytes, ServingError> {
    use futures::StreamExt;
    let limit = state.config.max_request_bytes;
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
        buffer.extend_from_slice(&chunk);
    }
}
