//! How one model version runs: threads, batching and queue size.

use std::time::Duration;

use super::error::RuntimeError;

/// Per-model runtime settings. [`RuntimeOptions::default`] suits most CPU models; see each field
/// for how to tune it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Worker threads, each owning its own ONNX Runtime session (and its own copy of the
    /// weights). One worker with all the CPUs as intra-op threads suits batched models best: the
    /// next batch forms while one runs, and batches stay large. More workers help small models
    /// that cannot batch (fixed first dimension). At least 1.
    pub workers: usize,
    /// Threads one run may use inside an operator (ONNX Runtime's intra-op pool, the worker
    /// thread included). At least 1.
    pub intra_op_threads: usize,
    /// Threads that run independent branches of the graph in parallel; 1 runs nodes in
    /// sequence, which is best for most models. At least 1.
    pub inter_op_threads: usize,
    /// Let intra-op threads spin while waiting for work: lower latency for large models, but
    /// they burn CPU the HTTP layer could use. Off by default.
    pub intra_op_spinning: bool,
    /// Most rows one run takes when batching requests; 1 disables dynamic batching. Batching only
    /// happens for models whose inputs and outputs all have a dynamic first dimension.
    pub max_batch_size: usize,
    /// How long the oldest waiting request may wait for others to fill a batch. Zero batches
    /// only what is already waiting when a worker becomes free, adding no latency.
    pub max_queue_delay: Duration,
    /// Requests admitted (queued or running) before new ones are refused with
    /// [`RuntimeError::Overloaded`]. Bounds the memory a model's queue can hold. At least 1.
    pub queue_capacity: usize,
    /// Run the workers with the idle scheduling policy (`SCHED_IDLE` on Linux): they only get a
    /// CPU nothing else wants. For shadow versions, which must never slow the versions that
    /// answer. Only the worker threads are affected, so combine it with one intra-op thread.
    pub low_priority: bool,
}

impl Default for RuntimeOptions {
    /// One worker using every CPU available to the process, batches of up to 64 rows with no
    /// added delay, and room for 256 requests.
    ///
    /// Measured on a compute-bound MLP (`benches/throughput.rs`): one worker with two threads
    /// ran batched requests as fast as a bare session on batches of 64, while two workers with
    /// one thread each reached about 55%: each ran half-size batches over its own copy of the
    /// weights.
    fn default() -> Self {
        RuntimeOptions {
            workers: 1,
            intra_op_threads: available_cpus(),
            inter_op_threads: 1,
            intra_op_spinning: false,
            max_batch_size: 64,
            max_queue_delay: Duration::ZERO,
            queue_capacity: 256,
            low_priority: false,
        }
    }
}

impl RuntimeOptions {
    /// Checks the settings that must be positive.
    ///
    /// # Errors
    /// [`RuntimeError::Load`] naming the offending setting.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        for (name, value) in [
            ("workers", self.workers),
            ("intra_op_threads", self.intra_op_threads),
            ("inter_op_threads", self.inter_op_threads),
            ("max_batch_size", self.max_batch_size),
            ("queue_capacity", self.queue_capacity),
        ] {
            if value == 0 {
                return Err(RuntimeError::load(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// CPUs this process may use (affinity and cgroup quotas included), at least 1.
#[must_use]
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_one_worker_every_available_cpu() {
        let options = RuntimeOptions::default();
        assert!(options.validate().is_ok());
        assert_eq!(options.workers, 1);
        assert_eq!(options.intra_op_threads, available_cpus());
        assert!(options.max_batch_size > 1, "batching is on by default");
    }

    #[test]
    fn zero_workers_or_zero_capacity_are_refused_by_name() {
        let options = RuntimeOptions {
            queue_capacity: 0,
            ..RuntimeOptions::default()
        };
        assert_eq!(
            options.validate().unwrap_err().to_string(),
            "model failed to load: queue_capacity must be at least 1"
        );
        let options = RuntimeOptions {
            workers: 0,
            ..RuntimeOptions::default()
        };
        assert!(
            options
                .validate()
                .unwrap_err()
                .to_string()
                .contains("workers")
        );
    }
}
