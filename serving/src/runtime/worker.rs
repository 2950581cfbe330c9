//! Worker threads: each owns one ONNX Runtime session, takes its next batch from the model's
//! queue whenever it is free ([`super::batcher::next_batch`]) and runs it.
//!
//! `Session::run` blocks for the whole inference, so it only ever happens here, on plain
//! threads, never on the async runtime that serves HTTP.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Receiver;
use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};
use ort::session::Session;
use ort::value::{Outlet, ValueType};
use tokio::sync::oneshot;

use super::batcher::{BatchPolicy, Pending, next_batch};
use super::error::RuntimeError;
use super::job::{Answer, Job};
use super::library::OnnxRuntime;
use super::metrics::ModelMetrics;
use super::model::{ModelInfo, ModelSource, servable_datatype};
use super::options::{RuntimeOptions, available_cpus};
use super::tensor::{DataType, Tensor};

/// Everything a worker thread needs to start.
pub(crate) struct WorkerSetup {
    pub(crate) index: usize,
    pub(crate) runtime: OnnxRuntime,
    pub(crate) source: ModelSource,
    pub(crate) model: Arc<ModelInfo>,
    pub(crate) options: RuntimeOptions,
    pub(crate) metrics: ModelMetrics,
    /// The model's queue of admitted requests.
    pub(crate) requests: Receiver<Job>,
    /// How it groups requests into runs.
    pub(crate) policy: BatchPolicy,
}

/// Starts a worker thread. It builds its session, warms it up and reports on `ready` before it
/// takes any request; it stops once the queue is disconnected and empty.
pub(crate) fn spawn(
    setup: WorkerSetup,
    ready: oneshot::Sender<Result<(), RuntimeError>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("infer {} #{}", setup.model.label, setup.index))
        .spawn(move || {
            if setup.options.low_priority {
                lower_priority(&setup.model.label);
            }
            let requests = setup.requests.clone();
            let (policy, metrics) = (setup.policy, setup.metrics.clone());
            let mut worker = match Worker::start(setup) {
                Ok(worker) => worker,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            if ready.send(Ok(())).is_err() {
                // Loading was abandoned (its future dropped, or another worker failed).
                return;
            }
            let mut pending = Pending::default();
            while let Some(batch) = next_batch(&mut pending, &requests, policy, &metrics) {
                worker.execute(batch);
            }
        })
}

/// Moves the calling thread to the idle scheduling class; failing that, it runs at normal
/// priority, which is slower for the others but not wrong.
fn lower_priority(label: &str) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(model = label, error = ?e, "cannot lower the worker's priority");
    }
}

struct Worker {
    session: Session,
    model: Arc<ModelInfo>,
    metrics: ModelMetrics,
}

impl Worker {
    fn start(setup: WorkerSetup) -> Result<Self, RuntimeError> {
        let session = build_session(&setup)?;
        check_signature(&session, &setup.model.signature)?;
        let mut worker = Worker {
            session,
            model: setup.model,
            metrics: setup.metrics,
        };
        // The first run allocates buffers and picks kernels; pay for it before serving, and
        // refuse a model that cannot run at all.
        let zeros = warm_up_inputs(&worker.session, &worker.model.signature)?;
        worker
            .run_guarded(&zeros)
            .map_err(|err| RuntimeError::load(format!("warm-up run on zeros failed: {err}")))?;
        Ok(worker)
    }

    /// Runs one batch and answers each of its requests.
    fn execute(&mut self, batch: Vec<Job>) {
        // Stale requests were dropped when the batch was formed; check again in case a caller
        // left meanwhile.
        let now = Instant::now();
        let mut jobs = Vec::with_capacity(batch.len());
        for job in batch {
            if job.is_expired(now) {
                self.metrics.expired.inc();
                job.answer(Err(RuntimeError::DeadlineExceeded));
            } else if job.is_cancelled() {
                self.metrics.cancelled.inc();
            } else {
                self.metrics
                    .queue_seconds
                    .observe(now.duration_since(job.admitted_at).as_secs_f64());
                jobs.push(job);
            }
        }
        let answers = match jobs.as_slice() {
            [] => return,
            [job] => {
                let span = tracing::debug_span!(parent: &job.span, "inference", rows = job.rows);
                vec![span.in_scope(|| self.run_timed(&job.inputs, job.rows))]
            }
            _ => self.run_batch(&jobs),
        };
        for (job, answer) in jobs.into_iter().zip(answers) {
            let answer = answer.and_then(|outputs| pick_outputs(outputs, job.outputs.as_deref()));
            job.answer(answer);
        }
    }

