//! Reading a request's rows from the online store: one `MGET` per request on one of a few
//! multiplexed connections, bounded by a timeout, behind a circuit breaker so that a Redis that
//! is down costs requests a fast 503, not a wait each.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_api::features::FeatureDtype;
use redis::aio::ConnectionManager;

use crate::encoding::{MAX_ENTITY_LEN, Value, decode, row_key};

/// Connections to the store: each is multiplexed (concurrent requests pipeline on it), and a
/// few spread the load over more than one socket.
pub const POOL: usize = 4;

/// How long a lookup may take when the request's own deadline is further away.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

/// Failures in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 5;

/// How long an open breaker refuses lookups before letting one through again.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(5);

/// Most entities one request may name.
pub const MAX_ENTITIES: usize = 10_000;

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The store is down, slow or refusing; try again after `retry_after`.
    #[error("the online feature store {store} is unavailable: {reason}")]
    Unavailable {
        /// The store, without credentials.
        store: String,
        /// What happened.
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A row is not one of the view's (written for another definition, or by something else).
    #[error("the online row of entity `{entity}` is unreadable: {reason}")]
    Corrupt {
        /// The entity.
        entity: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request named no entities, too many, or an unusable one.
    #[error("{0}")]
    BadEntities(String),
    /// The caller's deadline came before the store answered (not the store's fault: the breaker
    /// does not count it).
    #[error("the request's deadline passed during the feature lookup")]
    DeadlineExceeded,
}

/// Opens after [`BREAKER_FAILURES`] failed lookups in a row and refuses lookups for
/// [`BREAKER_COOLDOWN`]; after that, lookups go through again, and the first failure opens it
/// again at once while a success closes it. (Every lookup goes through after the cool-down, not
/// a single probe: a store that is back serves them all, one that is not costs each at most the
/// lookup timeout once.)
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// `Err(time left)` while open at `now`.
    ///
    /// # Errors
    /// How long the breaker stays open.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.open_until {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// A lookup succeeded: closed.
    pub fn success(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failures = 0;
        state.open_until = None;
    }

    /// A lookup failed at `now`; `true` when this failure opened the breaker.
    pub fn failure(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failures += 1;
        if state.failures >= BREAKER_FAILURES {
            state.open_until = Some(now + BREAKER_COOLDOWN);
            // Half-open after the cool-down: one more failure opens it again.
            state.failures = BREAKER_FAILURES - 1;
            true
        } else {
            false
        }
    }
}

/// The online store as serving reads it.
pub struct OnlineStore {
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    breaker: Breaker,
    display: String,
}

impl OnlineStore {
    /// Prepares connections to the Redis at `url` (`redis://[:password@]host:port[/db]`).
    /// Nothing is connected yet: the first lookup connects, and a store that is down at start
    /// delays nothing.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub fn connect(url: &str) -> Result<OnlineStore, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(LOOKUP_TIMEOUT))
            .set_response_timeout(Some(LOOKUP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let pool = (0..POOL)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OnlineStore {
            pool,
            next: AtomicUsize::new(0),
            breaker: Breaker::default(),
            display: display_url(url),
        })
    }

