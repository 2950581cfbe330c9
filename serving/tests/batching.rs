//! Dynamic batching: merged runs answer exactly what single runs answer, and requests whose
//! caller has gone or whose deadline has passed are never run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use ferry_serving::runtime::RuntimeError;
use futures::FutureExt;
use futures::future::join_all;

#[tokio::test]
async fn batched_results_equal_unbatched_ones_and_batches_really_form() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let one_by_one = common::load(
        &runtime,
        "mlp.onnx",
        ferry_serving::runtime::RuntimeOptions {
            max_batch_size: 1,
            ..common::options()
        },
    )
    .await;
    let batched = common::load(&runtime, "mlp.onnx", common::full_batches_only(8)).await;
    assert!(batched.is_batching() && !one_by_one.is_batching());

    let mut expected = Vec::new();
    for seed in 0..64 {
        let outputs = one_by_one
            .infer(common::mlp_row(seed), None, common::in_a_minute())
            .await;
        expected.push(outputs.unwrap());
    }
    // All 64 are queued before the first batch of 8 leaves, so every run takes exactly 8 rows.
    let answers = join_all(
        (0..64).map(|seed| batched.infer(common::mlp_row(seed), None, common::in_a_minute())),
    )
    .await;

    for (seed, (answer, expected)) in answers.into_iter().zip(&expected).enumerate() {
        let answer = answer.unwrap();
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].shape(), [1, 2], "row {seed}");
        for (a, e) in common::f32_data(&answer[0])
            .iter()
            .zip(common::f32_data(&expected[0]))
        {
            assert!(
                (a - e).abs() <= 1e-6,
                "row {seed}: batched {a} vs alone {e}"
            );
        }
    }
    let runs = batched.metrics().batch_size();
    assert_eq!(
        runs.get_sample_count(),
        8,
        "64 single-row requests in runs of 8"
    );
    assert!((runs.get_sample_sum() - 64.0).abs() < f64::EPSILON);
    assert_eq!(one_by_one.metrics().batch_size().get_sample_count(), 64);
}

#[tokio::test]
async fn requests_with_two_inputs_of_different_types_batch_and_split_correctly() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "two_inputs.onnx", common::full_batches_only(6)).await;
    let request = |k: usize| {
        use ferry_serving::runtime::Tensor;
        #[allow(clippy::cast_precision_loss)]
        let x: Vec<f32> = (0..4 * k).map(|i| i as f32).collect();
        let scale: Vec<i64> = (0..k).map(|row| i64::try_from(row).unwrap() + 2).collect();
        vec![
            Tensor::new("x", vec![k, 4], x).unwrap(),
            Tensor::new("scale", vec![k, 1], scale).unwrap(),
        ]
    };
    // 1 + 2 + 3 rows fill one batch of 6.
    let answers =
        join_all([1, 2, 3].map(|k| model.infer(request(k), None, common::in_a_minute()))).await;
    for (k, answer) in [1usize, 2, 3].into_iter().zip(answers) {
        let y = answer.unwrap();
        assert_eq!(y[0].shape(), [k, 4]);
        #[allow(clippy::cast_precision_loss)]
        let expected: Vec<f32> = (0..4 * k).map(|i| i as f32 * (i / 4 + 2) as f32).collect();
        assert_eq!(common::f32_data(&y[0]), expected.as_slice());
    }
    assert_eq!(model.metrics().batch_size().get_sample_count(), 1);
}

#[tokio::test]
async fn a_request_whose_caller_went_away_is_skipped_not_run() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "mlp.onnx", common::full_batches_only(4)).await;

    // Polled once (so it is queued), then dropped: the caller is gone.
    assert!(
        model
            .infer(common::mlp_row(0), None, common::in_a_minute())
            .now_or_never()
            .is_none()
    );
    assert_eq!(model.queue_depth(), 1);

    // Three more rows make the batch full (4 rows queued); only the live three run.
    let answers = join_all(
        (1..4).map(|seed| model.infer(common::mlp_row(seed), None, common::in_a_minute())),
    )
    .await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(model.metrics().cancelled().get(), 1);
    assert_eq!(model.metrics().batch_size().get_sample_count(), 1);
    assert!((model.metrics().batch_size().get_sample_sum() - 3.0).abs() < f64::EPSILON);
    assert_eq!(model.queue_depth(), 0);
}

#[tokio::test]
async fn a_request_that_expires_while_queued_is_answered_deadline_exceeded_and_never_run() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "mlp.onnx", common::full_batches_only(4)).await;

    let soon = Instant::now() + Duration::from_millis(20);
    let err = model
        .infer(common::mlp_row(0), None, soon)
        .await
        .unwrap_err();
    assert_eq!(err, RuntimeError::DeadlineExceeded);
    assert_eq!(
        model.metrics().batch_size().get_sample_count(),
        0,
        "nothing ran yet"
    );

    let answers = join_all(
        (1..4).map(|seed| model.infer(common::mlp_row(seed), None, common::in_a_minute())),
    )
    .await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(model.metrics().expired().get(), 1);
    assert!((model.metrics().batch_size().get_sample_sum() - 3.0).abs() < f64::EPSILON);
}

#[tokio::test]
async fn with_no_queue_delay_a_lone_request_is_answered_without_waiting_for_a_batch() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(
        &runtime,
        "mlp.onnx",
        ferry_serving::runtime::RuntimeOptions {
            max_batch_size: 32,
            max_queue_delay: Duration::ZERO,
            ..common::options()
        },
    )
    .await;
    // With a zero delay the batch of one leaves at once; an hour-long wait would time out here.
    let answer = model
        .infer(
            common::mlp_row(5),
            None,
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(answer[0].shape(), [1, 2]);
}