    /// Stacks the requests' inputs, runs them once and splits the outputs back. If that fails
    /// (ONNX Runtime error, or an output that does not grow with the batch), each request is run
    /// alone, so only a request that fails by itself gets an error.
    fn run_batch(&mut self, jobs: &[Job]) -> Vec<Answer> {
        let rows: Vec<usize> = jobs.iter().map(|job| job.rows).collect();
        let total: usize = rows.iter().sum();
        let span = tracing::debug_span!(
            parent: None,
            "inference",
            model = %self.model.label,
            rows = total,
            requests = jobs.len()
        );
        for job in jobs {
            span.follows_from(&job.span);
        }
        let _entered = span.enter();
        let stacked = stack_inputs(jobs)
            .and_then(|inputs| self.run_timed(&inputs, total))
            .and_then(|outputs| split_outputs(outputs, &rows));
        match stacked {
            Ok(per_job) => per_job.into_iter().map(Ok).collect(),
            Err(err) => {
                tracing::warn!(
                    model = %self.model.label,
                    requests = jobs.len(),
                    error = %err,
                    "batched run failed; running its requests one by one"
                );
                jobs.iter()
                    .map(|job| self.run_timed(&job.inputs, job.rows))
                    .collect()
            }
        }
    }

    fn run_timed(&mut self, inputs: &[Tensor], rows: usize) -> Answer {
        let started = Instant::now();
        let answer = self.run_guarded(inputs);
        self.metrics
            .inference_seconds
            .observe(started.elapsed().as_secs_f64());
        // Row counts are far below 2^52, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        self.metrics.batch_size.observe(rows as f64);
        answer
    }

    /// One run; a panic inside it becomes an error for this run only, and the worker lives on.
    fn run_guarded(&mut self, inputs: &[Tensor]) -> Answer {
        catch_unwind(AssertUnwindSafe(|| self.run(inputs))).unwrap_or_else(|panic| {
            Err(RuntimeError::inference(format!(
                "the worker panicked: {}",
                panic_message(panic.as_ref())
            )))
        })
    }

    fn run(&mut self, inputs: &[Tensor]) -> Answer {
        let values = inputs
            .iter()
            .map(Tensor::to_session_input)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RuntimeError::inference(e.to_string()))?;
        let outputs = self
            .session
            .run(values)
            .map_err(|e| RuntimeError::inference(e.to_string()))?;
        outputs
            .iter()
            .map(|(name, value)| Tensor::from_session_output(name, &value))
            .collect()
    }
}

fn build_session(setup: &WorkerSetup) -> Result<Session, RuntimeError> {
    // ort's builder errors carry the builder back for recovery; only the message matters here.
    fn failed<R>(e: ort::Error<R>) -> RuntimeError {
        RuntimeError::load(format!("configuring the session: {e}"))
    }
    let options = &setup.options;
    let spinning = if options.intra_op_spinning { "1" } else { "0" };
    let mut builder = Session::builder(setup.runtime.environment())
        .map_err(failed)?
        // `LoadedModel::load` has decided the threads by now; all CPUs is the rule's upper end.
        .with_intra_threads(options.intra_op_threads.unwrap_or_else(available_cpus))
        .map_err(failed)?
        .with_inter_threads(options.inter_op_threads)
        .map_err(failed)?
        .with_parallel_execution(options.inter_op_threads > 1)
        .map_err(failed)?
        .with_config_entry("session.intra_op.allow_spinning", spinning)
        .map_err(failed)?
        .with_config_entry("session.inter_op.allow_spinning", spinning)
        .map_err(failed)?;
    let session = match &setup.source {
        ModelSource::File(path) => builder.commit_from_file(path),
        ModelSource::Bytes(bytes) => builder.commit_from_memory(bytes),
    };
    session.map_err(|e| RuntimeError::load(format!("ONNX Runtime refused the model: {e}")))
}

/// The graph is the truth: the signature must name exactly its inputs and outputs, with the
/// same datatypes, or requests validated against it would fail at run time.
fn check_signature(session: &Session, signature: &ModelSignature) -> Result<(), RuntimeError> {
    for (role, outlets, specs) in [
        ("input", session.inputs(), &signature.inputs),
        ("output", session.outputs(), &signature.outputs),
    ] {
        for outlet in outlets {
            let Some(spec) = specs.iter().find(|spec| spec.name == outlet.name()) else {
                return Err(RuntimeError::load(format!(
                    "the model has {role} {:?}, which its signature does not list",
                    outlet.name()
                )));
            };
            let declared = servable_datatype(role, spec)?;
            if let ValueType::Tensor { ty, .. } = outlet.dtype()
                && DataType::from_ort(*ty) != Some(declared)
            {
                return Err(RuntimeError::load(format!(
                    "{role} {:?} is {ty} in the model but {declared} in its signature",
                    outlet.name()
                )));
            }
        }
        if let Some(extra) = specs
            .iter()
            .find(|spec| !outlets.iter().any(|outlet| outlet.name() == spec.name))
        {
            return Err(RuntimeError::load(format!(
                "the signature lists {role} {:?}, which the model does not have",
                extra.name
            )));
        }
    }
    Ok(())
}

