//! A loaded model version: its worker threads, its bounded queue, and the handle the HTTP layer
//! calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use ferry_api::onnx::ModelSignature;
use tokio::sync::{Semaphore, oneshot};

use super::batcher::BatchPolicy;
use super::error::RuntimeError;
use super::job::{Admission, Job};
use super::library::OnnxRuntime;
use super::metrics::ModelMetrics;
use super::model::{ModelInfo, ModelSource};
use super::options::RuntimeOptions;
use super::tensor::Tensor;
use super::worker::{self, WorkerSetup};

/// A model version ready to answer: sessions built, warmed up, workers waiting.
///
/// Cheap to clone (an `Arc`). When the last handle is dropped, the model takes no new requests;
/// its workers run what is still queued and exit. Requests
/// whose callers went away meanwhile are skipped, not run. Threads are never joined on drop, so
/// dropping a handle never blocks the async runtime.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    model: Arc<ModelInfo>,
    options: RuntimeOptions,
    metrics: ModelMetrics,
    /// Dropping the last sender (with `Shared`) is what stops the workers.
    requests: crossbeam_channel::Sender<Job>,
    /// One permit per admitted request, queued or running: the queue's bound.
    admission: Arc<Semaphore>,
}

impl LoadedModel {
    /// Loads a model: decides its intra-op threads if the options leave them open
    /// ([`RuntimeOptions::intra_op_threads_for`] the size of `source`), builds one session per
    /// worker (on the worker threads), checks the graph
    /// against `signature`, runs one warm-up inference per worker on zeros (dynamic dimensions
    /// set to 1), then opens its queue.
    ///
    /// Async so it can be awaited from a request handler: all blocking work happens on the new
    /// threads. If the returned future is dropped before it completes, the threads stop once they
    /// notice.
    ///
    /// # Errors
    /// [`RuntimeError::Load`] when the options are invalid, the signature has types Ferry cannot
    /// serve or does not match the graph, ONNX Runtime refuses the model, the warm-up run fails,
    /// or a thread cannot be started.
    pub async fn load(
        runtime: &OnnxRuntime,
        source: ModelSource,
        signature: ModelSignature,
        options: RuntimeOptions,
        metrics: ModelMetrics,
    ) -> Result<Self, RuntimeError> {
        options.validate()?;
        let model_bytes = source.byte_len().await?;
        let intra_op_threads = options.intra_op_threads_for(model_bytes);
        let options = RuntimeOptions {
            intra_op_threads: Some(intra_op_threads),
            ..options
        };
        let label = format!("{}:{}", metrics.model(), metrics.version());
        let model = Arc::new(ModelInfo::new(signature, &options, label)?);
        // The workers take their batches from this queue whenever they are free, so a batch
        // keeps gaining late arrivals until a worker takes it.
        let (requests_tx, requests_rx) = crossbeam_channel::bounded(options.queue_capacity);
        let policy = BatchPolicy {
            max_rows: model.max_batch_rows,
            max_delay: options.max_queue_delay,
        };
        let mut ready = Vec::with_capacity(options.workers);
        for index in 0..options.workers {
            let (ready_tx, ready_rx) = oneshot::channel();
            let setup = WorkerSetup {
                index,
                runtime: runtime.clone(),
                source: source.clone(),
                model: model.clone(),
                options: options.clone(),
                metrics: metrics.clone(),
                requests: requests_rx.clone(),
                policy,
            };
            worker::spawn(setup, ready_tx)
                .map_err(|e| RuntimeError::load(format!("cannot start a worker thread: {e}")))?;
            ready.push(ready_rx);
        }
        drop(requests_rx);
        for ready in ready {
            // On error, returning drops `requests_tx`: workers already waiting for requests exit.
            ready
                .await
                .map_err(|_| RuntimeError::load("a worker thread stopped while loading"))??;
        }
        tracing::debug!(
            model = %model.label,
            workers = options.workers,
            model_bytes,
            intra_op_threads,
            batching = model.batching,
            max_batch_size = model.max_batch_rows,
            "sessions built and warmed up"
        );
        Ok(LoadedModel {
            shared: Arc::new(Shared {
                admission: Arc::new(Semaphore::new(options.queue_capacity)),
                model,
                options,
                metrics,
                requests: requests_tx,
            }),
        })
    }

