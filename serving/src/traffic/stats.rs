//! Live per-version counters of one endpoint, read two ways: as a sliding window for the local
//! `GET /v2/models/{endpoint}/stats?window=…`, and as "everything since the last report" for
//! the periodic push to the registry (`POST /api/v1/endpoints/{name}/reports`).
//!
//! The window is a ring of fixed-length time slots covering the horizon; the report is a
//! separate accumulator, so rotating slots can neither lose a count from a report nor repeat
//! one. Both are updated under one short lock per event, and once a version has an entry no
//! request allocates: rotated slots are zeroed in place, keeping their buffers.

use std::collections::BTreeMap;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ferry_api::drift::Profile;
use ferry_api::records::EndpointPolicy;
use ferry_api::traffic::{EndpointAnalysis, VersionCounters, summarize};

use super::compare::Comparison;

/// Shortest slot accepted, so a zero slot cannot divide by zero.
const MIN_SLOT: Duration = Duration::from_millis(1);

/// Most slots in a ring (a day of one-second slots), so a long horizon over short slots cannot
/// allocate without bound; the horizon is shortened to fit.
const MAX_SLOTS: u64 = 86_400;

/// Counters of one endpoint's versions over time.
#[derive(Debug)]
pub struct EndpointStats {
    endpoint: String,
    origin: Instant,
    slot: Duration,
    /// Length of the ring, fixed at creation.
    slots: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Slot `i` (counted from `origin`) lives at `ring[i % ring.len()]`.
    ring: Vec<Slot>,
    /// Everything recorded since the last [`EndpointStats::take_report`].
    pending: BTreeMap<i64, VersionCounters>,
    last_report: Instant,
}

#[derive(Debug)]
struct Slot {
    index: u64,
    versions: BTreeMap<i64, VersionCounters>,
}

/// What [`EndpointStats::take_report`] hands over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalCounters {
    /// Time since the previous report (or since the stats were created).
    pub elapsed: Duration,
    /// Counters by version; versions with nothing counted are left out.
    pub versions: BTreeMap<i64, VersionCounters>,
}

impl EndpointStats {
    /// Counters for `endpoint` kept in slots of `slot` (at least 1 ms) over `horizon` (at most
    /// 86,400 slots), the longest window that can be asked for. Slots are aligned to `origin`,
    /// normally `Instant::now()`; tests pass their own clock.
    #[must_use]
    pub fn new(
        endpoint: impl Into<String>,
        slot: Duration,
        horizon: Duration,
        origin: Instant,
    ) -> Self {
        let slot = slot.max(MIN_SLOT);
        let slots = slots_in(horizon, slot).clamp(1, MAX_SLOTS);
        let ring = (0..slots)
            .map(|index| Slot {
                index,
                versions: BTreeMap::new(),
            })
            .collect();
        EndpointStats {
            endpoint: endpoint.into(),
            origin,
            slot,
            slots,
            inner: Mutex::new(Inner {
                ring,
                pending: BTreeMap::new(),
                last_report: origin,
            }),
        }
    }

    /// The endpoint counted.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The longest window kept: the number of slots times the slot length.
    #[must_use]
    pub fn horizon(&self) -> Duration {
        self.slot_span(self.slots)
    }

    /// The window [`window`](Self::window) actually sums for a requested `duration`: rounded up
    /// to whole slots (the current, partly elapsed slot counts as one), at least one slot and at
    /// most the horizon.
    #[must_use]
    pub fn effective_window(&self, duration: Duration) -> Duration {
        self.slot_span(slots_in(duration, self.slot).clamp(1, self.slots))
    }

