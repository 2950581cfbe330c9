//! The prediction index shared by every replica, in Redis: feedback joins at whichever replica
//! receives it (`--feedback-store redis://…`).
//!
//! - One key per prediction, `ferry:p:{ENDPOINT/ID}`, holding a compact JSON entry (~45 bytes)
//!   and expiring after the feedback time-to-live: Redis does the expiry, and its `maxmemory`
//!   bounds the total. A taken prediction leaves `ferry:c:{ENDPOINT/ID}` behind for the rest of
//!   its time-to-live, so a second feedback is a 409 at every replica. Both keys share a hash
//!   tag, so the take is one atomic script even on a Redis Cluster slot.
//! - Writes stay off the request path: [`PredictionIndex::remember`] only queues (bounded; a full
//!   queue drops and counts), and one task sends what is queued as one pipeline per round trip.
//! - Every call has a timeout; one multiplexed connection, re-established by the connection
//!   manager after a failure, carries every request of the process (Redis answers in order on
//!   one connection, so a pool of connections would add sockets, not throughput).
//! - When Redis cannot be reached, predictions are still answered (their entries are dropped and
//!   counted), feedback gets [`JoinError::Unavailable`] (a 503 with `Retry-After`), and
//!   [`IndexHealth`] says so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_api::traffic::Route;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{IndexHealth, JoinError, Prediction, PredictionIndex};

/// Longest any one call to Redis may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Predictions waiting to be written; past this, new ones are dropped and counted.
pub const QUEUE_CAPACITY: usize = 16_384;

/// Most predictions written in one pipeline.
const BATCH: usize = 512;

/// How long feedback for an id not found waits before asking once more: a prediction is
/// written within a round trip of its answer, and a client that posts feedback at once to
/// another replica can arrive first.
pub const VISIBILITY_RETRY: Duration = Duration::from_millis(50);

/// Takes the prediction under `KEYS[1]` and marks it consumed under `KEYS[2]` for the rest of
/// its time to live. Answers `{1, entry}`, `{2, ""}` when already consumed, `{0, ""}` when
/// unknown.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entry = redis.call('GET', KEYS[1])
if entry then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[2], '1', 'PX', ttl)
  end
  return {1, entry}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {2, ''}
end
return {0, ''}
",
    )
});

/// The prediction under `KEYS[1]`, left in place: `{1, entry}`, `{2, ""}` when already taken
/// (`KEYS[2]` exists), `{0, ""}` when unknown.
static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entry = redis.call('GET', KEYS[1])
if entry then
  return {1, entry}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {2, ''}
end
return {0, ''}
",
    )
});

/// A prediction as stored: short field names, the time in milliseconds.
#[derive(Serialize, Deserialize)]
struct Stored {
    v: i64,
    r: Route,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Vec<i64>>,
    t: i64,
}

/// The key of the prediction `id` of `endpoint`, and of its consumed marker.
fn keys(endpoint: &str, id: &str) -> (String, String) {
    (
        format!("ferry:p:{{{endpoint}/{id}}}"),
        format!("ferry:c:{{{endpoint}/{id}}}"),
    )
}

struct Shared {
    up: AtomicBool,
    error: Mutex<Option<String>>,
    dropped: AtomicU64,
}

impl Shared {
    fn succeeded(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("the feedback store (Redis) answers again");
        }
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn failed(&self, error: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, "the feedback store (Redis) cannot be reached; predictions are answered, feedback is refused with 503 until it is back");
        }
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }
}

/// The Redis [`PredictionIndex`]. Build it with [`RedisIndex::connect`] and run the returned
/// [`Writer`].
pub struct RedisIndex {
    conn: ConnectionManager,
    shared: Arc<Shared>,
    queue: mpsc::Sender<(String, String)>,
    display: String,
}

/// Sends queued predictions to Redis; run it on a task until the process stops.
pub struct Writer {
    conn: ConnectionManager,
    shared: Arc<Shared>,
    queue: mpsc::Receiver<(String, String)>,
    ttl_ms: u64,
}

