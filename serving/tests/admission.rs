//! Admission control: a full queue refuses at once and holds no more memory; a request already
//! past its deadline is refused without running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::pin::pin;
use std::time::{Duration, Instant};

use ferry_serving::runtime::{RuntimeError, RuntimeOptions, Tensor};
use futures::FutureExt;

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_memory_stays_bounded() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(
        &runtime,
        "mlp.onnx",
        RuntimeOptions {
            queue_capacity: 4,
            ..common::full_batches_only(64)
        },
    )
    .await;

    // Four requests wait for a batch of 64 rows that never fills: the queue is full.
    let mut waiting: Vec<_> = (0..4)
        .map(|seed| Box::pin(model.infer(common::mlp_row(seed), None, common::in_a_minute())))
        .collect();
    for request in &mut waiting {
        assert!(
            request.as_mut().now_or_never().is_none(),
            "queued, not answered"
        );
    }
    assert_eq!(model.queue_depth(), 4);

    // 2,000 more requests of 1 MiB each would hold 2 GiB if anything kept them.
    let before = rss();
    for _ in 0..2_000 {
        let big = vec![Tensor::new("input", vec![8192, 32], vec![0.5_f32; 8192 * 32]).unwrap()];
        let answer = pin!(model.infer(big, None, common::in_a_minute())).now_or_never();
        match answer {
            Some(Err(RuntimeError::Overloaded { retry_after })) => {
                assert!(retry_after > Duration::ZERO);
            }
            other => panic!("expected an immediate Overloaded, got {other:?}"),
        }
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 256 << 20, "RSS grew by {grown} bytes");
    assert_eq!(model.queue_depth(), 4);
    assert_eq!(model.metrics().queue_depth().get(), 4);
    assert_eq!(model.metrics().overloaded().get(), 2_000);
    assert_eq!(model.metrics().batch_size().get_sample_count(), 0);
}

#[tokio::test]
async fn a_request_past_its_deadline_is_refused_without_running() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "mlp.onnx", common::options()).await;
    let err = model
        .infer(common::mlp_row(0), None, Instant::now())
        .await
        .unwrap_err();
    assert_eq!(err, RuntimeError::DeadlineExceeded);
    assert_eq!(model.metrics().expired().get(), 1);
    assert_eq!(
        model.metrics().batch_size().get_sample_count(),
        0,
        "never ran"
    );
    assert_eq!(model.queue_depth(), 0);
}

#[tokio::test]
async fn freed_queue_slots_admit_new_requests() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(
        &runtime,
        "mlp.onnx",
        RuntimeOptions {
            queue_capacity: 1,
            max_batch_size: 1,
            ..common::options()
        },
    )
    .await;
    // Each answer releases its slot before it is delivered, so back-to-back requests through a
    // queue of one never see Overloaded.
    for seed in 0..50 {
        model
            .infer(common::mlp_row(seed), None, common::in_a_minute())
            .await
            .unwrap();
    }
    assert_eq!(model.metrics().overloaded().get(), 0);
    assert_eq!(model.queue_depth(), 0);
}
