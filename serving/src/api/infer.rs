//! Inference, feedback and stats: the request path of the traffic layer.
//!
//! `POST /v2/models/{name}/infer` picks the version with the endpoint's pure split (sticky
//! header, else the request id), answers, counts, remembers the prediction for feedback, and
//! offers sampled copies to the shadows after the answer is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{find_model, find_version};
use crate::ServingState;
use crate::error::ServingError;
use crate::oip;
use crate::prediction_log::PredictionRecord;
use crate::repository::{ServedModel, ServedVersion};
use crate::runtime::Tensor;
use crate::shadow::ShadowJob;
use crate::traffic::{PredictionEntry, Route, predicted_classes, route, sampled};

/// Bodies larger than this are decoded (and responses encoded) on a blocking thread: a few
/// hundred KiB of JSON take long enough to stall other requests on a reactor thread.
const INLINE_JSON_LIMIT: usize = 256 * 1024;

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
    run(&state, &name, None, &headers, body).await
}

pub(super) async fn version_infer(
    State(state): State<ServingState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, &name, Some(&version), &headers, body).await
}

/// Which version answers, and by which route.
struct Choice {
    served: Arc<ServedVersion>,
    /// `None` when the client named the version (`/versions/{v}` bypasses the split).
    route: Option<Route>,
}

fn choose(model: &ServedModel, version: Option<&str>, key: &str) -> Result<Choice, ServingError> {
    if version.is_some() {
        return Ok(Choice {
            served: find_version(model, version)?,
            route: None,
        });
    }
    let Some(endpoint) = &model.endpoint else {
        return Ok(Choice {
            served: model.default.clone(),
            route: Some(Route::Stable),
        });
    };
    let weight = endpoint.policy.canary.as_ref().map(|c| c.weight);
    let chosen = route(&model.name, key, weight);
    let served = match (chosen, &endpoint.policy.canary) {
        (Route::Canary, Some(c)) => model
            .versions
            .get(&c.version.to_string())
            .cloned()
            .unwrap_or_else(|| model.default.clone()),
        _ => model.default.clone(),
    };
    Ok(Choice {
        served,
        route: Some(chosen),
    })
}

