//! Live input drift: the inputs of answered requests, binned on the training profile's edges, off
//! the request path. The request only copies the profiled inputs into a bounded queue; a task per
//! served name counts them into the per-version counters (which `/stats`, the registry's
//! analysis and its drift monitor read). A full queue drops the sample and counts the drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferry_registry::drift::Profile;
use tokio::sync::mpsc;

use crate::runtime::{Tensor, TensorData};
use crate::traffic::EndpointStats;

/// Samples waiting to be counted, per served name.
const QUEUE: usize = 1024;

/// One input's values, kept in the element type they arrived in (no conversion on the request
/// path for the usual float32).
pub enum Values {
    /// Float32 values.
    F32(Vec<f32>),
    /// Anything else, widened.
    F64(Vec<f64>),
}

/// The profiled inputs of one answered request.
pub struct DriftSample {
    /// The version that answered.
    pub version: i64,
    /// Its training profile.
    pub profile: Arc<Profile>,
    /// Per profiled input: name, values, values per row.
    pub inputs: Vec<(String, Values, usize)>,
}

/// Copies the inputs `profile` describes out of a request's tensors; `None` when it describes
/// none of them (nothing to count).
pub fn sample(version: i64, profile: &Arc<Profile>, inputs: &[Tensor]) -> Option<DriftSample> {
    let mut taken = Vec::new();
    for tensor in inputs {
        let Some(input) = profile.input(tensor.name()) else {
            continue;
        };
        if input.features.is_empty() {
            continue;
        }
        // Tabular inputs are [rows, features]; other ranks are summarized, not binned.
        let shape = tensor.shape();
        if shape.len() != 2 {
            continue;
        }
        let width = shape[1];
        let values = match tensor.data() {
            TensorData::F32(v) => Values::F32(v.clone()),
            TensorData::F64(v) => Values::F64(v.clone()),
            TensorData::I64(v) => Values::F64(v.iter().map(|x| *x as f64).collect()),
            TensorData::I32(v) => Values::F64(v.iter().map(|x| f64::from(*x)).collect()),
            _ => continue,
        };
        taken.push((tensor.name().to_string(), values, width));
    }
    (!taken.is_empty()).then(|| DriftSample {
        version,
        profile: profile.clone(),
        inputs: taken,
    })
}

/// The queue into one served name's drift counting task.
pub struct DriftRecorder {
    queue: mpsc::Sender<DriftSample>,
    dropped: AtomicU64,
}

impl DriftRecorder {
    /// Starts the counting task for `stats`; it ends when the recorder is dropped.
    pub fn start(stats: Arc<EndpointStats>) -> Self {
        let (queue, mut samples) = mpsc::channel::<DriftSample>(QUEUE);
        tokio::spawn(async move {
            while let Some(sample) = samples.recv().await {
                let now = Instant::now();
                for (name, values, width) in &sample.inputs {
                    let Some(input) = sample.profile.input(name) else {
                        continue;
                    };
                    match values {
                        Values::F32(v) => stats.record_drift(now, sample.version, input, v, *width),
                        Values::F64(v) => stats.record_drift(now, sample.version, input, v, *width),
                    }
                }
            }
        });
        DriftRecorder {
            queue,
            dropped: AtomicU64::new(0),
        }
    }

    /// Hands a sample over without waiting; a full queue drops it.
    pub fn offer(&self, sample: DriftSample) {
        if self.queue.try_send(sample).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Samples dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
