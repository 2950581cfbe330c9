//! Recent predictions, kept just long enough to join the business feedback that arrives later
//! (`POST /v2/models/{endpoint}/feedback {id, reward?, label?}`) to the version that answered.
//!
//! Memory is strictly bounded: at most `capacity` predictions and `capacity` ids that already
//! received feedback, evicted oldest first. Every operation is O(1) amortized: a hash map finds
//! an id, and a FIFO queue of `(id, sequence number)` gives the eviction order; entries replaced
//! or consumed leave stale queue items behind that are skipped when they reach the front, and the
//! queue is compacted when stale items make it twice as long as the map it indexes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::split::Route;

/// What was predicted under one request id.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionEntry {
    /// The version that answered.
    pub version: i64,
    /// How the request was routed.
    pub route: Route,
    /// The predicted class per row, when the outputs read as classes
    /// (see [`predicted_classes`](super::compare::predicted_classes)).
    pub classes: Option<Vec<i64>>,
    /// When the prediction was made; the time-to-live counts from here.
    pub at: Instant,
}

/// Why feedback could not be joined to a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// No prediction with this id is remembered: never made, or evicted for room.
    #[error("no recent prediction has this id")]
    Unknown,
    /// The prediction is older than the time-to-live.
    #[error("the prediction with this id is too old for feedback")]
    Expired,
    /// Feedback for this id was already taken; a second one must not count twice.
    #[error("feedback for this prediction was already given")]
    AlreadyGiven,
}

/// Counts describing the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackStoreStats {
    /// Predictions held now.
    pub len: usize,
    /// Ids that received feedback and are remembered to refuse a second one.
    pub consumed: usize,
    /// Predictions inserted since the start.
    pub inserted: u64,
    /// Inserts whose id was already held or already given feedback (the newer prediction
    /// replaced the older one).
    pub collisions: u64,
    /// Predictions dropped for room before they expired: when this grows, the capacity is too
    /// small for the traffic and the time-to-live.
    pub evicted: u64,
    /// Predictions dropped because they outlived the time-to-live.
    pub expired: u64,
}

/// A bounded, time-limited, thread-safe map from request id to [`PredictionEntry`].
#[derive(Debug)]
pub struct RecentPredictions {
    capacity: usize,
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
    stats: FeedbackStoreStats,
}

#[derive(Debug)]
struct Live {
    entry: PredictionEntry,
    seq: u64,
}

#[derive(Debug)]
struct Consumed {
    /// When the prediction would have expired; `None` past `Instant`'s range.
    until: Option<Instant>,
    seq: u64,
}

