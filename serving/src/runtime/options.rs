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
    /// thread included). At least 1 when set; `None` (the default) picks by the model's size
    /// when it loads: see [`default_intra_op_threads`].
    pub intra_op_threads: Option<usize>,
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
    /// One worker (using every CPU available to the process for a large model, one for a small
    /// one: [`default_intra_op_threads`]), batches of up to 64 rows with no added delay, and room
    /// for 256 requests.
    ///
    /// Measured on a compute-bound MLP (`benches/throughput.rs`): one worker with two threads
    /// ran batched requests as fast as a bare session on batches of 64, while two workers with
    /// one thread each reached about 55%: each ran half-size batches over its own copy of the
    /// weights.
    fn default() -> Self {
        RuntimeOptions {
            workers: 1,
            intra_op_threads: None,
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
            ("intra_op_threads", self.intra_op_threads.unwrap_or(1)),
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

    /// The intra-op threads a model of `model_bytes` (its ONNX file) runs with: the number set,
    /// else [`default_intra_op_threads`] for the CPUs available.
    #[must_use]
    pub fn intra_op_threads_for(&self, model_bytes: u64) -> usize {
        self.intra_op_threads
            .unwrap_or_else(|| default_intra_op_threads(model_bytes, available_cpus()))
    }
}

/// Models whose ONNX file is smaller than this run on one intra-op thread unless told otherwise.
pub const SMALL_MODEL_BYTES: u64 = 8 * 1024 * 1024;

/// The intra-op threads a model gets when none are set: one for a model under
/// [`SMALL_MODEL_BYTES`], else all `cpus`.
///
/// The file's size stands for the weights, and so for the work one row costs. A run of a small
/// model is too short to share: waking a second thread for it costs more than it saves. Measured
/// with `bench/ab.sh` on 2 CPUs (bench/README.md, "One intra-op thread for small models"): one
/// thread cost 0.85x the CPU per request on `mlp.onnx` (0.3 MB) and on an 835k-parameter MLP
/// (3.3 MB), with as many requests per second; on `mlp_large.onnx` (21 MB) one thread gave 10%
/// fewer rows per second than two.
#[must_use]
pub fn default_intra_op_threads(model_bytes: u64, cpus: usize) -> usize {
    if model_bytes < SMALL_MODEL_BYTES {
        1
    } else {
        cpus.max(1)
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
    fn defaults_give_one_worker_and_pick_its_threads_by_model_size() {
        let options = RuntimeOptions::default();
        assert!(options.validate().is_ok());
        assert_eq!(options.workers, 1);
        assert_eq!(options.intra_op_threads, None);
        assert!(options.max_batch_size > 1, "batching is on by default");
        assert_eq!(options.intra_op_threads_for(300_000), 1);
        assert_eq!(options.intra_op_threads_for(21_000_000), available_cpus());
    }

    #[test]
    fn small_models_get_one_intra_op_thread_large_ones_every_cpu() {
        assert_eq!(default_intra_op_threads(0, 8), 1);
        assert_eq!(default_intra_op_threads(SMALL_MODEL_BYTES - 1, 8), 1);
        assert_eq!(default_intra_op_threads(SMALL_MODEL_BYTES, 8), 8);
        assert_eq!(default_intra_op_threads(2 << 30, 2), 2);
        assert_eq!(
            default_intra_op_threads(2 << 30, 0),
            1,
            "never zero threads"
        );
    }

    #[test]
    fn threads_set_explicitly_win_over_the_size_rule() {
        let options = RuntimeOptions {
            intra_op_threads: Some(3),
            ..RuntimeOptions::default()
        };
        assert_eq!(options.intra_op_threads_for(100), 3);
        assert_eq!(options.intra_op_threads_for(1 << 30), 3);
        let zero = RuntimeOptions {
            intra_op_threads: Some(0),
            ..RuntimeOptions::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "model failed to load: intra_op_threads must be at least 1"
        );
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
