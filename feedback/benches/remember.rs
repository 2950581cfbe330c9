//! What remembering a prediction costs the request path, in-process index vs Redis index, side
//! by side in one run: `cargo bench -p ferry-feedback --bench remember` (needs Redis at
//! `FERRY_TEST_REDIS`, default redis://127.0.0.1:6379).
//!
//! The request path pays only `remember` (the Redis index serializes the entry and hands it to a
//! bounded queue); the writer task's rate (predictions written per second, pipelined) is the
//! other number that matters: it must exceed the prediction rate, or the queue fills and
//! predictions are dropped (counted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_api::traffic::Route;
use ferry_feedback::{LocalIndex, Prediction, PredictionIndex, RedisIndex};

const N: usize = 100_000;

fn prediction() -> Prediction {
    Prediction {
        version: 3,
        route: Route::Stable,
        classes: Some(vec![1]),
        at: Utc::now(),
    }
}

fn ids(run: &str) -> Vec<String> {
    (0..N)
        .map(|i| format!("{run}-{i:08x}-1c2d-4e5f-8a9b-000000000000"))
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let run = format!("{:x}", Utc::now().timestamp_micros());

        let local = LocalIndex::new(N, 512 << 20, Duration::from_secs(3600));
        let keys = ids(&run);
        let started = Instant::now();
        for id in &keys {
            local.remember("bench", id, prediction());
        }
        let local_ns = started.elapsed().as_nanos() as f64 / N as f64;

        let url =
            std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let (redis, writer) = RedisIndex::connect(&url, Duration::from_secs(60)).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let writing = tokio::spawn(writer.run(stop.clone()));
        // In chunks below the queue's capacity, as a server's request rate would be.
        let chunk = ferry_feedback::redis::QUEUE_CAPACITY / 2;
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut on_path = Duration::ZERO;
        let started = Instant::now();
        for part in keys.chunks(chunk) {
            let t = Instant::now();
            for id in part {
                redis.remember("bench", id, prediction());
            }
            on_path += t.elapsed();
            // Let the writer catch up before the next chunk.
            let last = format!("ferry:p:{{bench/{}}}", part[part.len() - 1]);
            loop {
                let written: bool = redis::cmd("EXISTS")
                    .arg(&last)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if written {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the writer stalled"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let total = started.elapsed();
        stop.cancel();
        writing.await.unwrap();
        let redis_ns = on_path.as_nanos() as f64 / N as f64;
        println!("remember(), {N} predictions, on the request path:");
        println!("  in-process index  {local_ns:8.0} ns per prediction");
        println!(
            "  Redis index       {redis_ns:8.0} ns per prediction ({:.2}x the in-process index)",
            redis_ns / local_ns
        );
        println!(
            "  Redis writer      {:8.0} predictions/s written (pipelined), dropped {}",
            N as f64 / total.as_secs_f64(),
            redis.health().dropped
        );
    });
}
