//! The event log: a long-poll (`GET /api/v1/events`) and a Server-Sent Events stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;

use super::extract::Query;
use crate::AppState;
use crate::error::{Error, Result};
use crate::store::MetadataStore;
use ferry_api::records::{Event, EventPage};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// `?after=&limit=&wait=` of the long-poll.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
    /// Seconds to wait for a first event when there is none yet.
    #[serde(default)]
    wait: f64,
}

pub async fn poll(
    State(state): State<AppState>,
    Query(q): Query<PollQuery>,
) -> Result<axum::Json<EventPage>> {
    if q.after < 0 {
        return Err(Error::BadRequest(format!(
            "after must be 0 or a previous event id, got {}",
            q.after
        )));
    }
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(Error::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {n}"
            )));
        }
    };
    let max_wait = state.config.max_event_wait;
    if !q.wait.is_finite() || q.wait < 0.0 || q.wait > max_wait.as_secs_f64() {
        return Err(Error::BadRequest(format!(
            "wait must be between 0 and {} seconds",
            max_wait.as_secs()
        )));
    }
    let _waiting = if q.wait > 0.0 {
        Some(waiter_permit(&state)?)
    } else {
        None
    };
    let page = state
        .store
        .wait_for_events(q.after, limit, Duration::from_secs_f64(q.wait))
        .await?;
    Ok(axum::Json(page))
}

/// A place among the event waiters, or 503 when they are all taken: each holds a connection and
/// wakes on every event, so their number is bounded (`Config::max_event_waiters`).
fn waiter_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit> {
    state
        .event_waiters
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            Error::Unavailable(format!(
                "{} clients are already waiting for events; retry shortly",
                state.config.max_event_waiters
            ))
        })
}

/// `?after=` of the stream; a `Last-Event-ID` header (sent by reconnecting clients) wins.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    after: i64,
}

pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| Error::BadRequest("Last-Event-ID must be an event id".into()))?,
        None => q.after,
    };
    let permit = waiter_permit(&state)?;
    let events = event_stream(state.store.clone(), after, permit);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Cursor {
    store: MetadataStore,
    /// Held for the stream's life: its place among the event waiters.
    _permit: tokio::sync::OwnedSemaphorePermit,
    after: i64,
    buffer: VecDeque<Event>,
    failed: bool,
}

/// Every event after `after`, forever. On a database error the stream sends an `error` event and
/// ends; the client reconnects with `Last-Event-ID` and loses nothing.
fn event_stream(
    store: MetadataStore,
    after: i64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    let cursor = Cursor {
        store,
        _permit: permit,
        after,
        buffer: VecDeque::new(),
        failed: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.failed {
            return None;
        }
        loop {
            if let Some(event) = cursor.buffer.pop_front() {
                cursor.after = event.id;
                let sse = SseEvent::default()
                    .id(event.id.to_string())
                    .event(event.kind.clone())
                    .json_data(&event)
                    .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"));
                return Some((Ok(sse), cursor));
            }
            match cursor
                .store
                .wait_for_events(cursor.after, DEFAULT_LIMIT, Duration::from_secs(30))
                .await
            {
                Ok(page) => cursor.buffer.extend(page.events),
                Err(e) => {
                    tracing::warn!(error = %e, "event stream interrupted");
                    cursor.failed = true;
                    let sse = SseEvent::default().event("error").data(
                        "the registry could not read its event log; reconnect with Last-Event-ID",
                    );
                    return Some((Ok(sse), cursor));
                }
            }
        }
    })
}