    /// The store's URL without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The rows of `entities` in version `version` of view `view` (whose features have
    /// `dtypes`), in the entities' order: `None` for an entity the store has no row for. Waits
    /// at most `timeout` (and [`LOOKUP_TIMEOUT`]).
    ///
    /// # Errors
    /// [`LookupError::Unavailable`] when the store does not answer in time, refuses, or has
    /// failed too often lately (the breaker is open); [`LookupError::Corrupt`] for a row that
    /// is not the view's; [`LookupError::BadEntities`] for no entities, too many, or one that
    /// is empty or too long.
    pub async fn lookup(
        &self,
        view: &str,
        version: i64,
        dtypes: &[FeatureDtype],
        entities: &[String],
        timeout: Duration,
    ) -> Result<Vec<Option<Vec<Option<Value>>>>, LookupError> {
        check_entities(entities)?;
        let now = Instant::now();
        if let Err(left) = self.breaker.check(now) {
            return Err(LookupError::Unavailable {
                store: self.display.clone(),
                reason: "it failed repeatedly just now; lookups are paused".into(),
                retry_after: left,
            });
        }
        let keys: Vec<String> = entities.iter().map(|e| row_key(view, version, e)).collect();
        let mut conn =
            self.pool[self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len()].clone();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        let call = cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut conn);
        let answer = match tokio::time::timeout(timeout.min(LOOKUP_TIMEOUT), call).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(self.failed(e.to_string())),
            // The caller's own deadline ran out first: a client cannot open the breaker for
            // everyone by asking for impossible deadlines.
            Err(_) if timeout < LOOKUP_TIMEOUT => return Err(LookupError::DeadlineExceeded),
            Err(_) => {
                return Err(self.failed(format!("no answer within {LOOKUP_TIMEOUT:?}")));
            }
        };
        self.breaker.success();
        answer
            .into_iter()
            .zip(entities)
            .map(|(row, entity)| {
                row.map(|bytes| {
                    decode(dtypes, &bytes).map_err(|e| LookupError::Corrupt {
                        entity: entity.clone(),
                        reason: e.to_string(),
                    })
                })
                .transpose()
            })
            .collect()
    }

    fn failed(&self, reason: String) -> LookupError {
        let now = Instant::now();
        if self.breaker.failure(now) {
            tracing::warn!(store = %self.display, %reason, "the online feature store failed {BREAKER_FAILURES} times in a row; lookups are refused for {BREAKER_COOLDOWN:?}");
        }
        LookupError::Unavailable {
            store: self.display.clone(),
            reason,
            retry_after: self
                .breaker
                .check(now)
                .err()
                .unwrap_or(Duration::from_secs(1)),
        }
    }
}

/// Refuses an empty list, more than [`MAX_ENTITIES`], and empty or overlong keys.
fn check_entities(entities: &[String]) -> Result<(), LookupError> {
    if entities.is_empty() {
        return Err(LookupError::BadEntities(
            "the request names no entities".into(),
        ));
    }
    if entities.len() > MAX_ENTITIES {
        return Err(LookupError::BadEntities(format!(
            "the request names {} entities, at most {MAX_ENTITIES} are looked up at once",
            entities.len()
        )));
    }
    if let Some((i, _)) = entities
        .iter()
        .enumerate()
        .find(|(_, e)| e.is_empty() || e.len() > MAX_ENTITY_LEN)
    {
        return Err(LookupError::BadEntities(format!(
            "entity {i} must be 1 to {MAX_ENTITY_LEN} bytes"
        )));
    }
    Ok(())
}

/// A Redis URL without its user and password.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "(a Redis URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_half_opens_after_the_cool_down() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..BREAKER_FAILURES - 1 {
            assert!(!b.failure(t0));
        }
        b.success();
        // A success in between starts the count again.
        for _ in 0..BREAKER_FAILURES - 1 {
            assert!(!b.failure(t0));
        }
        assert!(b.check(t0).is_ok());
        assert!(b.failure(t0));
        assert_eq!(b.check(t0), Err(BREAKER_COOLDOWN));
        let later = t0 + BREAKER_COOLDOWN;
        assert!(b.check(later).is_ok());
        // Half-open: the next failure opens it again at once.
        assert!(b.failure(later));
        assert!(b.check(later).is_err());
        b.success();
        assert!(b.check(later).is_ok());
    }

    #[test]
    fn entities_are_checked_before_the_store_is_asked() {
        assert!(check_entities(&[]).is_err());
        assert!(check_entities(&["".into()]).is_err());
        assert!(check_entities(&["x".repeat(MAX_ENTITY_LEN + 1)]).is_err());
        assert!(check_entities(&vec!["c".into(); MAX_ENTITIES + 1]).is_err());
        assert!(check_entities(&["c-1".into(), "c-2".into()]).is_ok());
        assert_eq!(
            display_url("redis://user:secret@cache:6379/2"),
            "redis://cache:6379/2"
        );
    }
}
