//! The inference service: every prediction goes through here, whatever protocol brought it.
//! Protocol handlers (`api/infer.rs` for REST) only extract the call and turn the outcome into
//! their answer.
//!
//! One prediction is: [`plan`] (which version answers, by which route: the endpoint's pure
//! split of the sticky key or the request id), read and decode the request, run it on the
//! version's workers before the deadline, then the bookkeeping every answer owes the traffic
//! layer — the version's counters and the request metrics, the prediction remembered for
//! feedback, a drift sample, copies to the sampled shadows (after the answer is ready, so the
//! client never waits for them), and the prediction log.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::HeaderMap;

use crate::ServingState;
use crate::api::{find_model, find_version};
use crate::error::ServingError;
use crate::oip;
use crate::repository::ServedModel;
use crate::runtime::Tensor;
use crate::served::ServedVersion;
use crate::shadow::ShadowJob;
use crate::traffic::{Route, predicted_classes, route_policy, sampled};
use ferry_feedback::log::PredictionRecord;

/// Bodies larger than this are decoded (and responses encoded) on a blocking thread: a few
/// hundred KiB of JSON take long enough to stall other requests on a reactor thread.
pub const INLINE_JSON_LIMIT: usize = 256 * 1024;

/// Which version answers a request, and by which route.
#[derive(Clone)]
pub struct Plan {
    /// The version that answers.
    pub served: Arc<ServedVersion>,
    /// `None` when the client named the version (`/versions/{v}` bypasses the split).
    pub route: Option<Route>,
}

impl Plan {
    /// `stable`, `canary`, or `direct` for a named version: the `x-ferry-route` value and the
    /// metrics label.
    pub fn route_label(&self) -> &'static str {
        self.route.map_or("direct", Route::as_str)
    }
}

/// Which version of `model` answers: the named `version`, else the endpoint's split of `key`
/// (the sticky header's value, else the request id), else the model's default. Pure: the same
/// table and key always give the same plan.
///
/// # Errors
/// [`ServingError::NotFound`] for a named version that is not served.
pub fn plan(model: &ServedModel, version: Option<&str>, key: &str) -> Result<Plan, ServingError> {
    if version.is_some() {
        return Ok(Plan {
            served: find_version(model, version)?,
            route: None,
        });
    }
    let Some(endpoint) = &model.endpoint else {
        return Ok(Plan {
            served: model.default.clone(),
            route: Some(Route::Stable),
        });
    };
    let (route, number) = route_policy(&model.name, key, &endpoint.policy);
    // A canary the table does not hold (the policy is being swapped) answers from the stable.
    let served = model
        .versions
        .get(&number.to_string())
        .cloned()
        .unwrap_or_else(|| model.default.clone());
    Ok(Plan {
        served,
        route: Some(route),
    })
}

/// The shadows (by index in the endpoint's routing) that get a copy of the prediction
/// `prediction_id`: sampled by a stable hash, only for requests the split routed.
pub fn sampled_shadows(model: &ServedModel, plan: &Plan, prediction_id: &str) -> Vec<usize> {
    match (&model.endpoint, plan.route) {
        (Some(endpoint), Some(_)) => endpoint
            .shadows
            .iter()
            .enumerate()
            .filter(|(_, s)| sampled(&model.name, s.version, prediction_id, s.sample_rate))
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    }
}

/// How a call's body is encoded, and so how its answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// A JSON document (REST).
    Json,
    /// REST with the binary tensor data extension: the first `json_len` bytes are JSON (the
    /// `Inference-Header-Content-Length`), tensor bytes follow.
    Binary {
        /// Where the JSON ends.
        json_len: usize,
    },
    /// A `ModelInferRequest` protobuf message (gRPC, unframed); answered with a
    /// `ModelInferResponse`.
    Grpc,
}

