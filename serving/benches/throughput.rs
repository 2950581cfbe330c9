//! In-process throughput of the runtime: batch-1 requests from many concurrent callers, with
//! dynamic batching off and on, next to bare ONNX Runtime sessions on the same model.
//!
//! `cargo bench -p ferry-serving --bench throughput` (release build). Needs ONNX Runtime in
//! `.ort/` or `ORT_DYLIB_PATH`; also measures `tests/fixtures/mlp_large.onnx` when
//! `scripts/gen_fixtures.py` has written it. `FERRY_BENCH_SECONDS` sets each measurement's length.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_serving::runtime::library::{self, LibrarySearch};
use ferry_serving::runtime::{
    LoadedModel, ModelMetrics, ModelSource, OnnxRuntime, RuntimeOptions, Tensor, available_cpus,
};
use ort::session::Session;
use ort::value::TensorRef;

const CONCURRENCY: usize = 64;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn seconds() -> Duration {
    let secs = std::env::var("FERRY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may contain spaces) start at index 2 (state).
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, which is 100 on every mainstream kernel.
    Duration::from_millis(ticks * 10)
}

struct Measurement {
    label: String,
    rows_per_sec: f64,
    cpu_us_per_row: f64,
    mean_batch: f64,
}

fn print(rows: &[Measurement]) {
    println!(
        "{:<44} {:>12} {:>16} {:>11}",
        "", "rows/s", "CPU µs/row", "mean batch"
    );
    for m in rows {
        println!(
            "{:<44} {:>12.0} {:>16.1} {:>11.1}",
            m.label, m.rows_per_sec, m.cpu_us_per_row, m.mean_batch
        );
    }
}

/// One bare session on this thread, `batch` rows per run, as fast as it goes.
fn raw(
    runtime: &OnnxRuntime,
    model: &Path,
    width: usize,
    batch: usize,
    threads: usize,
) -> Measurement {
    let mut session = Session::builder(runtime.environment())
        .unwrap()
        .with_intra_threads(threads)
        .unwrap()
        .commit_from_file(model)
        .unwrap();
    let input = vec![0.25_f32; batch * width];
    let mut run = || {
        let value = TensorRef::from_array_view(([batch, width], input.as_slice())).unwrap();
        let outputs = session.run(ort::inputs![value]).unwrap();
        assert_eq!(outputs.len(), 1);
    };
    for _ in 0..50 {
        run();
    }
    let (started, cpu) = (Instant::now(), cpu_time());
    let mut runs = 0u64;
    while started.elapsed() < seconds() {
        run();
        runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu).as_secs_f64();
    Measurement {
        label: format!("bare ORT session, batch {batch}, {threads} thread(s)"),
        rows_per_sec: (runs as usize * batch) as f64 / elapsed,
        cpu_us_per_row: cpu * 1e6 / (runs as usize * batch) as f64,
        mean_batch: batch as f64,
    }
}

/// `CONCURRENCY` callers each sending batch-1 requests back to back through `LoadedModel`.
fn served(
    tokio: &tokio::runtime::Runtime,
    runtime: &OnnxRuntime,
    model: &Path,
    width: usize,
    options: RuntimeOptions,
) -> Measurement {
    tokio.block_on(async {
        let signature = ferry_api::onnx::inspect(&std::fs::read(model).unwrap()).unwrap();
        let loaded = LoadedModel::load(
            runtime,
            ModelSource::File(model.to_path_buf()),
            signature,
            options,
            ModelMetrics::detached("bench", "1").unwrap(),
        )
        .await
        .unwrap();
        let label = format!(
            "Ferry, {} worker(s) x {} thread(s), max batch {}{}",
            loaded.options().workers,
            loaded.options().intra_op_threads.unwrap_or_default(),
            loaded.options().max_batch_size,
            if loaded.options().intra_op_spinning {
                ", spinning"
            } else {
                ""
            }
        );
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (loaded, stop, done, measuring) = (
                    loaded.clone(),
                    stop.clone(),
                    done.clone(),
                    measuring.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let input =
                            Tensor::new("input", vec![1, width], vec![0.25_f32; width]).unwrap();
                        let deadline = Instant::now() + Duration::from_secs(10);
                        loaded.infer(vec![input], None, deadline).await.unwrap();
                        if measuring.load(Ordering::Relaxed) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await; // warm up
        let (runs_before, rows_before) = (
            loaded.metrics().batch_size().get_sample_count(),
            loaded.metrics().batch_size().get_sample_sum(),
        );
        let (started, cpu) = (Instant::now(), cpu_time());
        measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(seconds()).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = (cpu_time() - cpu).as_secs_f64();
        let requests = done.load(Ordering::Relaxed) as f64;
        let runs = (loaded.metrics().batch_size().get_sample_count() - runs_before) as f64;
        let rows = loaded.metrics().batch_size().get_sample_sum() - rows_before;
        stop.store(true, Ordering::Relaxed);
        for caller in callers {
            caller.await.unwrap();
        }
        Measurement {
            label,
            rows_per_sec: requests / elapsed,
            cpu_us_per_row: cpu * 1e6 / requests,
            mean_batch: rows / runs,
        }
    })
}

fn bench(tokio: &tokio::runtime::Runtime, runtime: &OnnxRuntime, file: &str, width: usize) {
    let model = workspace().join("tests/fixtures").join(file);
    if !model.exists() {
        println!("\n{file}: not found (run scripts/gen_fixtures.py); skipped");
        return;
    }
    let cpus = available_cpus();
    println!("\n{file}: batch-1 requests from {CONCURRENCY} concurrent callers, {cpus} CPUs");
    let defaults = RuntimeOptions::default();
    let two_workers = RuntimeOptions {
        workers: 2,
        intra_op_threads: Some((cpus / 2).max(1)),
        ..defaults.clone()
    };
    let configs = [
        RuntimeOptions {
            max_batch_size: 1,
            ..defaults.clone()
        },
        RuntimeOptions {
            max_batch_size: 1,
            ..two_workers.clone()
        },
        RuntimeOptions {
            max_batch_size: 32,
            ..defaults.clone()
        },
        defaults.clone(),
        RuntimeOptions {
            max_batch_size: 64,
            ..two_workers
        },
        RuntimeOptions {
            max_batch_size: 64,
            intra_op_spinning: true,
            ..defaults
        },
    ];
    let mut results = vec![
        raw(runtime, &model, width, 1, 1),
        raw(runtime, &model, width, 64, cpus),
    ];
    for options in configs {
        results.push(served(tokio, runtime, &model, width, options));
    }
    print(&results);
    let unbatched = results[2].rows_per_sec.max(results[3].rows_per_sec);
    let batched = results[4..]
        .iter()
        .map(|m| m.rows_per_sec)
        .fold(0.0, f64::max);
    println!(
        "best batched / best unbatched: {:.2}x; best batched vs bare ORT batch 64: {:.0}%",
        batched / unbatched,
        100.0 * batched / results[1].rows_per_sec
    );
}

fn main() {
    let search = LibrarySearch {
        dirs: vec![workspace()],
        ..LibrarySearch::from_process(None)
    };
    let path = match search.locate() {
        Ok(path) => path,
        Err(err) => {
            eprintln!("skipped: {err}");
            return;
        }
    };
    let runtime = library::load(Some(&path)).unwrap();
    // `FERRY_BENCH_RAW=FILE:WIDTH:BATCH:THREADS` measures only a bare session and prints
    // `rows_per_sec cpu_us_per_row`, for bench/serving.sh's side-by-side table.
    if let Ok(spec) = std::env::var("FERRY_BENCH_RAW") {
        let parts: Vec<&str> = spec.split(':').collect();
        let model = workspace().join("tests/fixtures").join(parts[0]);
        let m = raw(
            &runtime,
            &model,
            parts[1].parse().unwrap(),
            parts[2].parse().unwrap(),
            parts[3].parse().unwrap(),
        );
        println!("{:.0} {:.2}", m.rows_per_sec, m.cpu_us_per_row);
        return;
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(available_cpus())
        .enable_all()
        .build()
        .unwrap();
    bench(&tokio, &runtime, "mlp.onnx", 32);
    bench(&tokio, &runtime, "mlp_large.onnx", 512);
}