    /// Counts one primary request answered by `version`: its latency when it succeeded, its
    /// error class (`invalid`, `overloaded`, `deadline`, `model_error`…) when it failed.
    pub fn record_request(
        &self,
        now: Instant,
        version: i64,
        latency: Duration,
        outcome: Result<(), &str>,
    ) {
        let micros = latency.as_secs_f64() * 1e6;
        self.record(now, version, |c| match outcome {
            Ok(()) => {
                c.requests += 1;
                c.latency.record(micros);
            }
            Err(class) => match c.errors.get_mut(class) {
                Some(n) => *n += 1,
                None => {
                    c.errors.insert(class.to_owned(), 1);
                }
            },
        });
    }

    /// Counts one comparison of shadow `version`'s outputs with the primary's.
    pub fn record_shadow(&self, now: Instant, version: i64, comparison: &Comparison) {
        self.record(now, version, |c| {
            comparison.record(c.shadow.get_or_insert_with(Default::default));
        });
    }

    /// Counts a request mirrored to shadow `version` but dropped because its queue was full.
    pub fn record_shadow_dropped(&self, now: Instant, version: i64) {
        self.record(now, version, |c| {
            c.shadow.get_or_insert_with(Default::default).dropped += 1;
        });
    }

    /// Counts a request shadow `version` failed on.
    pub fn record_shadow_error(&self, now: Instant, version: i64) {
        self.record(now, version, |c| {
            c.shadow.get_or_insert_with(Default::default).errors += 1;
        });
    }

    /// Counts business feedback on a prediction of `version`: a reward, and whether its
    /// predicted class matched the label, either when given. Feedback counts at the time it
    /// arrives, not at the time of the prediction it is about.
    pub fn record_feedback(
        &self,
        now: Instant,
        version: i64,
        reward: Option<f64>,
        label_correct: Option<bool>,
    ) {
        self.record(now, version, |c| {
            // A non-finite reward would make the sum, and every mean after it, meaningless
            // (and unserializable as JSON).
            if let Some(reward) = reward.filter(|r| r.is_finite()) {
                c.feedback.rewards += 1;
                c.feedback.reward_sum += reward;
            }
            if let Some(correct) = label_correct {
                c.feedback.labels += 1;
                c.feedback.correct += u64::from(correct);
            }
        });
    }

    /// The counters of the slots in the last `duration` up to `now` (see
    /// [`effective_window`](Self::effective_window)), by version; versions with nothing counted
    /// are left out.
    #[must_use]
    pub fn window(&self, now: Instant, duration: Duration) -> BTreeMap<i64, VersionCounters> {
        let current = self.slot_index(now);
        let slots = slots_in(duration, self.slot).clamp(1, self.slots);
        let oldest = current.saturating_sub(slots - 1);
        let inner = self.lock();
        let mut sum: BTreeMap<i64, VersionCounters> = BTreeMap::new();
        for slot in inner
            .ring
            .iter()
            .filter(|s| (oldest..=current).contains(&s.index))
        {
            for (version, counters) in slot.versions.iter().filter(|(_, c)| !c.is_empty()) {
                sum.entry(*version).or_default().merge(counters);
            }
        }
        drop(inner);
        sum.values_mut().for_each(trim);
        sum
    }

    /// Counts live input rows of `version` into its drift histograms, on the edges of the
    /// training profile of one input (`values` row-major, `row_width` values per row).
    pub fn record_drift<T: ferry_api::traffic::DriftValue>(
        &self,
        now: Instant,
        version: i64,
        profile: &ferry_api::drift::InputProfile,
        values: &[T],
        row_width: usize,
    ) {
        self.record(now, version, |c| {
            c.drift
                .get_or_insert_with(Default::default)
                .record_rows(profile, values, row_width);
        });
    }

    /// Everything recorded since the previous call (or since creation), exactly once: each
    /// recorded event is in the result of exactly one call.
    #[must_use]
    pub fn take_report(&self, now: Instant) -> IntervalCounters {
        let mut inner = self.lock();
        let elapsed = now.saturating_duration_since(inner.last_report);
        inner.last_report = inner.last_report.max(now);
        // Versions idle for a whole report interval are dropped; the rest keep their buffers.
        inner.pending.retain(|_, c| !c.is_empty());
        let mut versions = BTreeMap::new();
        for (version, counters) in &mut inner.pending {
            let mut taken = counters.clone();
            trim(&mut taken);
            versions.insert(*version, taken);
            zero(counters);
        }
        IntervalCounters { elapsed, versions }
    }

