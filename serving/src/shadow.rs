//! Shadow versions: after the primary has answered, a sampled copy of the request goes to each
//! shadow through a bounded queue, is run in the background, and its outputs are compared with
//! the primary's. The primary never waits: a full queue drops the copy (and counts it), and a
//! shadow's runtime is small (one thread, a short queue) so it cannot take over the CPUs.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::runtime::{RuntimeError, Tensor};
use crate::served::{ServedVersion, Traffic};
use crate::traffic::{Comparison, compare};

/// Copies waiting for one shadow; beyond this they are dropped.
pub const SHADOW_QUEUE: usize = 256;
/// Copies one shadow runs at once (enough for its worker to form small batches).
const SHADOW_CONCURRENCY: usize = 8;

/// A copy of one request for a shadow.
pub struct ShadowJob {
    /// The request's inputs, as decoded for the primary.
    pub inputs: Vec<Tensor>,
    /// The outputs the client asked for.
    pub outputs: Option<Vec<String>>,
    /// What the primary answered.
    pub primary: Vec<Tensor>,
    /// After this the copy is not worth running.
    pub deadline: Instant,
}

/// One shadow of an endpoint, with the task that runs its copies.
pub struct ShadowTarget {
    /// The shadow's version number.
    pub version: i64,
    /// Share of requests mirrored to it.
    pub sample_rate: f64,
    /// The loaded version.
    pub served: Arc<ServedVersion>,
    queue: mpsc::Sender<ShadowJob>,
}

impl ShadowTarget {
    /// Starts the shadow's runner task; it ends when the target is dropped (the endpoint's
    /// routing was replaced) and its queue drains.
    pub fn start(
        version: i64,
        sample_rate: f64,
        served: Arc<ServedVersion>,
        traffic: Arc<Traffic>,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(SHADOW_QUEUE);
        tokio::spawn(run(version, served.clone(), traffic, jobs));
        ShadowTarget {
            version,
            sample_rate,
            served,
            queue,
        }
    }

    /// Hands a copy to the shadow without waiting; `false` when its queue is full (the copy is
    /// dropped; the caller counts it).
    pub fn offer(&self, job: ShadowJob) -> bool {
        self.queue.try_send(job).is_ok()
    }
}

async fn run(
    version: i64,
    served: Arc<ServedVersion>,
    traffic: Arc<Traffic>,
    mut jobs: mpsc::Receiver<ShadowJob>,
) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = jobs.recv(), if running.len() < SHADOW_CONCURRENCY => {
                let Some(job) = job else { break };
                let model = served.model.clone();
                running.push(async move {
                    let ShadowJob { inputs, outputs, primary, deadline } = job;
                    match model.infer(inputs, outputs, deadline).await {
                        // The comparison walks whole tensors: on the blocking pool.
                        Ok(outputs) => ferry_api::blocking::run_blocking(move || {
                            compare(&primary, &outputs)
                        })
                        .await
                        .map_err(|e| RuntimeError::Inference {
                            reason: format!("comparing the shadow's outputs failed: {e}"),
                        }),
                        Err(e) => Err(e),
                    }
                });
            }
            Some(result) = running.next(), if !running.is_empty() => {
                record(&traffic, version, result);
            }
        }
    }
    while let Some(result) = running.next().await {
        record(&traffic, version, result);
    }
}

fn record(traffic: &Traffic, version: i64, result: Result<Comparison, RuntimeError>) {
    let now = Instant::now();
    match result {
        Ok(comparison) => {
            traffic.stats.record_shadow(now, version, &comparison);
        }
        // Too busy or too late: the copy was shed, which is what shadows are for.
        Err(RuntimeError::Overloaded { .. } | RuntimeError::DeadlineExceeded) => {
            traffic.stats.record_shadow_dropped(now, version);
        }
        Err(e) => {
            tracing::debug!(shadow = version, error = %e, "shadow run failed");
            traffic.stats.record_shadow_error(now, version);
        }
    }
}
