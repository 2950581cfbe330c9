//! The in-process prediction index: recent predictions kept in this process's memory, for a
//! single replica (`ferry up`'s default). Several replicas share the Redis index instead.
//!
//! Memory is strictly bounded: at most `capacity` predictions and `capacity` ids that already
//! received feedback, and at most `max_bytes` of predictions, evicted oldest first. Every
//! operation is O(1) amortized: a hash map finds an id, and a FIFO queue of `(id, sequence
//! number)` gives the eviction order; entries replaced or consumed leave stale queue items behind
//! that are skipped when they reach the front, and the queue is compacted when stale items make
//! it twice as long as the map it indexes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::{IndexHealth, JoinError, Prediction, PredictionIndex};

/// What one held prediction costs beyond its id and classes: the map and queue entries, the
/// `Arc` header and the entry's fixed fields, rounded up.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// Counts describing the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackStoreStats {
    /// Predictions held now.
    pub len: usize,
    /// What the held predictions cost, in bytes (ids, classes and a fixed overhead each).
    pub bytes: usize,
    /// Ids that received feedback and are remembered to refuse a second one.
    pub consumed: usize,
    /// Predictions inserted since the start.
    pub inserted: u64,
    /// Inserts whose id was already held or already given feedback (the newer prediction
    /// replaced the older one).
    pub collisions: u64,
    /// Predictions dropped for room (entries or bytes) before they expired: when this grows,
    /// the capacity is too small for the traffic and the time-to-live.
    pub evicted: u64,
    /// Predictions dropped because they outlived the time-to-live.
    pub expired: u64,
}

/// A bounded, time-limited, thread-safe map from request id to [`Prediction`].
#[derive(Debug)]
pub struct RecentPredictions {
    capacity: usize,
    max_bytes: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<Arc<str>, Live>,
    live_order: VecDeque<(Arc<str>, u64)>,
    consumed: HashMap<Arc<str>, Consumed>,
    consumed_order: VecDeque<(Arc<str>, u64)>,
    next_seq: u64,
    bytes: usize,
    stats: FeedbackStoreStats,
}

#[derive(Debug)]
struct Live {
    entry: Prediction,
    /// When it was made, on the monotonic clock the time-to-live counts on.
    at: Instant,
    /// What it costs, counted against `max_bytes`.
    bytes: usize,
    seq: u64,
}

#[derive(Debug)]
struct Consumed {
    /// When the prediction would have expired; `None` past `Instant`'s range.
    until: Option<Instant>,
    seq: u64,
}