/// One inference call as a protocol handler extracted it.
pub struct Call<'a> {
    /// The endpoint or model named in the path.
    pub name: &'a str,
    /// The version named in the path, if any.
    pub version: Option<&'a str>,
    /// The request's headers (the request id; the endpoint's sticky header).
    pub headers: &'a HeaderMap,
    /// When the request arrived: the body's and the work's deadlines count from here.
    pub started: Instant,
    /// How the body is encoded.
    pub wire: Wire,
    /// The client's own deadline (gRPC's `grpc-timeout`), when it is shorter than the server's
    /// request timeout; counted from `started`.
    pub timeout: Option<std::time::Duration>,
}

/// What a call came to: the route that answered (also on errors, for `x-ferry-route`) and the
/// response body, or the error.
pub struct Outcome {
    /// `stable`, `canary` or `direct`; `None` when no model was found.
    pub route: Option<&'static str>,
    /// The encoded response, or why there is none.
    pub result: Result<Bytes, ServingError>,
    /// When outputs were answered as binary tensors, how many bytes of the response are JSON
    /// (the `Inference-Header-Content-Length` to send).
    pub json_len: Option<usize>,
}

/// Runs one call: plan, read the body with `body`, decode, infer, and the bookkeeping.
pub async fn predict<B>(state: &ServingState, call: Call<'_>, body: B) -> Outcome
where
    B: Future<Output = Result<Bytes, ServingError>>,
{
    let model = match find_model(state, call.name) {
        Ok(m) => m,
        Err(e) => {
            return Outcome {
                route: None,
                result: Err(e),
                json_len: None,
            };
        }
    };
    let request_id = call
        .headers
        .get(ferry_api::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The same user (sticky header) always lands on the same side of the split.
    let sticky = model
        .endpoint
        .as_ref()
        .and_then(|e| e.policy.sticky_header.as_deref())
        .and_then(|h| call.headers.get(h))
        .and_then(|v| v.to_str().ok());
    let plan = match plan(&model, call.version, sticky.unwrap_or(&request_id)) {
        Ok(p) => p,
        Err(e) => {
            return Outcome {
                route: None,
                result: Err(e),
                json_len: None,
            };
        }
    };
    let route = plan.route_label();
    let result = run(state, &model, &plan, body, &call, &request_id).await;
    let elapsed = call.started.elapsed();
    let number = plan.served.number;
    let label = &plan.served.version;
    match &result {
        Ok(_) => {
            model
                .traffic
                .stats
                .record_request(Instant::now(), number, elapsed, Ok(()));
            state
                .metrics
                .observe(call.name, label, route, "ok", elapsed.as_secs_f64());
        }
        Err(e) => {
            // Requests refused before they reached the model are not the version's doing.
            if !matches!(
                e,
                ServingError::BadRequest(_) | ServingError::PayloadTooLarge(_)
            ) {
                model
                    .traffic
                    .stats
                    .record_request(Instant::now(), number, elapsed, Err(e.class()));
            }
            state
                .metrics
                .observe(call.name, label, route, e.class(), elapsed.as_secs_f64());
        }
    }
    let mut json_len = None;
    let result = result.map(|answer| {
        if let Some(log) = &state.prediction_log {
            log.record(PredictionRecord {
                endpoint: call.name.to_string(),
                version: label.clone(),
                route,
                id: answer.prediction_id,
                at: chrono::Utc::now(),
                latency_ms: elapsed.as_secs_f64() * 1000.0,
                response: answer
                    .logged_response
                    .unwrap_or_else(|| answer.body.clone()),
                request: log.log_inputs.then_some(answer.request),
            });
        }
        json_len = answer.json_len;
        answer.body
    });
    Outcome {
        route: Some(route),
        result,
        json_len,
    }
}

/// A successful prediction: the response body, and what the prediction log needs.
struct Answer {
    body: Bytes,
    /// The length of the body's JSON part when outputs follow it as binary tensors.
    json_len: Option<usize>,
    prediction_id: String,
    /// The request as JSON (for the log: a binary request is logged in its JSON form).
    request: Bytes,
    /// The response as JSON for the log, when `body` holds binary tensors.
    logged_response: Option<Bytes>,
}

/// Reads, decodes and runs the request on the planned version, then remembers it for feedback,
/// samples it for drift and copies it to the sampled shadows.
async fn run<B>(
    state: &ServingState,
    model: &ServedModel,
    plan: &Plan,
    body: B,
    call: &Call<'_>,
    request_id: &str,
) -> Result<Answer, ServingError>
where
    B: Future<Output = Result<Bytes, ServingError>>,
{
    let body = body.await?;
    // The deadline covers the work, from a complete request on; the body has its own.
    let received = Instant::now();
    let runtime = plan.served.model.clone();
    let request_body = body.clone();
    let wire = call.wire;
    let decode = move |body: &[u8], signature: &ferry_api::onnx::ModelSignature| match wire {
        Wire::Json => oip::decode_infer_request(body, signature),
        Wire::Binary { json_len } => oip::decode_binary_infer_request(body, json_len, signature),
        Wire::Grpc => oip::decode_grpc_infer_request(body, signature),
    };
    // Binary tensors cost a copy, not a parse: only the JSON part decides. A protobuf message
    // is parsed whole, but its tensor data is length-prefixed bytes: a copy as well.
    let parsed = match wire {
        Wire::Json => body.len(),
        Wire::Binary { json_len } => json_len,
        Wire::Grpc => body.len() / 8,
    };
    // A version trained with a feature view takes the entity keys in place of the features
    // (when this process has the online store); a request that sends the features is decoded
    // against the model's own signature.
    let features = plan.served.features.as_ref().zip(state.features.as_ref());
    let signatures: Vec<&ferry_api::onnx::ModelSignature> = match features {
        Some((f, _)) => vec![&f.request_signature, runtime.signature()],
        None => vec![runtime.signature()],
    };
    let mut by_entity = features.is_some();
    let mut decoded = None;
    let mut errors = Vec::new();
    for signature in signatures {
        let attempt = if parsed <= INLINE_JSON_LIMIT {
            decode(&body, signature)
        } else {
            let signature = signature.clone();
            let body = body.clone();
            tokio::task::spawn_blocking(move || decode(&body, &signature))
                .await
                .map_err(|e| ServingError::BadRequest(format!("decoding failed: {e}")))?
        };
        match attempt {
            Ok(d) => {
                decoded = Some(d);
                break;
            }
            Err(e) => {
                errors.push(e);
                by_entity = false;
            }
        }
    }
    let mut decoded = match decoded {
        Some(d) => d,
        None => {
            // Explain against the form the client meant: by entity when it names the entity
            // key, else the model's own inputs.
            let named = features.is_some_and(|(f, _)| {
                let key = format!("\"{}\"", f.view.spec.entity);
                body.windows(key.len()).any(|w| w == key.as_bytes())
            });
            let error = if named { errors.first() } else { errors.last() };
            return Err(ServingError::BadRequest(error.map_or_else(
                || "the request cannot be decoded".into(),
                ToString::to_string,
            )));
        }
    };
    // The log is JSON lines: a binary request is kept in its JSON form.
    let logged = state.prediction_log.as_ref().is_some_and(|l| l.log_inputs);
    let request_body = match wire {
        Wire::Json => request_body,
        _ if logged => Bytes::from(oip::encode_infer_request(
            decoded.id.as_deref(),
            &decoded.inputs,
        )),
        _ => Bytes::new(),
    };
    // Feedback joins by the client's `id` when it sent one, else by the request id it got back
    // in `x-request-id`.
    let prediction_id = match &decoded.id {
        Some(id) => id.clone(),
        None => request_id.to_string(),
    };
    // Ids are kept until their feedback arrives: capped, so no client can fill memory with them.
    let source = if decoded.id.is_some() {
        "`id`"
    } else {
        "x-request-id"
    };
    ferry_api::names::validate_id(source, &prediction_id)
        .map_err(|e| ServingError::BadRequest(e.to_string()))?;
    let mut deadline = received + state.config.request_timeout;
    if let Some(timeout) = call.timeout {
        deadline = deadline.min(call.started + timeout);
    }
    if let (true, Some((input, online))) = (by_entity, features) {
        let left = deadline.saturating_duration_since(Instant::now());
        input.fill(online, &mut decoded.inputs, left).await?;
    }

    // Decide the shadow copies first: their inputs must be cloned before the primary takes them.
    let shadows = sampled_shadows(model, plan, &prediction_id);
    let shadow_inputs: Option<Vec<Tensor>> = (!shadows.is_empty()).then(|| decoded.inputs.clone());
    // Drift watches what the primary answers; the copy is counted off the request path.
    let drift_sample = plan
        .served
        .profile
        .as_ref()
        .and_then(|profile| crate::drift::sample(plan.served.number, profile, &decoded.inputs));
    let requested = decoded.outputs.clone();

    let outputs = runtime
        .infer(decoded.inputs, decoded.outputs, deadline)
        .await?;

    if let Some(sample) = drift_sample {
        model.traffic.drift().offer(sample);
    }
    if let Some(route) = plan.route {
        state.predictions.remember(
            &model.name,
            &prediction_id,
            ferry_feedback::Prediction {
                version: plan.served.number,
                route,
                classes: predicted_classes(&outputs),
                at: chrono::Utc::now(),
            },
        );
    }
    if let (Some(endpoint), Some(inputs)) = (&model.endpoint, shadow_inputs) {
        // The answer is ready: the copies go out now, and the client does not wait for them.
        let shadow_deadline = Instant::now() + state.config.request_timeout;
        let mut inputs = Some(inputs);
        for (n, i) in shadows.iter().enumerate() {
            let target = &endpoint.shadows[*i];
            // The last copy takes the inputs; the others clone them.
            let job_inputs = if n + 1 == shadows.len() {
                inputs.take().unwrap_or_default()
            } else {
                inputs.clone().unwrap_or_default()
            };
            let job = ShadowJob {
                inputs: job_inputs,
                outputs: requested.clone(),
                primary: outputs.clone(),
                deadline: shadow_deadline,
            };
            if !target.offer(job) {
                model
                    .traffic
                    .stats
                    .record_shadow_dropped(Instant::now(), target.version);
            }
        }
    }

    let big = outputs.iter().map(|t| t.data().len()).sum::<usize>() > INLINE_JSON_LIMIT / 8;
    let id = decoded.id;
    let binary = decoded.binary_outputs;
    let version = plan.served.version.clone();
    let name = model.name.clone();
    let log_json = state.prediction_log.is_some();
    let encode = move || {
        let (body, json_len) = match wire {
            Wire::Grpc => (
                oip::encode_grpc_infer_response(&name, &version, id.as_deref(), &outputs),
                None,
            ),
            _ => {
                oip::encode_binary_infer_response(&name, &version, id.as_deref(), &outputs, &binary)
            }
        };
        let logged_json = json_len.is_some() || wire == Wire::Grpc;
        // The log keeps JSON: binary outputs are written again as numbers for it.
        let logged = (logged_json && log_json).then(|| {
            Bytes::from(oip::encode_infer_response(
                &name,
                &version,
                id.as_deref(),
                &outputs,
            ))
        });
        (Bytes::from(body), json_len, logged)
    };
    let (body, json_len, logged_response) = if big {
        tokio::task::spawn_blocking(encode)
            .await
            .map_err(|e| ServingError::BadRequest(format!("encoding failed: {e}")))?
    } else {
        encode()
    };
    Ok(Answer {
        body,
        json_len,
        prediction_id,
        request: request_body,
        logged_response,
    })
}