async fn run(
    state: &ServingState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let model = match find_model(state, name) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let request_id = headers
        .get(ferry_registry::layers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The same user (sticky header) always lands on the same side of the split.
    let sticky = model
        .endpoint
        .as_ref()
        .and_then(|e| e.policy.sticky_header.as_deref())
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok());
    let choice = match choose(&model, version, sticky.unwrap_or(&request_id)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let label = choice.served.version.clone();
    let number: i64 = label.parse().unwrap_or(0);
    let result = predict(state, &model, &choice, body, started, &request_id).await;
    let elapsed = started.elapsed();
    let route = choice.route.map_or("direct", Route::as_str);
    match &result {
        Ok(_) => {
            model
                .traffic
                .stats
                .record_request(Instant::now(), number, elapsed, Ok(()));
            state
                .metrics
                .observe(name, &label, route, "ok", elapsed.as_secs_f64());
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
                .observe(name, &label, route, e.class(), elapsed.as_secs_f64());
        }
    }
    match result {
        Ok(answer) => {
            if let Some(log) = &state.prediction_log {
                log.record(PredictionRecord {
                    endpoint: name.to_string(),
                    version: label.clone(),
                    route,
                    id: answer.prediction_id,
                    at: chrono::Utc::now(),
                    latency_ms: elapsed.as_secs_f64() * 1000.0,
                    response: answer.body.clone(),
                    request: log.log_inputs.then_some(answer.request),
                });
            }
            let mut response = answer.body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
                .headers_mut()
                .insert(ROUTE_HEADER, HeaderValue::from_static(route));
            response
        }
        Err(e) => {
            let mut response = e.into_response();
            response
                .headers_mut()
                .insert(ROUTE_HEADER, HeaderValue::from_static(route));
            response
        }
    }
}

async fn predict(
    state: &ServingState,
    model: &ServedModel,
    choice: &Choice,
    body: Body,
    started: Instant,
    request_id: &str,
) -> Result<Answer, ServingError> {
    let body = read_body(state, body, started).await?;
    // The deadline covers the work, from a complete request on; the body has its own.
    let received = Instant::now();
    let runtime = choice.served.model.clone();
    let request_body = body.clone();
    let decoded = if body.len() <= INLINE_JSON_LIMIT {
        oip::decode_infer_request(&body, runtime.signature())
    } else {
        let signature = runtime.signature().clone();
        tokio::task::spawn_blocking(move || oip::decode_infer_request(&body, &signature))
            .await
            .map_err(|e| ServingError::BadRequest(format!("decoding failed: {e}")))?
    }
    .map_err(|e| ServingError::BadRequest(e.to_string()))?;
    // Feedback joins by the client's `id` when it sent one, else by the request id it got back
    // in `x-request-id`.
    let prediction_id = decoded.id.clone().unwrap_or_else(|| request_id.to_string());
    let deadline = received + state.config.request_timeout;

    // Decide the shadow copies first: their inputs must be cloned before the primary takes them.
    let shadows: Vec<usize> = match (&model.endpoint, choice.route) {
        (Some(endpoint), Some(_)) => endpoint
            .shadows
            .iter()
            .enumerate()
            .filter(|(_, s)| sampled(&model.name, s.version, &prediction_id, s.sample_rate))
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    };
    let shadow_inputs: Option<Vec<Tensor>> = (!shadows.is_empty()).then(|| decoded.inputs.clone());
    // Drift watches what the primary answers; the copy is counted off the request path.
    let drift_sample = choice.served.profile.as_ref().and_then(|profile| {
        crate::drift::sample(
            choice.served.version.parse().unwrap_or(0),
            profile,
            &decoded.inputs,
        )
    });
    let requested = decoded.outputs.clone();

    let outputs = runtime
        .infer(decoded.inputs, decoded.outputs, deadline)
        .await?;

    if let Some(sample) = drift_sample {
        model.traffic.drift().offer(sample);
    }
    if let Some(route) = choice.route {
        model.traffic.predictions.insert(
            prediction_id.clone(),
            PredictionEntry {
                version: choice.served.version.parse().unwrap_or(0),
                route,
                classes: predicted_classes(&outputs),
                at: Instant::now(),
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

    let id = decoded.id;
    let version = choice.served.version.clone();
    let name = model.name.clone();
    let big = outputs.iter().map(|t| t.data().len()).sum::<usize>() > INLINE_JSON_LIMIT / 8;
    let body = if big {
        tokio::task::spawn_blocking(move || {
            oip::encode_infer_response(&name, &version, id.as_deref(), &outputs)
        })
        .await
        .map_err(|e| ServingError::BadRequest(format!("encoding failed: {e}")))?
    } else {
        oip::encode_infer_response(&name, &version, id.as_deref(), &outputs)
    };
    Ok(Answer {
        body: Bytes::from(body),
        prediction_id,
        request: request_body,
    })
}

/// A successful prediction: the response body, and what the prediction log needs.
struct Answer {
    body: Bytes,
    prediction_id: String,
    request: Bytes,
}

/// Body of `POST /v2/models/{name}/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Feedback {
    id: String,
    #[serde(default)]
    reward: Option<f64>,
    #[serde(default)]
    label: Option<Label>,
}

/// A label: one class, or one per row.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Label {
    One(i64),
    Rows(Vec<i64>),
}

pub(super) async fn feedback(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    body: Result<axum::Json<Feedback>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ServingError> {
    let axum::Json(feedback) = body.map_err(|e| {
        ServingError::BadRequest(format!(
            "feedback must be JSON {{\"id\": \"…\", \"reward\": number?, \"label\": int or [int]?}}: {}",
            e.body_text()
        ))
    })?;
    if feedback.reward.is_none() && feedback.label.is_none() {
        return Err(ServingError::BadRequest(
            "feedback needs a `reward`, a `label`, or both".into(),
        ));
    }
    if feedback.reward.is_some_and(|r| !r.is_finite()) {
        return Err(ServingError::BadRequest(
            "`reward` must be a finite number".into(),
        ));
    }
    let model = find_model(&state, &name)?;
    let now = Instant::now();
    let entry = model
        .traffic
        .predictions
        .take_for_feedback(&feedback.id, now)
        .map_err(|e| match e {
            crate::traffic::FeedbackError::AlreadyGiven => ServingError::Conflict(format!(
                "feedback for prediction `{}` was already recorded; it counts once",
                feedback.id
            )),
            other => ServingError::NotFound(format!(
                "{other}: `{}` (predictions are kept for {} s, the newest {})",
                feedback.id,
                state.config.feedback_ttl.as_secs(),
                state.config.feedback_capacity
            )),
        })?;
    let correct = match (&feedback.label, &entry.classes) {
        (None, _) => None,
        (Some(_), None) => None,
        (Some(Label::One(l)), Some(classes)) => Some(classes.first() == Some(l)),
        (Some(Label::Rows(ls)), Some(classes)) => Some(ls == classes),
    };
    model
        .traffic
        .stats
        .record_feedback(now, entry.version, feedback.reward, correct);
    state
        .metrics
        .feedback(&name, &entry.version.to_string(), feedback.reward, correct);
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "id": feedback.id,
            "model_version": entry.version.to_string(),
            "route": entry.route.as_str(),
            "correct": correct,
        })),
    )
        .into_response())
}

