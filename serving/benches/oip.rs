//! Cost of the Open Inference Protocol JSON codec per request: decoding and checking a batch-1
//! request to `tests/fixtures/mlp.onnx` (32 FP32) and encoding its answer (2 FP32), no HTTP.
//!
//! `cargo bench -p ferry-serving --bench oip` (release build). `FERRY_BENCH_SECONDS` sets each
//! measurement's length (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferry_api::onnx::ModelSignature;
use ferry_serving::oip;
use ferry_serving::runtime::Tensor;

/// Runs `f` repeatedly for about `budget` and returns the mean time per call.
fn measure(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..1_000 {
        f();
    }
    let mut calls = 0_u64;
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..1_000 {
            f();
        }
        calls += 1_000;
    }
    started.elapsed().div_f64(calls as f64)
}

/// A request body the way clients write it: full-precision floats, data last.
fn request(rows: usize) -> String {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let values: Vec<String> = (0..rows * 32)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            serde_json::to_string(&value).unwrap()
        })
        .collect();
    format!(
        r#"{{"id": "bench-1", "inputs": [{{"name": "input", "shape": [{rows}, 32], "datatype": "FP32", "data": [{}]}}]}}"#,
        values.join(", ")
    )
}

fn main() {
    let budget = Duration::from_secs_f64(
        std::env::var("FERRY_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/mlp.onnx");
    let signature: ModelSignature =
        ferry_api::onnx::inspect(&std::fs::read(path).unwrap()).unwrap();

    println!("OIP JSON codec, mlp.onnx (input FP32 [-1, 32], output FP32 [-1, 2])");
    for rows in [1, 64] {
        let body = request(rows);
        let output = Tensor::new(
            "probabilities",
            vec![rows, 2],
            vec![0.123_456_78_f32; rows * 2],
        )
        .unwrap();
        let outputs = [output];
        let decode = measure(budget, || {
            black_box(oip::decode_infer_request(black_box(body.as_bytes()), &signature).unwrap());
        });
        let encode = measure(budget, || {
            black_box(oip::encode_infer_response(
                "mlp",
                "1",
                Some("bench-1"),
                black_box(&outputs),
            ));
        });
        let both = measure(budget, || {
            let decoded =
                oip::decode_infer_request(black_box(body.as_bytes()), &signature).unwrap();
            black_box(oip::encode_infer_response(
                "mlp",
                "1",
                decoded.id.as_deref(),
                &outputs,
            ));
        });
        println!(
            "batch {rows:>2} ({} byte body): decode {:>8.0} ns, encode {:>6.0} ns, decode+encode {:>8.0} ns/request",
            body.len(),
            decode.as_nanos(),
            encode.as_nanos(),
            both.as_nanos()
        );
    }
}
