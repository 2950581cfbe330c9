//! What reaches ONNX Runtime malformed fails only its own request; models that cannot run fail
//! to load with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use ferry_api::onnx::Dim;
use ferry_serving::runtime::{LoadedModel, ModelMetrics, ModelSource, RuntimeError, Tensor};

fn is_inference_error(result: &Result<Vec<Tensor>, RuntimeError>) -> bool {
    matches!(result, Err(RuntimeError::Inference { .. }))
}

#[tokio::test]
async fn bad_inputs_past_validation_fail_alone_and_the_worker_serves_the_next_request() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "mlp.onnx", common::options()).await;
    let infer = |inputs: Vec<Tensor>| model.infer(inputs, None, common::in_a_minute());

    let wrong_dtype = vec![Tensor::new("input", vec![1, 32], vec![1_i64; 32]).unwrap()];
    let answer = infer(wrong_dtype).await;
    assert!(is_inference_error(&answer), "{answer:?}");
    let message = answer.unwrap_err().to_string();
    assert!(
        message.contains("tensor(int64)"),
        "ONNX Runtime's reason is kept: {message}"
    );

    let wrong_width = vec![Tensor::new("input", vec![1, 31], vec![0.0_f32; 31]).unwrap()];
    assert!(is_inference_error(&infer(wrong_width).await));
    let wrong_rank = vec![Tensor::new("input", vec![32], vec![0.0_f32; 32]).unwrap()];
    assert!(is_inference_error(&infer(wrong_rank).await));
    let wrong_name = vec![Tensor::new("nope", vec![1, 32], vec![0.0_f32; 32]).unwrap()];
    assert!(is_inference_error(&infer(wrong_name).await));
    assert!(is_inference_error(&infer(Vec::new()).await));

    let fine = infer(common::mlp_row(3)).await.unwrap();
    assert_eq!(fine[0].shape(), [1, 2]);
}

#[tokio::test]
async fn a_request_without_a_common_first_dimension_runs_and_fails_alone() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    // two_inputs: y = x * scale. `x` and `scale` disagree on rows, so the request has no batch
    // key: it runs (and fails) alone while the good ones share a run.
    let model = common::load(&runtime, "two_inputs.onnx", common::full_batches_only(2)).await;
    let good = |v: f32| {
        vec![
            Tensor::new("x", vec![1, 4], vec![v; 4]).unwrap(),
            Tensor::new("scale", vec![1, 1], vec![2_i64]).unwrap(),
        ]
    };
    let mismatched = vec![
        Tensor::new("x", vec![2, 4], vec![1.0_f32; 8]).unwrap(),
        Tensor::new("scale", vec![3, 1], vec![2_i64; 3]).unwrap(),
    ];
    let (bad, first, second) = tokio::join!(
        model.infer(mismatched, None, common::in_a_minute()),
        model.infer(good(1.0), None, common::in_a_minute()),
        model.infer(good(2.0), None, common::in_a_minute()),
    );
    assert!(is_inference_error(&bad), "{bad:?}");
    assert_eq!(common::f32_data(&first.unwrap()[0]), [2.0; 4]);
    assert_eq!(common::f32_data(&second.unwrap()[0]), [4.0; 4]);
    assert_eq!(
        model.metrics().batch_size().get_sample_count(),
        2,
        "one run alone, one batch"
    );
}

#[tokio::test]
async fn a_batched_run_onnx_runtime_refuses_is_retried_request_by_request() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    // The graph only takes one image, but this signature claims a dynamic batch dimension, so
    // the runtime stacks two requests and ONNX Runtime refuses the stacked run.
    let mut signature = common::signature("fixed_shape.onnx");
    let batch = || Dim::Symbolic("batch".to_owned());
    signature.inputs[0].shape = Some(vec![batch(), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)]);
    signature.outputs[0].shape = Some(vec![batch(), Dim::Fixed(3)]);
    let model = LoadedModel::load(
        &runtime,
        ModelSource::File(common::fixture("fixed_shape.onnx")),
        signature,
        common::full_batches_only(2),
        ModelMetrics::detached("fixed_shape", "1").unwrap(),
    )
    .await
    .unwrap();
    assert!(model.is_batching());
    let image = |v: f32| vec![Tensor::new("image", vec![1, 3, 4, 4], vec![v; 48]).unwrap()];
    let (first, second) = tokio::join!(
        model.infer(image(1.0), None, common::in_a_minute()),
        model.infer(image(2.0), None, common::in_a_minute()),
    );
    assert_eq!(common::f32_data(&first.unwrap()[0]), [1.0; 3]);
    assert_eq!(common::f32_data(&second.unwrap()[0]), [2.0; 3]);
    let runs = model.metrics().batch_size();
    assert_eq!(
        runs.get_sample_count(),
        3,
        "the refused batch of 2, then each request alone"
    );
    assert!((runs.get_sample_sum() - 4.0).abs() < f64::EPSILON);
}

async fn load_with(
    bytes: Vec<u8>,
    signature: ferry_api::onnx::ModelSignature,
) -> Option<Result<LoadedModel, RuntimeError>> {
    let runtime = common::runtime()?;
    Some(
        LoadedModel::load(
            &runtime,
            ModelSource::from(bytes),
            signature,
            common::options(),
            ModelMetrics::detached("broken", "1").unwrap(),
        )
        .await,
    )
}

fn load_reason(result: Result<LoadedModel, RuntimeError>) -> String {
    match result {
        Err(RuntimeError::Load { reason }) => reason,
        other => panic!("expected a Load error, got {other:?}"),
    }
}

#[tokio::test]
async fn bytes_onnx_runtime_refuses_fail_to_load_with_its_reason() {
    let Some(result) = load_with(b"not a model".to_vec(), common::signature("mlp.onnx")).await
    else {
        return;
    };
    let reason = load_reason(result);
    assert!(
        reason.starts_with("ONNX Runtime refused the model"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_signature_that_does_not_match_the_graph_fails_to_load() {
    let mlp = std::fs::read(common::fixture("mlp.onnx")).unwrap();
    let Some(result) = load_with(mlp.clone(), common::signature("two_inputs.onnx")).await else {
        return;
    };
    let reason = load_reason(result);
    assert!(reason.contains("input \"input\""), "{reason}");

    let mut wrong_type = common::signature("mlp.onnx");
    wrong_type.inputs[0].datatype = "INT64".to_owned();
    let reason = load_reason(load_with(mlp, wrong_type).await.unwrap());
    assert!(reason.contains("INT64 in its signature"), "{reason}");
}

#[tokio::test]
async fn a_model_that_fails_its_warm_up_fails_to_load() {
    let fixed = std::fs::read(common::fixture("fixed_shape.onnx")).unwrap();
    let mut signature = common::signature("fixed_shape.onnx");
    // The graph takes [1, 3, 4, 4]; warm-up builds zeros from the signature, so this one fails.
    signature.inputs[0].shape = Some(vec![
        Dim::Fixed(2),
        Dim::Fixed(3),
        Dim::Fixed(4),
        Dim::Fixed(4),
    ]);
    let Some(result) = load_with(fixed, signature).await else {
        return;
    };
    let reason = load_reason(result);
    assert!(
        reason.starts_with("warm-up run on zeros failed"),
        "{reason}"
    );
}
