//! Dynamic batching: a free worker takes its next run from the model's queue itself.
//!
//! A worker that finishes a run takes the oldest waiting request and, when batching, the ones
//! of the same shape waiting behind it, up to `max_batch_size` rows (waiting up to
//! `max_queue_delay` for more when that is set). A batch is therefore assembled only at the
//! moment a worker is free, so requests arriving while every worker is busy still join it;
//! under load, batches grow by themselves without any added delay. Requests whose caller has
//! gone or whose deadline has passed are dropped at that moment and never run.
//!
//! There is no batcher thread between the queue and the workers: each request is one handoff
//! (the HTTP task to a worker) and one answer, not two handoffs, which is most of a small
//! model's cost per request (see `bench/README.md`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::error::RuntimeError;
use super::job::Job;
use super::metrics::ModelMetrics;

/// How requests are grouped into runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchPolicy {
    /// Most rows per run; 1 runs every request alone.
    pub(crate) max_rows: usize,
    /// How long the oldest request may wait for the batch to fill.
    pub(crate) max_delay: Duration,
}

impl BatchPolicy {
    fn batching(self) -> bool {
        self.max_rows > 1
    }
}

/// The next run for a free worker: blocks for a first request, takes what else is waiting (up
/// to a full batch, so other free workers find the rest), waits up to `max_delay` to fill it
/// when batching, and picks the batch. `pending` is the worker's own: requests it took but could
/// not put in this run (another shape) come first next time. `None` once the queue is
/// disconnected and nothing is pending: the model was unloaded and everything queued has run.
pub(crate) fn next_batch(
    pending: &mut Pending,
    requests: &Receiver<Job>,
    policy: BatchPolicy,
    metrics: &ModelMetrics,
) -> Option<Vec<Job>> {
    loop {
        if pending.is_empty() {
            pending.push(requests.recv().ok()?);
        }
        pending.receive_waiting(requests, policy.max_rows);
        if policy.batching() {
            pending.wait_to_fill(requests, policy);
        }
        let batch = pending.take_batch(policy, Instant::now(), metrics);
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// Requests a worker has taken off the queue but not yet run. It holds at most
/// `queue_capacity` of them, since admission bounds the requests in flight.
#[derive(Default)]
pub(crate) struct Pending {
    jobs: VecDeque<Job>,
    rows: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub(crate) fn push(&mut self, job: Job) {
        self.rows = self.rows.saturating_add(job.rows);
        self.jobs.push_back(job);
    }

    /// Moves requests already waiting in the queue here until `limit` rows are pending.
    fn receive_waiting(&mut self, requests: &Receiver<Job>, limit: usize) {
        while self.rows < limit {
            match requests.try_recv() {
                Ok(job) => self.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Waits for more requests until a batch is full or the oldest request's delay is up. Rows
    /// of every shape count toward "full", so with mixed shapes a batch may leave before it is
    /// full, but never after the delay.
    fn wait_to_fill(&mut self, requests: &Receiver<Job>, policy: BatchPolicy) {
        while self.rows < policy.max_rows {
            let Some(oldest) = self.jobs.front() else {
                return;
            };
            let Some(until) = oldest.admitted_at.checked_add(policy.max_delay) else {
                return;
            };
            match requests.recv_deadline(until) {
                Ok(job) => {
                    self.push(job);
                    self.receive_waiting(requests, policy.max_rows);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// The next run: the oldest live request, plus (when batching) the next ones of the same
    /// batch key that fit within `max_rows`. Requests whose deadline has passed are answered
    /// `DeadlineExceeded` and requests whose caller has gone are dropped, wherever they are in
    /// the queue, so they neither run nor hold a queue slot any longer.
    pub(crate) fn take_batch(
        &mut self,
        policy: BatchPolicy,
        now: Instant,
        metrics: &ModelMetrics,
    ) -> Vec<Job> {
        let mut batch: Vec<Job> = Vec::new();
        let mut batch_rows = 0usize;
        let mut kept = VecDeque::with_capacity(self.jobs.len());
        let mut kept_rows = 0usize;
        for job in self.jobs.drain(..) {
            if job.is_expired(now) {
                metrics.expired.inc();
                job.answer(Err(RuntimeError::DeadlineExceeded));
                continue;
            }
            if job.is_cancelled() {
                metrics.cancelled.inc();
                continue;
            }
            let joins = match batch.first() {
                None => true,
                Some(first) => {
                    policy.batching()
                        && first.batch_key.is_some()
                        && job.batch_key == first.batch_key
                        && batch_rows.saturating_add(job.rows) <= policy.max_rows
                }
            };
            if joins {
                batch_rows = batch_rows.saturating_add(job.rows);
                batch.push(job);
            } else {
                kept_rows = kept_rows.saturating_add(job.rows);
                kept.push_back(job);
            }
        }
        self.jobs = kept;
        self.rows = kept_rows;
        batch
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};
    use tokio::sync::{Semaphore, oneshot};

    use super::*;
    use crate::runtime::job::{Admission, Answer};
    use crate::runtime::model::ModelInfo;
    use crate::runtime::options::RuntimeOptions;
    use crate::runtime::tensor::Tensor;

    struct Fixture {
        model: ModelInfo,
        semaphore: Arc<Semaphore>,
        metrics: ModelMetrics,
    }

    impl Fixture {
        fn new(max_batch_size: usize) -> Self {
            let spec = |name: &str| TensorSpec {
                name: name.to_owned(),
                datatype: "FP32".to_owned(),
                shape: Some(vec![Dim::Symbolic("batch".to_owned()), Dim::Unknown]),
            };
            let signature = ModelSignature {
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
                ir_version: 8,
                opsets: vec![],
                producer: None,
            };
            let options = RuntimeOptions {
                max_batch_size,
                ..RuntimeOptions::default()
            };
            Fixture {
                model: ModelInfo::new(signature, &options, "m:1".to_owned()).unwrap(),
                semaphore: Arc::new(Semaphore::new(100)),
                metrics: ModelMetrics::detached("m", "1").unwrap(),
            }
        }

        fn job(
            &self,
            rows: usize,
            width: usize,
            deadline: Instant,
        ) -> (Job, oneshot::Receiver<Answer>) {
            let input = Tensor::new("x", vec![rows, width], vec![0.0_f32; rows * width]).unwrap();
            let (reply, answer) = oneshot::channel();
            let admission = Admission::new(
                self.semaphore.clone().try_acquire_owned().unwrap(),
                self.metrics.queue_depth(),
            );
            let job = Job::new(vec![input], None, deadline, &self.model, reply, admission);
            (job, answer)
        }

        fn policy(&self) -> BatchPolicy {
            BatchPolicy {
                max_rows: self.model.max_batch_rows,
                max_delay: Duration::ZERO,
            }
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn rows(batch: &[Job]) -> Vec<usize> {
        batch.iter().map(|job| job.rows).collect()
    }

    #[test]
    fn a_batch_takes_requests_of_the_same_shape_in_order_up_to_the_row_limit() {
        let fixture = Fixture::new(4);
        let mut pending = Pending::default();
        let mut receivers = Vec::new();
        for (n, width) in [(1, 2), (2, 2), (1, 3), (2, 2), (1, 2)] {
            let (job, rx) = fixture.job(n, width, later());
            pending.push(job);
            receivers.push(rx);
        }
        let first = pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics);
        // 1 + 2 rows of width 2, then the width-3 request is skipped, the next 2 rows would
        // exceed 4, and the last row fits.
        assert_eq!(rows(&first), [1, 2, 1]);
        assert!(first.iter().all(|job| job.inputs[0].shape()[1] == 2));
        let second = pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].inputs[0].shape(), [1, 3]);
        let third = pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics);
        assert_eq!(rows(&third), [2]);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_free_worker_takes_a_full_batch_and_leaves_the_rest_queued_for_the_others() {
        for (max_batch_size, want) in [(4, 4), (1, 1)] {
            let fixture = Fixture::new(max_batch_size);
            let (tx, queue) = crossbeam_channel::bounded(16);
            let mut receivers = Vec::new();
            for _ in 0..6 {
                let (job, rx) = fixture.job(1, 2, later());
                tx.send(job).unwrap();
                receivers.push(rx);
            }
            let mut pending = Pending::default();
            let batch =
                next_batch(&mut pending, &queue, fixture.policy(), &fixture.metrics).unwrap();
            assert_eq!(batch.len(), want, "max_batch_size {max_batch_size}");
            // Nothing held back by this worker: another free worker finds the rest.
            assert!(pending.is_empty());
            assert_eq!(queue.len(), 6 - want);
        }
    }

    #[test]
    fn a_worker_runs_what_is_queued_after_the_model_is_dropped_then_stops() {
        let fixture = Fixture::new(4);
        let (tx, queue) = crossbeam_channel::bounded(16);
        let mut receivers = Vec::new();
        for width in [2, 3] {
            let (job, rx) = fixture.job(1, width, later());
            tx.send(job).unwrap();
            receivers.push(rx);
        }
        drop(tx);
        let mut pending = Pending::default();
        let mut runs = Vec::new();
        while let Some(batch) = next_batch(&mut pending, &queue, fixture.policy(), &fixture.metrics)
        {
            runs.push(batch[0].inputs[0].shape().to_vec());
        }
        assert_eq!(runs, [vec![1, 2], vec![1, 3]], "both shapes ran, in order");
    }

    #[test]
    fn without_batching_every_request_runs_alone() {
        let fixture = Fixture::new(1);
        let mut pending = Pending::default();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            let (job, rx) = fixture.job(1, 2, later());
            pending.push(job);
            receivers.push(rx);
        }
        for _ in 0..3 {
            let batch = pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics);
            assert_eq!(batch.len(), 1);
        }
    }

    #[test]
    fn a_request_larger_than_the_limit_still_runs_alone() {
        let fixture = Fixture::new(4);
        let mut pending = Pending::default();
        let (big, _big_rx) = fixture.job(9, 2, later());
        let (small, _small_rx) = fixture.job(1, 2, later());
        pending.push(big);
        pending.push(small);
        assert_eq!(
            rows(&pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics)),
            [9]
        );
        assert_eq!(
            rows(&pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics)),
            [1]
        );
    }

    #[test]
    fn requests_whose_caller_has_gone_are_dropped_and_free_their_slot() {
        let fixture = Fixture::new(8);
        let mut pending = Pending::default();
        let (gone, gone_rx) = fixture.job(1, 2, later());
        let (kept, _kept_rx) = fixture.job(1, 2, later());
        pending.push(gone);
        pending.push(kept);
        drop(gone_rx);
        assert_eq!(fixture.semaphore.available_permits(), 98);
        let batch = pending.take_batch(fixture.policy(), Instant::now(), &fixture.metrics);
        assert_eq!(batch.len(), 1);
        assert_eq!(fixture.metrics.cancelled().get(), 1);
        assert_eq!(fixture.semaphore.available_permits(), 99);
        assert_eq!(fixture.metrics.queue_depth().get(), 1);
    }

    #[test]
    fn expired_requests_are_answered_deadline_exceeded_and_not_batched() {
        let fixture = Fixture::new(8);
        let mut pending = Pending::default();
        let now = Instant::now();
        let (expired, mut expired_rx) = fixture.job(1, 2, now);
        let (live, _live_rx) = fixture.job(1, 2, later());
        pending.push(expired);
        pending.push(live);
        let batch = pending.take_batch(fixture.policy(), now, &fixture.metrics);
        assert_eq!(batch.len(), 1);
        assert!(!batch[0].is_expired(now));
        assert_eq!(
            expired_rx.try_recv().unwrap(),
            Err(RuntimeError::DeadlineExceeded)
        );
        assert_eq!(fixture.metrics.expired().get(), 1);
    }
}