/// Zeros for every input, dynamic dimensions set to 1.
fn warm_up_inputs(
    session: &Session,
    signature: &ModelSignature,
) -> Result<Vec<Tensor>, RuntimeError> {
    session
        .inputs()
        .iter()
        .map(|outlet| {
            let spec = signature
                .inputs
                .iter()
                .find(|spec| spec.name == outlet.name())
                .ok_or_else(|| {
                    RuntimeError::load(format!("no signature for input {:?}", outlet.name()))
                })?;
            let datatype = servable_datatype("input", spec)?;
            Tensor::zeros(spec.name.clone(), datatype, warm_up_shape(spec, outlet))
                .map_err(|e| RuntimeError::load(e.to_string()))
        })
        .collect()
}

fn warm_up_shape(spec: &TensorSpec, outlet: &Outlet) -> Vec<usize> {
    match (&spec.shape, outlet.dtype()) {
        (Some(dims), _) => dims
            .iter()
            .map(|dim| match dim {
                Dim::Fixed(size) => usize::try_from(*size).unwrap_or(1),
                Dim::Symbolic(_) | Dim::Unknown => 1,
            })
            .collect(),
        // The signature does not know the rank; ONNX Runtime may (-1 marks a dynamic dim).
        (None, ValueType::Tensor { shape, .. }) => shape
            .iter()
            .map(|&dim| usize::try_from(dim).unwrap_or(1))
            .collect(),
        (None, _) => Vec::new(),
    }
}

/// Each input stacked across the requests, in the first request's input order.
fn stack_inputs(jobs: &[Job]) -> Result<Vec<Tensor>, RuntimeError> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    first
        .inputs
        .iter()
        .map(|input| {
            let parts = jobs
                .iter()
                .map(|job| {
                    job.input(input.name()).ok_or_else(|| {
                        RuntimeError::invalid_input(input.name(), "missing from a batched request")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::concat_rows(&parts)
        })
        .collect()
}

/// Each output cut back into one piece per request.
fn split_outputs(outputs: Vec<Tensor>, rows: &[usize]) -> Result<Vec<Vec<Tensor>>, RuntimeError> {
    let mut per_job: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        let pieces = output.split_rows(rows).map_err(|err| {
            RuntimeError::inference(format!(
                "output {:?} of shape {:?} does not have one row per input row: {err}",
                output.name(),
                output.shape()
            ))
        })?;
        for (outputs, piece) in per_job.iter_mut().zip(pieces) {
            outputs.push(piece);
        }
    }
    Ok(per_job)
}

/// The outputs a request asked for, in its order (all of them in graph order when it named none).
fn pick_outputs(outputs: Vec<Tensor>, wanted: Option<&[String]>) -> Answer {
    let Some(wanted) = wanted else {
        return Ok(outputs);
    };
    let mut available: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    let mut picked: Vec<Tensor> = Vec::with_capacity(wanted.len());
    for name in wanted {
        let slot = available
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|tensor| tensor.name() == name));
        let tensor = match slot.and_then(Option::take) {
            Some(tensor) => tensor,
            // Asked for twice: the first one already moved out, so copy it.
            None => picked
                .iter()
                .find(|tensor| tensor.name() == name)
                .cloned()
                .ok_or_else(|| RuntimeError::UnknownOutput {
                    output: name.clone(),
                })?,
        };
        picked.push(tensor);
    }
    Ok(picked)
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, value: f32) -> Tensor {
        Tensor::new(name, vec![1], vec![value]).unwrap()
    }

    #[test]
    fn outputs_come_back_in_the_requested_order_and_duplicates_are_copied() {
        let outputs = vec![tensor("a", 1.0), tensor("b", 2.0)];
        let picked = pick_outputs(
            outputs.clone(),
            Some(&["b".to_owned(), "a".to_owned(), "b".to_owned()]),
        )
        .unwrap();
        let names: Vec<&str> = picked.iter().map(Tensor::name).collect();
        assert_eq!(names, ["b", "a", "b"]);
        assert_eq!(pick_outputs(outputs.clone(), None).unwrap(), outputs);
        assert_eq!(
            pick_outputs(outputs, Some(&["c".to_owned()])).unwrap_err(),
            RuntimeError::UnknownOutput {
                output: "c".to_owned()
            }
        );
    }

    #[test]
    fn an_output_without_one_row_per_input_row_cannot_be_split() {
        let pooled = Tensor::new("mean", vec![2], vec![1.0_f32, 2.0]).unwrap();
        let err = split_outputs(vec![pooled], &[1, 2]).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not have one row per input row"),
            "{err}"
        );
    }

    #[test]
    fn a_panic_message_is_recovered_from_str_and_string_payloads() {
        let from_str = catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(from_str.as_ref()), "static");
        let from_string = catch_unwind(|| panic!("{}", String::from("formatted"))).unwrap_err();
        assert_eq!(panic_message(from_string.as_ref()), "formatted");
    }
}