    /// Runs the model on `inputs` and returns the outputs named in `outputs` (in that order), or
    /// all of them in graph order when `None`.
    ///
    /// Inputs are expected to be validated against [`LoadedModel::signature`] by the caller; bad
    /// ones that slip through still only fail this request. Refused immediately when the queue is
    /// full, so memory stays bounded. Must be awaited inside a Tokio runtime with timers enabled
    /// (the deadline is a Tokio timer). Dropping the future abandons the request: if it has not
    /// started yet, it never runs.
    ///
    /// # Errors
    /// - [`RuntimeError::UnknownOutput`] for a requested output the model lacks;
    /// - [`RuntimeError::DeadlineExceeded`] if `deadline` passes before the answer (an expired
    ///   request is never run);
    /// - [`RuntimeError::Overloaded`] when `queue_capacity` requests are already admitted;
    /// - [`RuntimeError::Inference`] when ONNX Runtime fails the run or the worker panics;
    /// - [`RuntimeError::ShuttingDown`] if the model's workers have stopped.
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        outputs: Option<Vec<String>>,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let shared = &*self.shared;
        if let Some(unknown) = outputs
            .iter()
            .flatten()
            .find(|name| !shared.model.has_output(name))
        {
            return Err(RuntimeError::UnknownOutput {
                output: unknown.clone(),
            });
        }
        if Instant::now() >= deadline {
            shared.metrics.expired.inc();
            return Err(RuntimeError::DeadlineExceeded);
        }
        let Ok(permit) = shared.admission.clone().try_acquire_owned() else {
            shared.metrics.overloaded.inc();
            return Err(RuntimeError::Overloaded {
                retry_after: shared.retry_after(),
            });
        };
        let admission = Admission::new(permit, &shared.metrics.queue_depth);
        let (reply, answer) = oneshot::channel();
        let job = Job::new(inputs, outputs, deadline, &shared.model, reply, admission);
        match shared.requests.try_send(job) {
            Ok(()) => {}
            // The channel holds `queue_capacity` jobs and the semaphore admits no more than
            // that, so it cannot be full; answer as overloaded rather than wait if it ever is.
            Err(TrySendError::Full(_)) => {
                shared.metrics.overloaded.inc();
                return Err(RuntimeError::Overloaded {
                    retry_after: shared.retry_after(),
                });
            }
            Err(TrySendError::Disconnected(_)) => return Err(RuntimeError::ShuttingDown),
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RuntimeError::inference(
                "the model's worker stopped before answering",
            )),
            Err(_) => Err(RuntimeError::DeadlineExceeded),
        }
    }

    /// The signature requests are validated against.
    #[must_use]
    pub fn signature(&self) -> &ModelSignature {
        &self.shared.model.signature
    }

    /// The options the model was loaded with, its intra-op threads decided (never `None`).
    #[must_use]
    pub fn options(&self) -> &RuntimeOptions {
        &self.shared.options
    }

    /// Whether requests are merged into batches (`max_batch_size > 1` and a model whose inputs
    /// and outputs all have a dynamic first dimension).
    #[must_use]
    pub fn is_batching(&self) -> bool {
        self.shared.model.batching
    }

    /// Most rows one run takes: `max_batch_size` when batching, else 1.
    #[must_use]
    pub fn max_batch_size(&self) -> usize {
        self.shared.model.max_batch_rows
    }

    /// Requests admitted and not yet answered (queued or running); at most `queue_capacity`.
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        self.shared
            .options
            .queue_capacity
            .saturating_sub(self.shared.admission.available_permits())
    }

    /// The model's instruments.
    #[must_use]
    pub fn metrics(&self) -> &ModelMetrics {
        &self.shared.metrics
    }
}

impl Shared {
    /// Roughly how long a full queue takes to drain: runs needed for the queue, at the mean run
    /// time so far, spread over the workers.
    fn retry_after(&self) -> Duration {
        let runs = self.metrics.inference_seconds.get_sample_count();
        // Before any run, assume a run takes 10 ms.
        let mean = if runs == 0 {
            0.01
        } else {
            #[allow(clippy::cast_precision_loss)] // run counts are far below 2^52
            let runs = runs as f64;
            self.metrics.inference_seconds.get_sample_sum() / runs
        };
        let per_round = self
            .model
            .max_batch_rows
            .saturating_mul(self.options.workers)
            .max(1);
        let rounds = self.options.queue_capacity.div_ceil(per_round);
        #[allow(clippy::cast_precision_loss)] // queue sizes are far below 2^52
        let seconds = mean * rounds as f64;
        Duration::from_secs_f64(seconds.clamp(0.001, 60.0))
    }
}
