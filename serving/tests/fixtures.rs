//! Every fixture model answers what onnxruntime 1.31.1 computed for it
//! (tests/fixtures/expected.json).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use ferry_serving::runtime::{LoadedModel, ModelMetrics, ModelSource, Tensor, TensorData};
use serde_json::Value;

fn tensor_from_json(json: &Value) -> Tensor {
    let name = json["name"].as_str().unwrap();
    let shape = json["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dim| usize::try_from(dim.as_u64().unwrap()).unwrap())
        .collect();
    let data = json["data"].as_array().unwrap();
    let data: TensorData = match json["datatype"].as_str().unwrap() {
        // The JSON holds the exact f32 value written as f64; narrowing gets it back.
        #[allow(clippy::cast_possible_truncation)]
        "FP32" => data
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect::<Vec<_>>()
            .into(),
        "INT64" => data
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect::<Vec<_>>()
            .into(),
        other => panic!("expected.json uses an unexpected datatype {other}"),
    };
    Tensor::new(name, shape, data).unwrap()
}

fn assert_close(model: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.name(), expected.name(), "{model}");
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "{model} {}",
        actual.name()
    );
    match (actual.data(), expected.data()) {
        (TensorData::F32(actual), TensorData::F32(expected)) => {
            for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-6 + 1e-5 * e.abs(),
                    "{model} element {i}: {a} vs expected {e}"
                );
            }
        }
        (actual, expected) => assert_eq!(actual, expected, "{model}"),
    }
}

#[tokio::test]
async fn each_fixture_answers_what_onnxruntime_computed() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let expected: Value =
        serde_json::from_slice(&std::fs::read(common::fixture("expected.json")).unwrap()).unwrap();
    let models = expected["models"].as_object().unwrap();
    assert_eq!(models.len(), 4, "one entry per fixture in expected.json");
    for (file, case) in models {
        let bytes = std::fs::read(common::fixture(file)).unwrap();
        let model = LoadedModel::load(
            &runtime,
            // In memory, as the registry hands artifacts over.
            ModelSource::from(bytes.clone()),
            ferry_api::onnx::inspect(&bytes).unwrap(),
            common::options(),
            ModelMetrics::detached(file, "1").unwrap(),
        )
        .await
        .unwrap();
        let inputs = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor_from_json)
            .collect();
        let outputs = model
            .infer(inputs, None, common::in_a_minute())
            .await
            .unwrap();
        let expected: Vec<Tensor> = case["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor_from_json)
            .collect();
        assert_eq!(outputs.len(), expected.len(), "{file}");
        for (actual, expected) in outputs.iter().zip(&expected) {
            assert_close(file, actual, expected);
        }
    }
}

#[tokio::test]
async fn models_load_from_a_file_and_report_their_batching() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    assert!(
        runtime.build_info().starts_with("ORT Build Info"),
        "{}",
        runtime.build_info()
    );
    assert!(runtime.path().is_absolute());

    let mlp = common::load(&runtime, "mlp.onnx", common::full_batches_only(8)).await;
    assert!(mlp.is_batching());
    assert_eq!(mlp.max_batch_size(), 8);
    assert_eq!(mlp.signature().inputs[0].name, "input");

    let fixed = common::load(&runtime, "fixed_shape.onnx", common::full_batches_only(8)).await;
    assert!(
        !fixed.is_batching(),
        "a fixed first dimension cannot be batched"
    );
    assert_eq!(fixed.max_batch_size(), 1);
}

#[tokio::test]
async fn the_outputs_filter_returns_only_the_named_outputs() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "mlp.onnx", common::options()).await;
    let outputs = model
        .infer(
            common::mlp_row(1),
            Some(vec!["probabilities".to_owned()]),
            common::in_a_minute(),
        )
        .await
        .unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].shape(), [1, 2]);
    let sum: f32 = common::f32_data(&outputs[0]).iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-5,
        "softmax rows add up to 1, got {sum}"
    );

    let err = model
        .infer(
            common::mlp_row(1),
            Some(vec!["logits".to_owned()]),
            common::in_a_minute(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the model has no output named \"logits\"");
}