    /// [`window`](Self::window) summarized per version, ordered and labelled by the roles the
    /// versions play in `policy`, with the drift of those that have a profile: the contract's
    /// [`summarize`], the same numbers the registry computes from every replica's reports.
    #[must_use]
    pub fn analysis(
        &self,
        now: Instant,
        duration: Duration,
        policy: Option<&EndpointPolicy>,
        profiles: &BTreeMap<i64, Arc<Profile>>,
    ) -> EndpointAnalysis {
        let window = self.effective_window(duration);
        summarize(
            &self.endpoint,
            window.as_secs_f64(),
            policy,
            &self.window(now, duration),
            profiles,
        )
    }

    /// Applies `update` to `version`'s counters in the current slot and in the pending report.
    fn record(&self, now: Instant, version: i64, update: impl Fn(&mut VersionCounters)) {
        let index = self.slot_index(now);
        let mut inner = self.lock();
        let Inner { ring, pending, .. } = &mut *inner;
        // `index % self.slots` is below `ring.len()`, a usize.
        if let Some(slot) = ring.get_mut((index % self.slots) as usize) {
            if slot.index < index {
                slot.rotate_to(index);
            }
            // A slot newer than `index` means another thread recorded a later instant first;
            // counting into it misplaces this event by at most one slot, and never loses it.
            update(slot.versions.entry(version).or_default());
        }
        update(pending.entry(version).or_default());
    }

    fn slot_index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.slot.as_nanos()).unwrap_or(u64::MAX)
    }

    fn slot_span(&self, slots: u64) -> Duration {
        self.slot
            .checked_mul(u32::try_from(slots).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
    }

    /// Nothing panics while the lock is held and every update leaves the counters consistent,
    /// so a poisoned lock is recovered rather than failing every later request.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slot {
    /// Reuses the slot for `index`: versions idle for a whole rotation are dropped, the others
    /// zeroed in place so their buffers are reused.
    fn rotate_to(&mut self, index: u64) {
        self.index = index;
        self.versions.retain(|_, c| !c.is_empty());
        self.versions.values_mut().for_each(zero);
    }
}

/// Number of `slot`s needed to cover `duration`, rounded up.
fn slots_in(duration: Duration, slot: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(slot.as_nanos())).unwrap_or(u64::MAX)
}

/// Zeroes counters, keeping the latency histogram's buffer (built by `Default`, so a field added
/// to `VersionCounters` later is zeroed too).
fn zero(counters: &mut VersionCounters) {
    let mut latency = mem::take(&mut counters.latency);
    latency.counts.fill(0);
    *counters = VersionCounters {
        latency,
        ..VersionCounters::default()
    };
}