impl RedisIndex {
    /// Prepares an index on the Redis at `url` (`redis://[:password@]host:port[/db]`) keeping
    /// predictions for `ttl`. Nothing is connected yet: the first call connects, and calls after
    /// a failure reconnect, so a Redis that is down at start delays nothing.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub fn connect(url: &str, ttl: Duration) -> Result<(RedisIndex, Writer), redis::RedisError> {
        let client = Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            error: Mutex::new(None),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let index = RedisIndex {
            conn: conn.clone(),
            shared: shared.clone(),
            queue: tx,
            display: without_password(url),
        };
        let writer = Writer {
            conn,
            shared,
            queue: rx,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
        };
        Ok((index, writer))
    }

    /// The URL without its password, for logs.
    #[must_use]
    pub fn display(&self) -> &str {
        &self.display
    }

    async fn take_once(&self, endpoint: &str, id: &str) -> Result<Prediction, JoinError> {
        self.run(&TAKE, endpoint, id).await
    }

    async fn run(
        &self,
        script: &Script,
        endpoint: &str,
        id: &str,
    ) -> Result<Prediction, JoinError> {
        let (pkey, ckey) = keys(endpoint, id);
        let mut conn = self.conn.clone();
        let mut invocation = script.key(&pkey);
        invocation.key(&ckey);
        let call = invocation.invoke_async::<(i64, String)>(&mut conn);
        let answer = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.shared.failed(&e.to_string());
                return Err(JoinError::Unavailable(e.to_string()));
            }
            Err(_) => {
                let error = format!("no answer within {CALL_TIMEOUT:?}");
                self.shared.failed(&error);
                return Err(JoinError::Unavailable(error));
            }
        };
        self.shared.succeeded();
        match answer {
            (1, entry) => {
                let stored: Stored = serde_json::from_str(&entry).map_err(|e| {
                    JoinError::Unavailable(format!("the entry under `{pkey}` does not read: {e}"))
                })?;
                Ok(Prediction {
                    version: stored.v,
                    route: stored.r,
                    classes: stored.c,
                    at: DateTime::<Utc>::from_timestamp_millis(stored.t).unwrap_or_default(),
                })
            }
            (2, _) => Err(JoinError::AlreadyGiven),
            _ => Err(JoinError::Unknown),
        }
    }
}

impl PredictionIndex for RedisIndex {
    fn remember(&self, endpoint: &str, id: &str, prediction: Prediction) {
        let stored = Stored {
            v: prediction.version,
            r: prediction.route,
            c: prediction.classes,
            t: prediction.at.timestamp_millis(),
        };
        let Ok(value) = serde_json::to_string(&stored) else {
            return;
        };
        let (key, _) = keys(endpoint, id);
        if self.queue.try_send((key, value)).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn take<'a>(
        &'a self,
        endpoint: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, JoinError>> {
        Box::pin(async move {
            match self.take_once(endpoint, id).await {
                Err(JoinError::Unknown) => {
                    tokio::time::sleep(VISIBILITY_RETRY).await;
                    self.take_once(endpoint, id).await
                }
                other => other,
            }
        })
    }

    fn peek<'a>(
        &'a self,
        endpoint: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, JoinError>> {
        Box::pin(self.run(&PEEK, endpoint, id))
    }

    fn health(&self) -> IndexHealth {
        let up = self.shared.up.load(Ordering::Acquire);
        IndexHealth {
            store: "redis",
            up,
            error: if up {
                None
            } else {
                self.shared
                    .error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            },
            held: None,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            evicted: 0,
        }
    }
}

impl Writer {
    /// Writes queued predictions, one pipeline per round trip, until `stop` is cancelled; then
    /// writes what is still queued (within one call timeout) and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = tokio::select! {
                biased;
                next = self.queue.recv() => next,
                () = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < BATCH {
                match self.queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.write(&mut batch).await;
        }
        // Stopping: what was answered before the stop is still written.
        self.queue.close();
        while let Ok(next) = self.queue.try_recv() {
            batch.push(next);
            if batch.len() == BATCH {
                self.write(&mut batch).await;
            }
        }
        self.write(&mut batch).await;
    }

    async fn write(&mut self, batch: &mut Vec<(String, String)>) {
        if batch.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, value) in batch.iter() {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
        let sent = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut self.conn)).await;
        let error = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {CALL_TIMEOUT:?}")),
        };
        match error {
            None => self.shared.succeeded(),
            Some(error) => {
                self.shared
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.shared.failed(&error);
            }
        }
        batch.clear();
    }
}

/// `url` with any password replaced by `***`.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(a Redis URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_of_a_prediction_share_one_hash_tag() {
        let (p, c) = keys("fraud", "req-1");
        assert_eq!(p, "ferry:p:{fraud/req-1}");
        assert_eq!(c, "ferry:c:{fraud/req-1}");
    }

    #[test]
    fn a_password_is_never_displayed() {
        assert_eq!(
            without_password("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