#[tokio::test]
async fn a_request_with_zero_rows_gets_outputs_with_zero_rows() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let model = common::load(&runtime, "mlp.onnx", common::options()).await;
    let empty = vec![Tensor::new("input", vec![0, 32], Vec::<f32>::new()).unwrap()];
    let outputs = model
        .infer(empty, None, common::in_a_minute())
        .await
        .unwrap();
    assert_eq!(outputs[0].shape(), [0, 2]);
    assert!(outputs[0].data().is_empty());
}

/// FP16 and BF16 go to ONNX Runtime and come back as the same half-precision values: `x`
/// doubled (exact in FP16 for these values), `b` echoed bit for bit, `x` widened to FP32. Rows
/// from two requests batched together stay each request's own.
#[tokio::test]
async fn half_precision_tensors_run_through_onnx_runtime() {
    let Some(runtime) = common::runtime() else {
        return;
    };
    let bytes = std::fs::read(common::fixture("half.onnx")).unwrap();
    let model = LoadedModel::load(
        &runtime,
        ModelSource::from(bytes.clone()),
        ferry_api::onnx::inspect(&bytes).unwrap(),
        common::options(),
        ModelMetrics::detached("half", "1").unwrap(),
    )
    .await
    .unwrap();
    let xs = [0.5_f32, -1.25, 1000.0, 0.0, 3.0, -0.0625, 2.5, 7.0];
    let bs = [1e30_f32, -0.1, 3.0, 1e-30, 0.5, -2.0, 1e38, 42.0];
    let x: Vec<half::f16> = xs.iter().map(|v| half::f16::from_f32(*v)).collect();
    let b: Vec<half::bf16> = bs.iter().map(|v| half::bf16::from_f32(*v)).collect();
    let inputs = vec![
        Tensor::new("x", vec![2, 4], x.clone()).unwrap(),
        Tensor::new("b", vec![2, 4], b.clone()).unwrap(),
    ];
    let outputs = model
        .infer(inputs, None, common::in_a_minute())
        .await
        .unwrap();
    let by_name = |n: &str| {
        outputs
            .iter()
            .find(|t| t.name() == n)
            .unwrap()
            .data()
            .clone()
    };
    let doubled: Vec<half::f16> = xs.iter().map(|v| half::f16::from_f32(v * 2.0)).collect();
    assert_eq!(by_name("doubled"), TensorData::F16(doubled));
    assert_eq!(by_name("b_echo"), TensorData::BF16(b));
    let widened: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    assert_eq!(by_name("x_float"), TensorData::F32(widened));
}

/// Threads of this process whose name is `name` (Linux truncates names to 15 bytes; threads a
/// thread starts inherit its name, which is how ONNX Runtime's intra-op threads are found).
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_small_model_runs_on_one_intra_op_thread_and_a_large_one_on_every_cpu() {
    use ferry_serving::runtime::{RuntimeOptions, SMALL_MODEL_BYTES, available_cpus};
    let Some(runtime) = common::runtime() else {
        return;
    };
    let small = std::fs::read(common::fixture("mlp.onnx")).unwrap();
    // The same graph made large: a ModelProto field no ONNX version uses (1000), which every
    // protobuf reader skips, carrying zeros past the threshold.
    let mut large = small.clone();
    let padding = usize::try_from(SMALL_MODEL_BYTES).unwrap();
    prost::encoding::encode_key(1000, prost::encoding::WireType::LengthDelimited, &mut large);
    prost::encoding::encode_varint(padding as u64, &mut large);
    large.resize(large.len() + padding, 0);

    let cases = [
        ("tsm", small, None, 1),
        ("tlg", large.clone(), None, available_cpus()),
        ("tset", large, Some(1), 1),
    ];
    for (name, bytes, set, expected) in cases {
        let options = RuntimeOptions {
            intra_op_threads: set,
            ..RuntimeOptions::default()
        };
        let loaded = LoadedModel::load(
            &runtime,
            ModelSource::Bytes(bytes.into()),
            common::signature("mlp.onnx"),
            options,
            ModelMetrics::detached(name, "1").unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(loaded.options().intra_op_threads, Some(expected), "{name}");
        // The worker thread plus the intra-op threads ONNX Runtime started for its session (the
        // names are short enough to survive the 15-byte limit).
        assert_eq!(
            threads_named(&format!("infer {name}:1 #0")),
            expected,
            "{name}"
        );
    }
}