impl RecentPredictions {
    /// A store of at most `capacity` predictions (and as many consumed ids) costing at most
    /// `max_bytes`, each joinable for `ttl` after it was made. A capacity of 0 keeps nothing.
    #[must_use]
    pub fn new(capacity: usize, max_bytes: usize, ttl: Duration) -> Self {
        RecentPredictions {
            capacity,
            max_bytes,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers the prediction made under `id`. Request ids should be unique; when one is
    /// reused, the newest prediction wins (feedback refers to what the caller saw last) and the
    /// collision is counted. Expired and, past capacity (entries or bytes), the oldest
    /// predictions are dropped.
    pub fn insert(&self, id: &str, entry: Prediction, now: Instant) {
        let bytes = ENTRY_OVERHEAD_BYTES
            + id.len()
            + entry
                .classes
                .as_ref()
                .map_or(0, |c| c.len() * size_of::<i64>());
        // Allocated before locking, to keep the critical section short.
        let id: Arc<str> = Arc::from(id);
        let mut inner = self.lock();
        inner.stats.inserted += 1;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        // A reused id makes the old prediction and any feedback already taken on it moot.
        if inner.consumed.remove(&id).is_some() {
            inner.stats.collisions += 1;
        }
        inner.bytes += bytes;
        let live = Live {
            entry,
            at: now,
            bytes,
            seq,
        };
        if let Some(old) = inner.live.insert(Arc::clone(&id), live) {
            inner.bytes -= old.bytes;
            inner.stats.collisions += 1;
        }
        inner.live_order.push_back((id, seq));
        self.sweep_live(&mut inner, now);
        self.sweep_consumed(&mut inner, now);
    }

    /// Takes the prediction made under `id` for its feedback, at time `now`. Afterwards the id
    /// answers [`JoinError::AlreadyGiven`] until the prediction would have expired.
    ///
    /// # Errors
    /// [`JoinError::Unknown`] when no such prediction is held, [`JoinError::Expired`]
    /// when it is older than the time-to-live, [`JoinError::AlreadyGiven`] when its feedback
    /// was already taken.
    pub fn take_for_feedback(&self, id: &str, now: Instant) -> Result<Prediction, JoinError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(live) = inner.live.get(id) {
            let until = live.at.checked_add(self.ttl);
            if until.is_some_and(|until| now > until) {
                return Err(JoinError::Expired);
            }
            let Some((id, live)) = inner.live.remove_entry(id) else {
                return Err(JoinError::Unknown);
            };
            inner.bytes -= live.bytes;
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner
                .consumed
                .insert(Arc::clone(&id), Consumed { until, seq });
            inner.consumed_order.push_back((id, seq));
            self.sweep_consumed(inner, now);
            // The consumed entry's live queue item is now stale.
            compact(&mut inner.live_order, &inner.live, |l| l.seq);
            return Ok(live.entry);
        }
        match inner.consumed.get(id) {
            Some(consumed) if consumed.until.is_some_and(|until| now > until) => {
                Err(JoinError::Expired)
            }
            Some(_) => Err(JoinError::AlreadyGiven),
            None => Err(JoinError::Unknown),
        }
    }

    /// The prediction made under `id`, left in place (see [`RecentPredictions::take_for_feedback`]
    /// for the errors).
    ///
    /// # Errors
    /// As [`RecentPredictions::take_for_feedback`].
    pub fn peek(&self, id: &str, now: Instant) -> Result<Prediction, JoinError> {
        let inner = self.lock();
        if let Some(live) = inner.live.get(id) {
            if live
                .at
                .checked_add(self.ttl)
                .is_some_and(|until| now > until)
            {
                return Err(JoinError::Expired);
            }
            return Ok(live.entry.clone());
        }
        match inner.consumed.get(id) {
            Some(consumed) if consumed.until.is_some_and(|until| now > until) => {
                Err(JoinError::Expired)
            }
            Some(_) => Err(JoinError::AlreadyGiven),
            None => Err(JoinError::Unknown),
        }
    }

    /// Number of predictions held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no prediction is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts for metrics.
    #[must_use]
    pub fn stats(&self) -> FeedbackStoreStats {
        let inner = self.lock();
        FeedbackStoreStats {
            len: inner.live.len(),
            bytes: inner.bytes,
            consumed: inner.consumed.len(),
            ..inner.stats
        }
    }

    /// Nothing panics while the lock is held and every operation leaves the maps consistent, so
    /// a poisoned lock is recovered rather than failing every later request.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops expired predictions from the front, then the oldest past capacity or the bytes.
    fn sweep_live(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, seq)) = inner.live_order.front() {
            let current = inner.live.get(id).filter(|l| l.seq == *seq);
            let Some(live) = current else {
                inner.live_order.pop_front();
                continue;
            };
            let expired = live
                .at
                .checked_add(self.ttl)
                .is_some_and(|until| now > until);
            if expired {
                inner.stats.expired += 1;
            } else if inner.live.len() > self.capacity || inner.bytes > self.max_bytes {
                inner.stats.evicted += 1;
            } else {
                break;
            }
            if let Some((id, _)) = inner.live_order.pop_front()
                && let Some(gone) = inner.live.remove(&id)
            {
                inner.bytes -= gone.bytes;
            }
        }
        compact(&mut inner.live_order, &inner.live, |l| l.seq);
    }

    /// Drops consumed ids whose prediction expired, then the oldest past capacity.
    fn sweep_consumed(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, seq)) = inner.consumed_order.front() {
            let current = inner.consumed.get(id).filter(|c| c.seq == *seq);
            let Some(consumed) = current else {
                inner.consumed_order.pop_front();
                continue;
            };
            let expired = consumed.until.is_some_and(|until| now > until);
            if !expired && inner.consumed.len() <= self.capacity {
                break;
            }
            if let Some((id, _)) = inner.consumed_order.pop_front() {
                inner.consumed.remove(&id);
            }
        }
        compact(&mut inner.consumed_order, &inner.consumed, |c| c.seq);
    }
}

