//! Live input drift: the inputs of answered requests, binned on the training profile's edges, off
//! the request path. The request only copies the profiled inputs — at most
//! [`MAX_ROWS_PER_REQUEST`] rows of each, evenly spaced, so a 64 MiB batch costs the request a
//! bounded copy — into a bounded queue; a task per served name has them binned on the blocking
//! pool into the per-version counters (which `/stats`, the registry's analysis and its drift
//! monitor read). A full queue drops the sample and counts the drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferry_api::drift::Profile;
use tokio::sync::mpsc;

use crate::runtime::{Tensor, TensorData};
use crate::traffic::EndpointStats;

/// Samples waiting to be counted, per served name.
const QUEUE: usize = 1024;

/// Rows of one request counted into the drift histograms; a larger batch is sampled evenly.
/// Drift is a distribution, and a thousand rows describe one request's share of it as well as a
/// hundred thousand do.
pub const MAX_ROWS_PER_REQUEST: usize = 1024;

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
            TensorData::F32(v) => Values::F32(rows(v, width, |x| *x)),
            TensorData::F64(v) => Values::F64(rows(v, width, |x| *x)),
            TensorData::F16(v) => Values::F32(rows(v, width, |x| x.to_f32())),
            TensorData::BF16(v) => Values::F32(rows(v, width, |x| x.to_f32())),
            TensorData::I64(v) => Values::F64(rows(v, width, |x| *x as f64)),
            TensorData::I32(v) => Values::F64(rows(v, width, |x| f64::from(*x))),
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

/// The rows of a `[rows, width]` tensor that are counted: all of them up to
/// [`MAX_ROWS_PER_REQUEST`], else that many evenly spaced, converted by `convert`.
fn rows<T, U>(values: &[T], width: usize, convert: impl Fn(&T) -> U) -> Vec<U> {
    if width == 0 {
        return Vec::new();
    }
    let total = values.len() / width;
    if total <= MAX_ROWS_PER_REQUEST {
        return values.iter().map(convert).collect();
    }
    let mut out = Vec::with_capacity(MAX_ROWS_PER_REQUEST * width);
    for i in 0..MAX_ROWS_PER_REQUEST {
        let row = i * total / MAX_ROWS_PER_REQUEST;
        out.extend(values[row * width..(row + 1) * width].iter().map(&convert));
    }
    out
}

/// Bins one sample into the counters: CPU work, kept off the reactor.
fn count(stats: &EndpointStats, sample: &DriftSample) {
    ferry_api::blocking::assert_off_reactor("binning drift samples");
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
            // One sample at a time on the blocking pool: bounded work, in order.
            while let Some(sample) = samples.recv().await {
                let stats = stats.clone();
                let counted =
                    ferry_api::blocking::run_blocking(move || count(&stats, &sample)).await;
                if let Err(e) = counted {
                    tracing::warn!(error = %e, "counting a drift sample failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_are_copied_whole_and_large_ones_evenly_sampled() {
        let width = 2;
        let small: Vec<f32> = (0..2 * 10).map(|x| x as f32).collect();
        assert_eq!(rows(&small, width, |x| *x), small);
        let total = MAX_ROWS_PER_REQUEST * 3 + 1;
        let large: Vec<f32> = (0..total * width).map(|x| x as f32).collect();
        let taken = rows(&large, width, |x| *x);
        assert_eq!(taken.len(), MAX_ROWS_PER_REQUEST * width);
        // Whole rows, first row first, spread to the end of the batch.
        assert_eq!(&taken[..2], &[0.0, 1.0]);
        assert_eq!(taken[2] as usize % width, 0);
        assert!(
            taken[taken.len() - 2] as usize / width >= total - 4,
            "{}",
            taken[taken.len() - 2]
        );
    }

    #[tokio::test]
    async fn binning_on_the_reactor_is_caught() {
        let stats = EndpointStats::new(
            "e",
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
            Instant::now(),
        );
        let csv = "0.1\n0.5\n0.9\n";
        let input = ferry_api::drift::profile_csv(
            || Ok(csv.as_bytes()),
            "x",
            &ferry_api::drift::ProfileOptions::default(),
        )
        .unwrap();
        let profile = Arc::new(Profile {
            format: ferry_api::drift::profile::PROFILE_FORMAT,
            inputs: vec![input],
        });
        let sample = DriftSample {
            version: 1,
            profile,
            inputs: vec![("x".into(), Values::F32(vec![0.5]), 1)],
        };
        let on_reactor =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| count(&stats, &sample)));
        assert_eq!(on_reactor.is_err(), cfg!(debug_assertions));
    }
}