/// `?window=` of `/stats`.
#[derive(Debug, Deserialize)]
pub(super) struct StatsQuery {
    window: Option<String>,
}

pub(super) async fn stats(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ServingError> {
    let Query(query) =
        query.map_err(|e| ServingError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let window = match query.window.as_deref() {
        None => Duration::from_secs(60),
        Some(text) => parse_window(text).ok_or_else(|| {
            ServingError::BadRequest(format!(
                "window must be like 30s, 5m or 1h (at most {} s), got `{text}`",
                crate::repository::STATS_HORIZON.as_secs()
            ))
        })?,
    };
    let model = find_model(&state, &name)?;
    let policy =
        model
            .endpoint
            .as_ref()
            .map(|e| e.policy.clone())
            .or_else(|| {
                // A plain model: its served version plays the stable role.
                model.default.version.parse().ok().map(|v| {
                    ferry_registry::records::EndpointPolicy {
                        model: name.clone(),
                        stable: v,
                        canary: None,
                        shadows: Vec::new(),
                        sticky_header: None,
                        drift: None,
                    }
                })
            });
    let now = Instant::now();
    let mut analysis = model.traffic.stats.analysis(now, window, policy.as_ref());
    // Drift scores need the training profiles, which the stats do not know.
    let counters = model.traffic.stats.window(now, window);
    for v in &mut analysis.versions {
        let profile = model
            .version(Some(&v.version.to_string()))
            .and_then(|s| s.profile.clone());
        if let (Some(profile), Some(drift)) = (
            profile,
            counters.get(&v.version).and_then(|c| c.drift.as_ref()),
        ) {
            v.drift = Some(ferry_registry::drift::analyze_drift(&profile, drift));
        }
    }
    analysis.load_error.clone_from(&model.last_error);
    Ok(axum::Json(analysis).into_response())
}

/// `30s`, `5m`, `1h`, or plain seconds; at most the stats horizon.
pub fn parse_window(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    (secs > 0 && secs <= crate::repository::STATS_HORIZON.as_secs())
        .then(|| Duration::from_secs(secs))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_seconds_minutes_and_hours_within_the_horizon() {
        assert_eq!(parse_window("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_window("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_window("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_window("1h"), None, "beyond the 15 min horizon");
        assert_eq!(parse_window("0s"), None);
        assert_eq!(parse_window("5 minutes"), None);
        assert_eq!(parse_window(""), None);
    }
}