/// Drops stale queue items once they make the queue twice as long as the map it orders (plus a
/// little, so tiny stores do not compact on every call): linear work after linearly many
/// operations, O(1) amortized.
fn compact<V>(
    order: &mut VecDeque<(Arc<str>, u64)>,
    map: &HashMap<Arc<str>, V>,
    seq: impl Fn(&V) -> u64,
) {
    if order.len() > 2 * map.len() + 16 {
        order.retain(|(id, s)| map.get(id).is_some_and(|v| seq(v) == *s));
    }
}

/// The in-process [`PredictionIndex`]: one [`RecentPredictions`] per endpoint, created on the
/// endpoint's first prediction (so the names it holds are the served ones).
#[derive(Debug)]
pub struct LocalIndex {
    capacity: usize,
    max_bytes: usize,
    ttl: Duration,
    endpoints: Mutex<HashMap<String, Arc<RecentPredictions>>>,
}

impl LocalIndex {
    /// An index keeping, per endpoint, at most `capacity` predictions costing at most
    /// `max_bytes`, each for `ttl`.
    #[must_use]
    pub fn new(capacity: usize, max_bytes: usize, ttl: Duration) -> Self {
        LocalIndex {
            capacity,
            max_bytes,
            ttl,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    fn store(&self, endpoint: &str, create: bool) -> Option<Arc<RecentPredictions>> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = endpoints.get(endpoint) {
            return Some(Arc::clone(store));
        }
        create.then(|| {
            let store = Arc::new(RecentPredictions::new(
                self.capacity,
                self.max_bytes,
                self.ttl,
            ));
            endpoints.insert(endpoint.to_string(), Arc::clone(&store));
            store
        })
    }

    /// The counts of every endpoint's store, summed.
    #[must_use]
    pub fn stats(&self) -> FeedbackStoreStats {
        let stores: Vec<_> = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        stores
            .iter()
            .map(|s| s.stats())
            .fold(FeedbackStoreStats::default(), |a, b| FeedbackStoreStats {
                len: a.len + b.len,
                bytes: a.bytes + b.bytes,
                consumed: a.consumed + b.consumed,
                inserted: a.inserted + b.inserted,
                collisions: a.collisions + b.collisions,
                evicted: a.evicted + b.evicted,
                expired: a.expired + b.expired,
            })
    }
}

impl PredictionIndex for LocalIndex {
    fn remember(&self, endpoint: &str, id: &str, prediction: Prediction) {
        if let Some(store) = self.store(endpoint, true) {
            store.insert(id, prediction, Instant::now());
        }
    }

    fn take<'a>(
        &'a self,
        endpoint: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, JoinError>> {
        let taken = match self.store(endpoint, false) {
            Some(store) => store.take_for_feedback(id, Instant::now()),
            None => Err(JoinError::Unknown),
        };
        Box::pin(std::future::ready(taken))
    }

    fn peek<'a>(
        &'a self,
        endpoint: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, JoinError>> {
        let peeked = match self.store(endpoint, false) {
            Some(store) => store.peek(id, Instant::now()),
            None => Err(JoinError::Unknown),
        };
        Box::pin(std::future::ready(peeked))
    }