impl RecentPredictions {
    /// A store of at most `capacity` predictions (and as many consumed ids), each joinable for
    /// `ttl` after it was made. A capacity of 0 keeps nothing.
    #[must_use]
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentPredictions {
            capacity,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers the prediction made under `id`. Request ids should be unique; when one is
    /// reused, the newest prediction wins (feedback refers to what the caller saw last) and the
    /// collision is counted. Expired and, past capacity, the oldest predictions are dropped.
    ///
    /// The bound is on entries, not bytes: callers cap the length of client-supplied ids.
    pub fn insert(&self, id: String, entry: PredictionEntry) {
        let now = entry.at;
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
        if inner
            .live
            .insert(Arc::clone(&id), Live { entry, seq })
            .is_some()
        {
            inner.stats.collisions += 1;
        }
        inner.live_order.push_back((id, seq));
        self.sweep_live(&mut inner, now);
        self.sweep_consumed(&mut inner, now);
    }

    /// Takes the prediction made under `id` for its feedback, at time `now`. Afterwards the id
    /// answers [`FeedbackError::AlreadyGiven`] until the prediction would have expired.
    ///
    /// # Errors
    /// [`FeedbackError::Unknown`] when no such prediction is held, [`FeedbackError::Expired`]
    /// when it is older than the time-to-live, [`FeedbackError::AlreadyGiven`] when its feedback
    /// was already taken.
    pub fn take_for_feedback(
        &self,
        id: &str,
        now: Instant,
    ) -> Result<PredictionEntry, FeedbackError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(live) = inner.live.get(id) {
            let until = live.entry.at.checked_add(self.ttl);
            if until.is_some_and(|until| now > until) {
                return Err(FeedbackError::Expired);
            }
            let Some((id, live)) = inner.live.remove_entry(id) else {
                return Err(FeedbackError::Unknown);
            };
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
                Err(FeedbackError::Expired)
            }
            Some(_) => Err(FeedbackError::AlreadyGiven),
            None => Err(FeedbackError::Unknown),
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
            consumed: inner.consumed.len(),
            ..inner.stats
        }
    }

    /// Nothing panics while the lock is held and every operation leaves the maps consistent, so
    /// a poisoned lock is recovered rather than failing every later request.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops expired predictions from the front, then the oldest past capacity.
    fn sweep_live(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, seq)) = inner.live_order.front() {
            let current = inner.live.get(id).filter(|l| l.seq == *seq);
            let Some(live) = current else {
                inner.live_order.pop_front();
                continue;
            };
            let expired = live
                .entry
                .at
                .checked_add(self.ttl)
                .is_some_and(|until| now > until);
            if expired {
                inner.stats.expired += 1;
            } else if inner.live.len() > self.capacity {
                inner.stats.evicted += 1;
            } else {
                break;
            }
            if let Some((id, _)) = inner.live_order.pop_front() {
                inner.live.remove(&id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const TTL: Duration = Duration::from_secs(60);

    fn entry(version: i64, at: Instant) -> PredictionEntry {
        PredictionEntry {
            version,
            route: Route::Stable,
            classes: Some(vec![1]),
            at,
        }
    }

    #[test]
    fn feedback_joins_the_prediction_made_under_its_id() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, TTL);
        store.insert("req-1".into(), entry(3, t0));
        assert_eq!(store.take_for_feedback("req-1", t0 + TTL), Ok(entry(3, t0)));
    }

    #[test]
    fn an_id_never_predicted_is_unknown() {
        let store = RecentPredictions::new(10, TTL);
        assert_eq!(
            store.take_for_feedback("nope", Instant::now()),
            Err(FeedbackError::Unknown)
        );
    }

    #[test]
    fn a_prediction_older_than_the_time_to_live_is_expired() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, TTL);
        store.insert("req-1".into(), entry(3, t0));
        let late = t0 + TTL + Duration::from_nanos(1);
        assert_eq!(
            store.take_for_feedback("req-1", late),
            Err(FeedbackError::Expired)
        );
        // Still expired, not consumed, when asked again.
        assert_eq!(
            store.take_for_feedback("req-1", late),
            Err(FeedbackError::Expired)
        );
    }

    #[test]
    fn a_second_feedback_for_the_same_id_is_refused_until_the_prediction_would_expire() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, TTL);
        store.insert("req-1".into(), entry(3, t0));
        assert!(store.take_for_feedback("req-1", t0).is_ok());
        let again = store.take_for_feedback("req-1", t0 + Duration::from_secs(1));
        assert_eq!(again, Err(FeedbackError::AlreadyGiven));
        let late = t0 + TTL + Duration::from_secs(1);
        assert_eq!(
            store.take_for_feedback("req-1", late),
            Err(FeedbackError::Expired)
        );
        assert_eq!(store.stats().consumed, 1);
    }

    #[test]
    fn a_reused_id_keeps_the_newest_prediction_and_counts_the_collision() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(10, TTL);
        store.insert("req-1".into(), entry(1, t0));
        store.insert("req-1".into(), entry(2, t0 + Duration::from_secs(1)));
        assert_eq!(store.len(), 1);
        assert_eq!(store.stats().collisions, 1);
        assert_eq!(
            store.take_for_feedback("req-1", t0).map(|e| e.version),
            Ok(2)
        );
        // Reused once more after its feedback: the new prediction can be joined again.
        store.insert("req-1".into(), entry(3, t0 + Duration::from_secs(2)));
        assert_eq!(store.stats().collisions, 2);
        assert_eq!(
            store.take_for_feedback("req-1", t0).map(|e| e.version),
            Ok(3)
        );
    }

    #[test]
    fn past_capacity_the_oldest_predictions_are_evicted_first() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(3, TTL);
        for i in 0..5 {
            store.insert(format!("req-{i}"), entry(i, t0));
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.stats().evicted, 2);
        for i in 0..2 {
            let gone = store.take_for_feedback(&format!("req-{i}"), t0);
            assert_eq!(gone, Err(FeedbackError::Unknown));
        }
        for i in 2..5 {
            assert!(store.take_for_feedback(&format!("req-{i}"), t0).is_ok());
        }
    }

    #[test]
    fn a_replaced_prediction_is_evicted_at_its_new_age_not_its_old_one() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(2, TTL);
        store.insert("a".into(), entry(1, t0));
        store.insert("b".into(), entry(1, t0));
        store.insert("a".into(), entry(2, t0)); // "a" is now the newest
        store.insert("c".into(), entry(1, t0)); // evicts "b", the oldest
        assert_eq!(
            store.take_for_feedback("b", t0),
            Err(FeedbackError::Unknown)
        );
        assert_eq!(store.take_for_feedback("a", t0).map(|e| e.version), Ok(2));
    }

    #[test]
    fn expired_predictions_are_dropped_as_expired_not_evicted() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(100, TTL);
        for i in 0..10 {
            store.insert(format!("old-{i}"), entry(1, t0));
        }
        store.insert("new".into(), entry(1, t0 + TTL + Duration::from_secs(1)));
        let stats = store.stats();
        assert_eq!((stats.len, stats.expired, stats.evicted), (1, 10, 0));
    }

    #[test]
    fn a_store_of_capacity_zero_keeps_nothing() {
        let t0 = Instant::now();
        let store = RecentPredictions::new(0, TTL);
        store.insert("req-1".into(), entry(1, t0));
        assert!(store.is_empty());
        assert_eq!(
            store.take_for_feedback("req-1", t0),
            Err(FeedbackError::Unknown)
        );
    }

    #[test]
    fn memory_stays_bounded_over_a_million_inserts() {
        let t0 = Instant::now();
        let capacity = 1000;
        let store = RecentPredictions::new(capacity, TTL);
        for i in 0..1_000_000_u64 {
            // A mix of fresh ids, reused ids and feedback, the worst case for stale queue items.
            let id = if i % 3 == 0 {
                format!("hot-{}", i % 1500)
            } else {
                format!("req-{i}")
            };
            let at = t0 + Duration::from_millis(i / 100);
            store.insert(id.clone(), entry(1, at));
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
        let store = Arc::new(RecentPredictions::new(100_000, TTL));
        for i in 0..1000 {
            store.insert(format!("shared-{i}"), entry(1, t0));
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut joined = 0;
                    for i in 0..1000 {
                        store.insert(format!("own-{t}-{i}"), entry(t, t0));
                        joined += usize::from(
                            store.take_for_feedback(&format!("shared-{i}"), t0).is_ok(),
                        );
                        assert!(store.take_for_feedback(&format!("own-{t}-{i}"), t0).is_ok());
                        assert_eq!(
                            store.take_for_feedback(&format!("own-{t}-{i}"), t0),
                            Err(FeedbackError::AlreadyGiven)
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
