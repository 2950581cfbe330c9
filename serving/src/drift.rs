//! Live input drift: the inputs of answered requests, binned on the training profile's edges, off
//! the request path. The request only copies the profiled inputs — at most
//! [`MAX_ROWS_PER_REQUEST`] rows of each, evenly spaced, so a 64 MiB batch costs the request a
//! bounded copy — into a bounded queue; a task per served name has them binned on the blocking
//! pool into the per-version counters (which `/stats`, the registry's analysis and its drift
//! monitor read), everything waiting at once in one trip (under load, one handoff to the pool
//! for many requests instead of one each). A full queue drops the sample and counts the drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_api::drift::Profile;
use tokio::sync::mpsc;

use crate::runtime::{Tensor, TensorData};
use crate::traffic::EndpointStats;

/// Samples waiting to be counted, per served name.
const QUEUE: usize = 1024;

/// Most samples counted in one trip to the blocking pool.
const PER_TRIP: usize = 256;

/// How long the counting task lets samples gather before a trip that is not full. Drift is
/// judged over windows of a minute, so a few milliseconds late costs nothing, and it makes the
/// trips (each a thread wake-up) a few hundred per second at most, whatever the request rate.
/// The queue holds `QUEUE` samples, so only above ~200,000 requests per second to one served
/// name would samples be dropped while gathering.
const GATHER: Duration = Duration::from_millis(5);

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
            // Samples are counted in trips to the blocking pool of up to `PER_TRIP` (bounded
            // work), in order. Waking a pool thread costs more than binning a request's rows, so
            // a trip that is not full waits `GATHER` for more first: under load that is one
            // wake-up for hundreds of requests instead of one each.
            let mut batch = Vec::with_capacity(PER_TRIP);
            while samples.recv_many(&mut batch, PER_TRIP).await > 0 {
                if batch.len() < PER_TRIP {
                    tokio::time::sleep(GATHER).await;
                    while batch.len() < PER_TRIP {
                        match samples.try_recv() {
                            Ok(sample) => batch.push(sample),
                            Err(_) => break,
                        }
                    }
                }
                let stats = stats.clone();
                let taken = std::mem::take(&mut batch);
                let counted = ferry_api::blocking::run_blocking(move || {
                    for sample in &taken {
                        count(&stats, sample);
                    }
                    taken
                })
                .await;
                match counted {
                    // Reuse the buffer for the next trip.
                    Ok(mut counted) => {
                        counted.clear();
                        batch = counted;
                    }
                    Err(e) => tracing::warn!(error = %e, "counting drift samples failed"),
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

    /// A stats holder and a one-input profile with edges around 0.5.
    fn stats_and_profile() -> (Arc<EndpointStats>, Arc<Profile>) {
        let stats = EndpointStats::new(
            "e",
            Duration::from_secs(1),
            Duration::from_secs(60),
            Instant::now(),
        );
        let input = ferry_api::drift::profile_csv(
            || Ok("0.1\n0.5\n0.9\n".as_bytes()),
            "x",
            &ferry_api::drift::ProfileOptions::default(),
        )
        .unwrap();
        let profile = Arc::new(Profile {
            format: ferry_api::drift::profile::PROFILE_FORMAT,
            inputs: vec![input],
        });
        (Arc::new(stats), profile)
    }

    #[tokio::test]
    async fn every_sample_offered_is_counted_when_many_wait_at_once() {
        let (stats, profile) = stats_and_profile();
        let recorder = DriftRecorder::start(stats.clone());
        // Offered without yielding: all of them wait in the queue before the task first runs,
        // so they go to the blocking pool in trips of many.
        let offered = 1000;
        for i in 0..offered {
            let version = if i < offered / 2 { 1 } else { 2 };
            recorder.offer(DriftSample {
                version,
                profile: profile.clone(),
                inputs: vec![("x".into(), Values::F32(vec![0.5]), 1)],
            });
        }
        assert_eq!(recorder.dropped(), 0);
        let samples = |stats: &EndpointStats| -> Vec<u64> {
            let window = stats.window(Instant::now(), Duration::from_secs(60));
            [1, 2]
                .iter()
                .map(|v| {
                    window
                        .get(v)
                        .and_then(|c| c.drift.as_ref())
                        .map_or(0, |d| d.samples)
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while samples(&stats) != [500, 500] && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(samples(&stats), [500, 500]);
    }

    #[tokio::test]
    async fn binning_on_the_reactor_is_caught() {
        let (stats, profile) = stats_and_profile();
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