    fn health(&self) -> IndexHealth {
        let stats = self.stats();
        IndexHealth {
            store: "memory",
            up: true,
            error: None,
            held: Some(stats.len as u64),
            dropped: 0,
            evicted: stats.evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::traffic::Route;
    use std::sync::Arc;

    const TTL: Duration = Duration::from_secs(60);

    fn entry(version: i64) -> Prediction {
        Prediction {
            version,
            route: Route::Stable,
            classes: Some(vec![1]),
            at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn feedback_joins_the_prediction_made_under_its_id() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, usize::MAX, TTL);
        store.insert("req-1", entry(3), t0);
        assert_eq!(store.take_for_feedback("req-1", t0 + TTL), Ok(entry(3)));
    }

    #[test]
    fn an_id_never_predicted_is_unknown() {
        let store = RecentPredictions::new(10, usize::MAX, TTL);
        assert_eq!(
            store.take_for_feedback("nope", Instant::now()),
            Err(JoinError::Unknown)
        );
    }

    #[test]
    fn a_prediction_older_than_the_time_to_live_is_expired() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, usize::MAX, TTL);
        store.insert("req-1", entry(3), t0);
        let late = t0 + TTL + Duration::from_nanos(1);
        assert_eq!(
            store.take_for_feedback("req-1", late),
            Err(JoinError::Expired)
        );
        // Still expired, not consumed, when asked again.
        assert_eq!(
            store.take_for_feedback("req-1", late),
            Err(JoinError::Expired)
        );
    }