/// Drops trailing empty latency buckets, which zeroed buffers leave behind.
fn trim(counters: &mut VersionCounters) {
    let counts = &mut counters.latency.counts;
    let used = counts.iter().rposition(|n| *n > 0).map_or(0, |i| i + 1);
    counts.truncate(used);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Tensor;
    use crate::traffic::compare::compare;
    use ferry_api::traffic::VersionAnalysis;

    const SECOND: Duration = Duration::from_secs(1);

    fn stats(t0: Instant) -> EndpointStats {
        EndpointStats::new("fraud", SECOND, Duration::from_secs(60), t0)
    }

    fn at(t0: Instant, millis: u64) -> Instant {
        t0 + Duration::from_millis(millis)
    }

    fn ok(stats: &EndpointStats, now: Instant, version: i64) {
        stats.record_request(now, version, Duration::from_millis(5), Ok(()));
    }

    fn requests(counters: &BTreeMap<i64, VersionCounters>, version: i64) -> u64 {
        counters.get(&version).map_or(0, |c| c.requests)
    }

    #[test]
    fn a_window_sums_the_slots_inside_it_and_none_before() {
        let t0 = Instant::now();
        let s = stats(t0);
        ok(&s, at(t0, 500), 1); // slot 0
        ok(&s, at(t0, 10_200), 1); // slot 10
        ok(&s, at(t0, 30_000), 1); // slot 30
        ok(&s, at(t0, 30_900), 2); // slot 30
        let now = at(t0, 30_950);
        let last_second = s.window(now, SECOND);
        assert_eq!(
            (requests(&last_second, 1), requests(&last_second, 2)),
            (1, 1)
        );
        // 21 slots: 10 ..= 30.
        assert_eq!(requests(&s.window(now, Duration::from_secs(21)), 1), 2);
        assert_eq!(requests(&s.window(now, Duration::from_secs(20)), 1), 1);
        assert_eq!(requests(&s.window(now, Duration::from_secs(31)), 1), 3);
        // A window asked for before anything was recorded in it is empty.
        assert!(s.window(at(t0, 5_000), Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn windows_are_rounded_up_to_whole_slots_within_the_horizon() {
        let s = stats(Instant::now());
        assert_eq!(s.effective_window(Duration::from_millis(1500)), 2 * SECOND);
        assert_eq!(s.effective_window(Duration::ZERO), SECOND);
        assert_eq!(s.effective_window(Duration::from_secs(3600)), s.horizon());
        assert_eq!(s.horizon(), Duration::from_secs(60));
    }

    #[test]
    fn slots_older_than_the_horizon_are_forgotten_as_the_ring_rotates() {
        let t0 = Instant::now();
        let s = stats(t0);
        ok(&s, at(t0, 0), 1);
        ok(&s, at(t0, 59_000), 1);
        let horizon = Duration::from_secs(60);
        assert_eq!(requests(&s.window(at(t0, 59_500), horizon), 1), 2);
        // At 60 s slot 0 has left the window, even before its place in the ring is reused…
        assert_eq!(requests(&s.window(at(t0, 60_000), horizon), 1), 1);
        // …and reusing it counts only the new request.
        ok(&s, at(t0, 60_100), 1);
        assert_eq!(requests(&s.window(at(t0, 60_200), SECOND), 1), 1);
        assert_eq!(requests(&s.window(at(t0, 60_200), horizon), 1), 2);
        // Long after, nothing is left.
        assert!(s.window(at(t0, 500_000), horizon).is_empty());
    }

    #[test]
    fn versions_idle_for_a_whole_rotation_leave_the_slots() {
        let t0 = Instant::now();
        let s = EndpointStats::new("fraud", SECOND, 2 * SECOND, t0);
        ok(&s, at(t0, 0), 1);
        ok(&s, at(t0, 2_000), 2); // reuses slot 0's place: version 1 zeroed, kept
        ok(&s, at(t0, 4_000), 2); // and again: version 1 was idle for a rotation, dropped
        let inner = s.lock();
        let keys: Vec<i64> = inner
            .ring
            .iter()
            .flat_map(|s| s.versions.keys().copied())
            .collect();
        assert_eq!(keys, vec![2]);
    }

    #[test]
    fn a_horizon_of_too_many_slots_is_shortened_and_a_zero_slot_widened() {
        let t0 = Instant::now();
        let s = EndpointStats::new("fraud", Duration::ZERO, Duration::from_secs(1_000_000), t0);
        assert_eq!(s.horizon(), Duration::from_millis(86_400));
        ok(&s, t0, 1);
        assert_eq!(requests(&s.window(t0, Duration::ZERO), 1), 1);
    }

    #[test]
    fn errors_are_counted_by_class_and_not_as_requests() {
        let t0 = Instant::now();
        let s = stats(t0);
        ok(&s, t0, 1);
        ok(&s, t0, 1);
        ok(&s, t0, 1);
        s.record_request(t0, 1, SECOND, Err("deadline"));
        let window = s.window(t0, SECOND);
        let c = &window[&1];
        assert_eq!(c.requests, 3);
        assert_eq!(c.errors, BTreeMap::from([("deadline".to_owned(), 1)]));
        assert_eq!(c.latency.total(), 3, "failed requests have no latency");
        let analysis = VersionAnalysis::from_counters(1, "stable", c);
        assert_eq!(analysis.error_rate, Some(0.25));
    }

    #[test]
    fn latency_percentiles_come_out_of_the_window_within_a_bucket() {
        let t0 = Instant::now();
        let s = stats(t0);
        for ms in 1..=1000 {
            s.record_request(t0, 1, Duration::from_millis(ms), Ok(()));
        }
        let window = s.window(t0, SECOND);
        let analysis = VersionAnalysis::from_counters(1, "stable", &window[&1]);
        let p50 = analysis.latency_p50_ms.unwrap();
        let p99 = analysis.latency_p99_ms.unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.125, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.125, "{p99}");
    }

    #[test]
    fn shadow_comparisons_drops_and_failures_are_counted_for_the_shadow_version() {
        let t0 = Instant::now();
        let s = stats(t0);
        let primary = [Tensor::new("p", vec![1, 2], vec![0.9_f32, 0.1]).unwrap()];
        let flipped = [Tensor::new("p", vec![1, 2], vec![0.1_f32, 0.9]).unwrap()];
        s.record_shadow(t0, 3, &compare(&primary, &primary));
        s.record_shadow(t0, 3, &compare(&primary, &flipped));
        s.record_shadow_dropped(t0, 3);
        s.record_shadow_error(t0, 3);
        let window = s.window(t0, SECOND);
        let shadow = window[&3].shadow.clone().unwrap();
        assert_eq!(
            (
                shadow.compared,
                shadow.agreed,
                shadow.dropped,
                shadow.errors
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(window[&3].requests, 0);
    }

    #[test]
    fn feedback_counts_rewards_and_labels_and_ignores_non_finite_rewards() {
        let t0 = Instant::now();
        let s = stats(t0);
        s.record_feedback(t0, 2, Some(1.0), Some(true));
        s.record_feedback(t0, 2, Some(0.5), Some(false));
        s.record_feedback(t0, 2, Some(f64::NAN), None);
        s.record_feedback(t0, 2, None, Some(true));
        let window = s.window(t0, SECOND);
        let analysis = VersionAnalysis::from_counters(2, "canary", &window[&2]);
        assert_eq!(analysis.reward_count, 2);
        assert_eq!(analysis.reward_mean, Some(0.75));
        assert_eq!(analysis.label_count, 3);
        assert_eq!(analysis.accuracy, Some(2.0 / 3.0));
    }

    #[test]
    fn a_report_holds_everything_since_the_previous_one_and_nothing_twice() {
        let t0 = Instant::now();
        let s = stats(t0);
        ok(&s, at(t0, 100), 1);
        ok(&s, at(t0, 200), 2);
        let first = s.take_report(at(t0, 5_000));
        assert_eq!(first.elapsed, Duration::from_secs(5));
        assert_eq!(
            (requests(&first.versions, 1), requests(&first.versions, 2)),
            (1, 1)
        );
        // Slots rotate past the horizon in between; the report neither loses nor repeats.
        ok(&s, at(t0, 70_000), 1);
        ok(&s, at(t0, 130_000), 1);
        let second = s.take_report(at(t0, 130_000));
        assert_eq!(second.elapsed, Duration::from_secs(125));
        assert_eq!(requests(&second.versions, 1), 2);
        assert!(!second.versions.contains_key(&2), "version 2 was idle");
        let third = s.take_report(at(t0, 135_000));
        assert!(third.versions.is_empty());
    }

    #[test]
    fn reports_carry_no_trailing_empty_latency_buckets() {
        let t0 = Instant::now();
        let s = stats(t0);
        s.record_request(t0, 1, Duration::from_secs(10), Ok(()));
        let first = s.take_report(t0);
        s.record_request(t0, 1, Duration::from_micros(20), Ok(()));
        let second = s.take_report(t0);
        assert!(first.versions[&1].latency.counts.len() > 10);
        assert_eq!(second.versions[&1].latency.counts.last(), Some(&1));
        assert_eq!(second.versions[&1].latency.total(), 1);
    }

    #[test]
    fn reports_taken_during_concurrent_recording_add_up_to_everything_recorded() {
        let t0 = Instant::now();
        // Small slots and horizon, so the ring rotates many times during the test.
        let s = Arc::new(EndpointStats::new(
            "fraud",
            Duration::from_millis(10),
            Duration::from_millis(100),
            t0,
        ));
        let per_thread = 20_000_u64;
        let threads: Vec<_> = (0..4_i64)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let now = at(t0, i / 10);
                        if i % 10 == 0 {
                            s.record_request(now, t % 2, SECOND, Err("model_error"));
                        } else {
                            ok(&s, now, t % 2);
                        }
                        s.record_feedback(now, t % 2, Some(1.0), None);
                    }
                })
            })
            .collect();
        let mut total = VersionCounters::default();
        let mut reports = 0;
        let mut now_ms = 0;
        while !threads.iter().all(|t| t.is_finished()) {
            now_ms += 1;
            for c in s.take_report(at(t0, now_ms)).versions.values() {
                total.merge(c);
            }
            reports += 1;
        }
        for t in threads {
            t.join().unwrap();
        }
        for c in s.take_report(at(t0, now_ms + 1)).versions.values() {
            total.merge(c);
        }
        let recorded = 4 * per_thread;
        assert_eq!(total.requests + total.error_count(), recorded);
        assert_eq!(total.error_count(), recorded / 10);
        assert_eq!(total.latency.total(), total.requests);
        assert_eq!(total.feedback.rewards, recorded);
        assert!(reports > 0);
    }

    #[test]
    fn an_event_recorded_with_an_older_clock_than_its_slot_is_never_lost() {
        let t0 = Instant::now();
        let s = stats(t0);
        ok(&s, at(t0, 61_000), 1); // ring place 1 now holds slot 61
        ok(&s, at(t0, 1_000), 1); // a thread that read the clock a minute ago
        assert_eq!(requests(&s.window(at(t0, 61_000), SECOND), 1), 2);
        assert_eq!(requests(&s.take_report(at(t0, 61_000)).versions, 1), 2);
    }

    #[test]
    fn the_analysis_lists_stable_canary_shadows_then_retired_versions() {
        let t0 = Instant::now();
        let s = stats(t0);
        let policy: EndpointPolicy = serde_json::from_value(serde_json::json!({
            "model": "fraud",
            "stable": 4,
            "canary": {"version": 5, "weight": 0.1},
            "shadows": [{"version": 6, "sample_rate": 0.5}],
        }))
        .unwrap();
        ok(&s, t0, 1);
        ok(&s, t0, 5);
        ok(&s, t0, 4);
        ok(&s, t0, 4);
        let analysis = s.analysis(t0, Duration::from_secs(90), Some(&policy), &BTreeMap::new());
        let rows: Vec<(i64, &str, u64)> = analysis
            .versions
            .iter()
            .map(|v| (v.version, v.role.as_str(), v.requests))
            .collect();
        assert_eq!(
            rows,
            vec![
                (4, "stable", 2),
                (5, "canary", 1),
                (6, "shadow", 0),
                (1, "retired", 1)
            ]
        );
        assert_eq!(analysis.window_seconds, 60.0);
        assert_eq!(analysis.endpoint, "fraud");
    }
}