    #[test]
    fn a_second_feedback_for_the_same_id_is_refused_until_the_prediction_would_expire() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, usize::MAX, TTL);
        store.insert("req-1", entry(3), t0);
        assert!(store.take_for_feedback("req-1", t0).is_ok());
        let again = store.take_for_feedback("req-1", t0 + Duration::from_secs(1));
        assert_eq!(again, Err(JoinError::AlreadyGiven));
        let late = t0 + TTL + Duration::from_secs(1);
        assert_eq!(
            store.take_for_feedback("req-1", late),
            Err(JoinError::Expired)
        );
        assert_eq!(store.stats().consumed, 1);
    }

    #[test]
    fn a_reused_id_keeps_the_newest_prediction_and_counts_the_collision() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, usize::MAX, TTL);
        store.insert("req-1", entry(1), t0);
        store.insert("req-1", entry(2), t0 + Duration::from_secs(1));
        assert_eq!(store.len(), 1);
        assert_eq!(store.stats().collisions, 1);
        assert_eq!(
            store.take_for_feedback("req-1", t0).map(|e| e.version),
            Ok(2)
        );
        // Reused once more after its feedback: the new prediction can be joined again.
        store.insert("req-1", entry(3), t0 + Duration::from_secs(2));
        assert_eq!(store.stats().collisions, 2);
        assert_eq!(
            store.take_for_feedback("req-1", t0).map(|e| e.version),
            Ok(3)
        );
    }

    #[test]
    fn past_capacity_the_oldest_predictions_are_evicted_first() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(3, usize::MAX, TTL);
        for i in 0..5 {
            store.insert(&format!("req-{i}"), entry(i), t0);
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.stats().evicted, 2);
        for i in 0..2 {
            let gone = store.take_for_feedback(&format!("req-{i}"), t0);
            assert_eq!(gone, Err(JoinError::Unknown));
        }
        for i in 2..5 {
            assert!(store.take_for_feedback(&format!("req-{i}"), t0).is_ok());
        }
    }

    #[test]
    fn past_the_byte_budget_the_oldest_predictions_are_evicted_first() {
        let t0 = Instant::now();
        let one = ENTRY_OVERHEAD_BYTES + "req-0".len() + size_of::<i64>();
        let store = RecentPredictions::new(100, 3 * one, TTL);
        for i in 0..5 {
            store.insert(&format!("req-{i}"), entry(i), t0);
        }
        let stats = store.stats();
        assert_eq!((stats.len, stats.bytes, stats.evicted), (3, 3 * one, 2));
        // A large prediction pushes out as many as its size needs.
        let big = Prediction {
            classes: Some(vec![0; 40]),
            ..entry(9)
        };
        store.insert("big", big, t0);
        assert_eq!(store.len(), 1);
        assert!(store.take_for_feedback("big", t0).is_ok());
        assert_eq!(store.stats().bytes, 0);
    }

    #[test]
    fn a_replaced_prediction_is_evicted_at_its_new_age_not_its_old_one() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(2, usize::MAX, TTL);
        store.insert("a", entry(1), t0);
        store.insert("b", entry(1), t0);
        store.insert("a", entry(2), t0); // "a" is now the newest
        store.insert("c", entry(1), t0); // evicts "b", the oldest
        assert_eq!(store.take_for_feedback("b", t0), Err(JoinError::Unknown));
        assert_eq!(store.take_for_feedback("a", t0).map(|e| e.version), Ok(2));
    }

    #[test]
    fn expired_predictions_are_dropped_as_expired_not_evicted() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(100, usize::MAX, TTL);
        for i in 0..10 {
            store.insert(&format!("old-{i}"), entry(1), t0);
        }
        store.insert("new", entry(1), t0 + TTL + Duration::from_secs(1));
        let stats = store.stats();
        assert_eq!((stats.len, stats.expired, stats.evicted), (1, 10, 0));
    }

    #[test]
    fn a_store_of_capacity_zero_keeps_nothing() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(0, usize::MAX, TTL);
        store.insert("req-1", entry(1), t0);
        assert!(store.is_empty());
        assert_eq!(
            store.take_for_feedback("req-1", t0),
            Err(JoinError::Unknown)
        );
    }

    #[test]
    fn memory_stays_bounded_over_a_million_inserts() {
        let t0 = Instant::now();
        let capacity = 1000;
        let store = RecentPredictions::new(capacity, usize::MAX, TTL);
        for i in 0..1_000_000_u64 {
            // A mix of fresh ids, reused ids and feedback, the worst case for stale queue items.
            let id = if i % 3 == 0 {
                format!("hot-{}", i % 1500)
            } else {
                format!("req-{i}")
            };
            let at = t0 + Duration::from_millis(i / 100);
            store.insert(&id, entry(1), at);
            if i % 2 == 0 {
                let _ = store.take_for_feedback(&id, at);
            }
            if i % 4096 == 0 {
                let inner = store.lock();
                assert!(inner.live.len() <= capacity);
                assert!(inner.consumed.len() <= capacity);
                assert!(
                    inner.live_order.len() <= 2 * capacity + 17,
                    "{}",
                    inner.live_order.len()
                );
                assert!(inner.consumed_order.len() <= 2 * capacity + 17);
            }
        }
        let stats = store.stats();
        assert_eq!(stats.inserted, 1_000_000);
        assert!(stats.len <= capacity && stats.consumed <= capacity);
        assert!(stats.evicted > 0);
    }

    #[test]
    fn concurrent_feedback_on_the_same_ids_is_joined_exactly_once() {
        let t0 = Instant::now();
        let store = Arc::new(RecentPredictions::new(100_000, usize::MAX, TTL));
        for i in 0..1000 {
            store.insert(&format!("shared-{i}"), entry(1), t0);
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut joined = 0;
                    for i in 0..1000 {
                        store.insert(&format!("own-{t}-{i}"), entry(t), t0);
                        joined += usize::from(
                            store.take_for_feedback(&format!("shared-{i}"), t0).is_ok(),
                        );
                        assert!(store.take_for_feedback(&format!("own-{t}-{i}"), t0).is_ok());
                        assert_eq!(
                            store.take_for_feedback(&format!("own-{t}-{i}"), t0),
                            Err(JoinError::AlreadyGiven)
                        );
                    }
                    joined
                })
            })
            .collect();
        let joined: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(joined, 1000);
        assert_eq!(store.stats().inserted, 5000);
        assert!(store.is_empty());
    }
}
