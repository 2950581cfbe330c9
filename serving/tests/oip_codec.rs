//! The Open Inference Protocol JSON codec: requests decode into the runtime's tensors (and only
//! valid ones do), responses and metadata come out in the shapes clients expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::time::Duration;

use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};
use ferry_serving::oip::{self, OipError};
use ferry_serving::runtime::{DataType, Tensor, TensorData};
use serde_json::{Value, json};

fn fixture(name: &str) -> ModelSignature {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    ferry_api::onnx::inspect(&std::fs::read(&path).unwrap()).unwrap()
}

fn spec(name: &str, datatype: &str, shape: Option<Vec<Dim>>) -> TensorSpec {
    TensorSpec {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape,
    }
}

fn batch() -> Dim {
    Dim::Symbolic("batch".to_owned())
}

fn signature(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> ModelSignature {
    ModelSignature {
        inputs,
        outputs,
        ir_version: 8,
        opsets: vec![],
        producer: None,
    }
}

/// A model with one input `name` of `datatype` and shape `[batch, 3]`.
fn one_input(name: &str, datatype: &str) -> ModelSignature {
    signature(
        vec![spec(name, datatype, Some(vec![batch(), Dim::Fixed(3)]))],
        vec![spec("y", "FP32", Some(vec![batch()]))],
    )
}

/// An input object with its fields in the order clients write them (data last).
fn input(name: &str, datatype: &str, shape: &str, data: &str) -> String {
    format!(r#"{{"name": "{name}", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}"#)
}

fn body(inputs: &[String]) -> String {
    format!(r#"{{"inputs": [{}]}}"#, inputs.join(", "))
}

fn floats(n: usize) -> String {
    let values: Vec<String> = (0..n).map(|i| format!("{}.5", i)).collect();
    format!("[{}]", values.join(", "))
}

fn decode(body: &str, signature: &ModelSignature) -> Result<oip::DecodedRequest, OipError> {
    oip::decode_infer_request(body.as_bytes(), signature)
}

fn refusal(body: &str, signature: &ModelSignature) -> String {
    match decode(body, signature) {
        Ok(decoded) => panic!("accepted {body:.200}: {decoded:?}"),
        Err(e) => e.message(),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding valid requests

#[test]
fn flat_and_nested_data_decode_to_the_same_tensor() {
    let mlp = fixture("mlp.onnx");
    let values: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 3.0).collect();
    let flat = format!("{values:?}");
    let rows: Vec<String> = values.chunks(32).map(|row| format!("{row:?}")).collect();
    let nested = format!("[{}]", rows.join(", "));

    let from_flat = decode(&body(&[input("input", "FP32", "[2, 32]", &flat)]), &mlp).unwrap();
    let from_nested = decode(&body(&[input("input", "FP32", "[2, 32]", &nested)]), &mlp).unwrap();
    let expected = Tensor::new("input", vec![2, 32], values).unwrap();
    assert_eq!(from_flat.inputs, vec![expected.clone()]);
    assert_eq!(from_nested.inputs, vec![expected]);
}

#[test]
fn data_written_before_the_datatype_and_shape_decodes_the_same() {
    let mlp = fixture("mlp.onnx");
    let late = format!(
        r#"{{"inputs": [{{"data": {}, "name": "input", "datatype": "FP32", "shape": [1, 32]}}]}}"#,
        floats(32)
    );
    let early = body(&[input("input", "FP32", "[1, 32]", &floats(32))]);
    assert_eq!(decode(&late, &mlp).unwrap(), decode(&early, &mlp).unwrap());
}

#[test]
fn inputs_come_out_in_the_models_order_with_id_outputs_and_parameters() {
    let model = fixture("two_inputs.onnx");
    let request = format!(
        r#"{{"id": "req-7", "parameters": {{"priority": 1}}, "unknown": [[1]],
            "inputs": [{}, {}], "outputs": [{{"name": "y", "parameters": {{"binary_data": true}}}}]}}"#,
        input("scale", "INT64", "[2, 1]", "[[3], [4]]"),
        input("x", "FP32", "[2, 4]", "[1, 2, 3, 4, 5, 6, 7, 8]"),
    );
    let decoded = decode(&request, &model).unwrap();
    assert_eq!(decoded.id.as_deref(), Some("req-7"));
    assert_eq!(decoded.outputs, Some(vec!["y".to_owned()]));
    assert_eq!(decoded.parameters.unwrap()["priority"], json!(1));
    let names: Vec<&str> = decoded.inputs.iter().map(Tensor::name).collect();
    assert_eq!(names, ["x", "scale"]);
    assert_eq!(decoded.inputs[1].data(), &TensorData::I64(vec![3, 4]));
}

#[test]
fn an_empty_outputs_list_asks_for_every_output() {
    let mlp = fixture("mlp.onnx");
    let request = format!(
        r#"{{"inputs": [{}], "outputs": []}}"#,
        input("input", "FP32", "[1, 32]", &floats(32))
    );
    assert_eq!(decode(&request, &mlp).unwrap().outputs, None);
}

#[test]
fn bytes_inputs_decode_to_strings_with_escapes_resolved() {
    let model = one_input("text", "BYTES");
    let request = body(&[input(
        "text",
        "BYTES",
        "[1, 3]",
        r#"["héllo", "a\"b\n", ""]"#,
    )]);
    let decoded = decode(&request, &model).unwrap();
    assert_eq!(
        decoded.inputs[0].data(),
        &TensorData::String(vec!["héllo".into(), "a\"b\n".into(), String::new()])
    );
}

#[test]
fn integers_written_as_integral_floats_are_accepted() {
    let model = one_input("ids", "INT64");
    let decoded = decode(
        &body(&[input("ids", "INT64", "[1, 3]", "[1.0, -2e3, 0]")]),
        &model,
    );
    assert_eq!(
        decoded.unwrap().inputs[0].data(),
        &TensorData::I64(vec![1, -2000, 0])
    );
}

#[test]
fn null_in_float_data_reads_as_nan() {
    let model = one_input("x", "FP64");
    let decoded = decode(
        &body(&[input("x", "FP64", "[1, 3]", "[1, null, 2]")]),
        &model,
    )
    .unwrap();
    let TensorData::F64(values) = decoded.inputs[0].data() else {
        panic!("not FP64")
    };
    assert!(values[1].is_nan());
    assert_eq!((values[0], values[2]), (1.0, 2.0));
}

#[test]
fn zero_rows_are_a_valid_empty_request_where_the_batch_dim_is_open() {
    let mlp = fixture("mlp.onnx");
    for data in ["[]", "[ ]"] {
        let decoded = decode(&body(&[input("input", "FP32", "[0, 32]", data)]), &mlp).unwrap();
        assert_eq!(decoded.inputs[0].shape(), [0, 32]);
        assert!(decoded.inputs[0].data().is_empty());
    }
}

#[test]
fn an_input_of_unknown_rank_accepts_any_shape() {
    let model = signature(
        vec![spec("any", "INT32", None)],
        vec![spec("y", "INT32", None)],
    );
    for (shape, data) in [
        ("[]", "[7]"),
        ("[3]", "[1, 2, 3]"),
        ("[1, 2, 1, 2]", "[[[[1, 2]], [[3, 4]]]]"),
    ] {
        let decoded = decode(&body(&[input("any", "INT32", shape, data)]), &model);
        assert!(decoded.is_ok(), "{shape}: {decoded:?}");
    }
}

/// One tensor of every datatype JSON can carry, with its extreme values.
fn tensors_of_every_datatype() -> Vec<Tensor> {
    let t = |data: TensorData| {
        let len = data.len();
        Tensor::new("t", vec![1, len], data).unwrap()
    };
    vec![
        t(TensorData::Bool(vec![true, false, true])),
        t(TensorData::U8(vec![0, 7, u8::MAX])),
        t(TensorData::U16(vec![0, 7, u16::MAX])),
        t(TensorData::U32(vec![0, 7, u32::MAX])),
        t(TensorData::U64(vec![0, 7, u64::MAX])),
        t(TensorData::I8(vec![i8::MIN, -1, i8::MAX])),
        t(TensorData::I16(vec![i16::MIN, -1, i16::MAX])),
        t(TensorData::I32(vec![i32::MIN, -1, i32::MAX])),
        t(TensorData::I64(vec![i64::MIN, -1, i64::MAX])),
        t(TensorData::F32(vec![
            f32::MIN,
            -0.1,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
        ])),
        t(TensorData::F64(vec![f64::MIN, 0.1, 5e-324, f64::MAX])),
        t(TensorData::F16(vec![
            half::f16::MIN,
            half::f16::from_f32(-0.1),
            half::f16::MIN_POSITIVE,
            half::f16::from_bits(1),
            half::f16::MAX,
        ])),
        t(TensorData::BF16(vec![
            half::bf16::MIN,
            half::bf16::from_f32(-0.1),
            half::bf16::MIN_POSITIVE,
            half::bf16::from_bits(1),
            half::bf16::MAX,
        ])),
        t(TensorData::String(vec![
            "ascii".into(),
            "ünïcødé ✓".into(),
            "\"\\\u{1}".into(),
        ])),
    ]
}

/// Sends a response's output back as a request input: what a client that echoes outputs does.
fn echo(tensor: &Tensor) -> Tensor {
    let response = oip::encode_infer_response("m", "1", None, std::slice::from_ref(tensor));
    let response: Value = serde_json::from_slice(&response).unwrap();
    let output = &response["outputs"][0];
    let datatype = tensor.datatype().as_oip();
    let model = signature(
        vec![spec("t", datatype, Some(vec![batch(), Dim::Unknown]))],
        vec![spec("y", "FP32", Some(vec![batch()]))],
    );
    let request = json!({"inputs": [output]}).to_string();
    decode(&request, &model).unwrap().inputs.remove(0)
}

#[test]
fn every_supported_datatype_round_trips_through_a_response_and_a_request() {
    for tensor in tensors_of_every_datatype() {
        assert_eq!(echo(&tensor), tensor, "{}", tensor.datatype());
    }
}

/// Deterministic xorshift64*, so failures reproduce without a seed in the log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

#[test]
fn random_finite_floats_survive_a_response_and_a_request_bit_for_bit() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut f32s = Vec::new();
    let mut f64s = Vec::new();
    while f32s.len() < 20_000 {
        let single = f32::from_bits(rng.next() as u32);
        if single.is_finite() {
            f32s.push(single);
        }
        let double = f64::from_bits(rng.next());
        if double.is_finite() {
            f64s.push(double);
        }
    }
    let f32s = Tensor::new("t", vec![1, f32s.len()], f32s).unwrap();
    let f64s = Tensor::new("t", vec![1, f64s.len()], f64s).unwrap();
    // Compare bits: -0.0 must stay negative.
    let bits32 = |t: &Tensor| match t.data() {
        TensorData::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        _ => panic!("not FP32"),
    };
    let bits64 = |t: &Tensor| match t.data() {
        TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        _ => panic!("not FP64"),
    };
    let differ = |a: Vec<u64>, b: Vec<u64>| a.iter().zip(&b).filter(|(x, y)| x != y).count();
    let widen = |v: Vec<u32>| v.into_iter().map(u64::from).collect::<Vec<_>>();
    assert_eq!(
        differ(widen(bits32(&echo(&f32s))), widen(bits32(&f32s))),
        0,
        "FP32 values changed"
    );
    assert_eq!(
        differ(bits64(&echo(&f64s)), bits64(&f64s)),
        0,
        "FP64 values changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Refusing invalid requests

#[test]
fn every_invalid_request_is_refused_with_a_message_naming_what_is_wrong() {
    let mlp = fixture("mlp.onnx");
    let two = fixture("two_inputs.onnx");
    let fixed = fixture("fixed_shape.onnx");
    let ok = input("input", "FP32", "[1, 32]", &floats(32));
    let with = |datatype: &str, data: &str| body(&[input("v", datatype, "[1, 3]", data)]);
    let named = signature(
        vec![
            spec(
                "a",
                "FP32",
                Some(vec![Dim::Symbolic("n".into()), Dim::Fixed(2)]),
            ),
            spec(
                "b",
                "FP32",
                Some(vec![Dim::Fixed(1), Dim::Symbolic("n".into())]),
            ),
        ],
        vec![spec("y", "FP32", Some(vec![]))],
    );
    let unknown_rank = signature(
        vec![spec("any", "FP32", None)],
        vec![spec("y", "FP32", None)],
    );

    #[rustfmt::skip]
    let cases: Vec<(&str, ModelSignature, String, &str)> = vec![
        ("unknown input", mlp.clone(),
            body(&[input("inputs", "FP32", "[1, 32]", &floats(32))]),
            r#"input "inputs": the model has no such input; its inputs are "input""#),
        ("missing input", two.clone(),
            body(&[input("x", "FP32", "[1, 4]", "[1, 2, 3, 4]")]),
            r#"input "scale": missing from the request; the model takes INT64 of shape [-1, 1]"#),
        ("empty inputs", mlp.clone(), r#"{"inputs": []}"#.into(),
            r#"input "input": missing from the request; the model takes FP32 of shape [-1, 32]"#),
        ("duplicate input", mlp.clone(), body(&[ok.clone(), ok.clone()]),
            r#"input "input": given more than once"#),
        ("datatype mismatch", mlp.clone(),
            body(&[input("input", "INT64", "[1, 32]", "[]")]),
            r#"input "input": expected datatype FP32, got INT64"#),
        ("unknown datatype", mlp.clone(),
            body(&[input("input", "FLOAT32", "[1, 32]", "[]")]),
            r#"input "input": unknown datatype "FLOAT32"; expected FP32"#),
        ("70000 for FP16", one_input("v", "FP16"), with("FP16", "[70000, 0, 0]"),
            r#"input "v": element 0 is 70000.0, out of range for FP16 (±65504)"#),
        ("a string for BF16", one_input("v", "BF16"), with("BF16", r#"[0, "1", 2]"#),
            r#"input "v": element 1 is a string; BF16 data must be numbers"#),
        ("rank mismatch", mlp.clone(),
            body(&[input("input", "FP32", "[32]", &floats(32))]),
            r#"input "input": expected rank 2 (shape [-1, 32]), got rank 1 (shape [32])"#),
        ("fixed dim mismatch", mlp.clone(),
            body(&[input("input", "FP32", "[1, 31]", &floats(31))]),
            r#"input "input": dim 1 must be 32, got 31 (expected shape [-1, 32], got [1, 31])"#),
        ("fixed batch dim mismatch", fixed.clone(),
            body(&[input("image", "FP32", "[2, 3, 4, 4]", &floats(96))]),
            r#"input "image": dim 0 must be 1, got 2 (expected shape [1, 3, 4, 4], got [2, 3, 4, 4])"#),
        ("zero where a dim is fixed", mlp.clone(),
            body(&[input("input", "FP32", "[1, 0]", "[]")]),
            r#"input "input": dim 1 must be 32, got 0 (expected shape [-1, 32], got [1, 0])"#),
        ("negative dim", mlp.clone(),
            body(&[input("input", "FP32", "[-1, 32]", &floats(32))]),
            r#"input "input": dim 0 is -1 in shape [-1, 32]; dims must be 0 or more"#),
        ("shape overflowing memory", mlp.clone(),
            body(&[input("input", "FP32", "[9223372036854775807, 32]", "[]")]),
            r#"input "input": shape [9223372036854775807, 32] has more elements than memory can address"#),
        ("an empty input spanning too much", unknown_rank.clone(),
            body(&[input("any", "FP32", "[100000000, 0]", "[]")]),
            r#"input "any": shape [100000000, 0] holds no elements but spans more than 1048576 (its dims other than 0, multiplied); an empty input may span at most that"#),
        ("more dims than allowed", unknown_rank.clone(),
            body(&[input("any", "FP32", &format!("{:?}", [1; 33]), "[1]")]),
            r#"input "any": shape has 33 dims; Ferry accepts at most 32"#),
        ("too few elements", mlp.clone(),
            body(&[input("input", "FP32", "[2, 32]", &floats(32))]),
            r#"input "input": shape [2, 32] holds 64 elements, but data has 32"#),
        ("too many elements", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", &floats(33))]),
            r#"input "input": shape [1, 32] holds 32 elements, but data has more than 32"#),
        ("empty data for a non-empty shape", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", "[]")]),
            r#"input "input": shape [1, 32] holds 32 elements, but data has 0"#),
        ("ragged nested data", mlp.clone(),
            body(&[input("input", "FP32", "[2, 32]", &format!("[{}, {}]", floats(32), floats(31)))]),
            r#"input "input": data[1] has 31 entries, but dim 1 of shape [2, 32] is 32"#),
        ("too many nested rows", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", &format!("[{}, {}]", floats(32), floats(32)))]),
            r#"input "input": data has more than 1 entries, but dim 0 of shape [1, 32] is 1"#),
        ("flat and nested mixed", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", "[1, [2]]")]),
            r#"input "input": data[1] is an array, but data[0] is not: send data flat, or nested like the shape [1, 32]"#),
        ("a number where the shape needs a row", mlp.clone(),
            body(&[input("input", "FP32", "[2, 32]", &format!("[{}, 3]", floats(32)))]),
            r#"input "input": data[1] is a number, but shape [2, 32] calls for an array of 32 there"#),
        ("data nested deeper than the shape", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", "[[[1]]]")]),
            r#"input "input": data[0][0] nests deeper than the shape [1, 32] (rank 2)"#),
        ("data that is not an array", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", "5")]),
            r#"input "input": `data` must be an array, got a number"#),
        ("data that is an object", mlp.clone(),
            body(&[input("input", "FP32", "[1, 32]", "{}")]),
            r#"input "input": `data` must be an array, got an object"#),
        ("batch sizes that differ", two.clone(),
            body(&[input("x", "FP32", "[2, 4]", &floats(8)), input("scale", "INT64", "[3, 1]", "[1, 2, 3]")]),
            r#"input "scale": has 3 rows (dim 0), but input "x" has 2; the inputs of one request must have the same number of rows"#),
        ("same-named dims that differ", named,
            body(&[input("a", "FP32", "[2, 2]", "[1, 2, 3, 4]"), input("b", "FP32", "[1, 3]", "[1, 2, 3]")]),
            r#"input "b": dim 1 is 3, but dim 0 of input "a" is 2; the model names both "n", so they must be equal"#),
        ("unknown output", mlp.clone(),
            format!(r#"{{"inputs": [{ok}], "outputs": [{{"name": "probs"}}]}}"#),
            r#"output "probs": the model has no such output; its outputs are "probabilities""#),
        ("output requested twice", mlp.clone(),
            format!(r#"{{"inputs": [{ok}], "outputs": [{{"name": "probabilities"}}, {{"name": "probabilities"}}]}}"#),
            r#"output "probabilities": requested more than once"#),
        ("classification", mlp.clone(),
            format!(r#"{{"inputs": [{ok}], "outputs": [{{"name": "probabilities", "parameters": {{"classification": 2}}}}]}}"#),
            r#"output "probabilities": the classification extension is not supported; request the output without the `classification` parameter"#),
        ("300 for UINT8", one_input("v", "UINT8"), with("UINT8", "[1, 2, 300]"),
            r#"input "v": element 2 is 300, out of range for UINT8 (0..=255)"#),
        ("-1 for UINT32", one_input("v", "UINT32"), with("UINT32", "[1, -1, 3]"),
            r#"input "v": element 1 is -1, out of range for UINT32 (0..=4294967295)"#),
        ("-1 for UINT64", one_input("v", "UINT64"), with("UINT64", "[-1, 2, 3]"),
            r#"input "v": element 0 is -1, out of range for UINT64 (0..=18446744073709551615)"#),
        ("1.5 for INT32", one_input("v", "INT32"), with("INT32", "[1, 1.5, 3]"),
            r#"input "v": element 1 is 1.5, not an integer as INT32 needs"#),
        ("2^63 for INT64", one_input("v", "INT64"), with("INT64", "[9223372036854775808, 0, 0]"),
            r#"input "v": element 0 is 9223372036854775808, out of range for INT64 (-9223372036854775808..=9223372036854775807)"#),
        ("a float integer beyond 2^53", one_input("v", "INT64"), with("INT64", "[1e17, 0, 0]"),
            r#"input "v": element 0 is 1e17; write integers beyond 2^53 without a fraction or exponent"#),
        ("-129 for INT8", one_input("v", "INT8"), with("INT8", "[0, 0, -129]"),
            r#"input "v": element 2 is -129, out of range for INT8 (-128..=127)"#),
        ("a float that overflows FP32", one_input("v", "FP32"), with("FP32", "[1e39, 0, 0]"),
            r#"input "v": element 0 is 1e39, out of range for FP32 (±3.4028235e38)"#),
        ("a string for FP32", one_input("v", "FP32"), with("FP32", r#"[0, "1", 2]"#),
            r#"input "v": element 1 is a string; FP32 data must be numbers"#),
        ("a boolean for INT64", one_input("v", "INT64"), with("INT64", "[0, 1, true]"),
            r#"input "v": element 2 is a boolean; INT64 data must be integers"#),
        ("a number for BOOL", one_input("v", "BOOL"), with("BOOL", "[true, 1, false]"),
            r#"input "v": element 1 is a number; BOOL data must be true or false"#),
        ("null for BOOL", one_input("v", "BOOL"), with("BOOL", "[null, true, false]"),
            r#"input "v": element 0 is null; BOOL data must be true or false"#),
        ("a number for BYTES", one_input("v", "BYTES"), with("BYTES", r#"["a", "b", 3]"#),
            r#"input "v": element 2 is a number; BYTES data must be strings"#),
        ("a NUL character in BYTES", one_input("v", "BYTES"), with("BYTES", r#"["a", "b\u0000", "c"]"#),
            r#"input "v": element 1 contains a NUL character, which ONNX Runtime strings cannot hold"#),
        ("an object as an element", one_input("v", "FP32"), with("FP32", "[0, {}, 2]"),
            r#"input "v": element 1 is an object; FP32 data must be numbers"#),
        ("no name", mlp.clone(), r#"{"inputs": [{"shape": [1, 32], "datatype": "FP32", "data": []}]}"#.into(),
            "malformed request: inputs[0] has no `name`"),
        ("no datatype", mlp.clone(), r#"{"inputs": [{"name": "input", "shape": [1, 32], "data": []}]}"#.into(),
            r#"input "input": has no `datatype`"#),
        ("no shape", mlp.clone(), r#"{"inputs": [{"name": "input", "datatype": "FP32", "data": []}]}"#.into(),
            r#"input "input": has no `shape`"#),
        ("no data", mlp.clone(), r#"{"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32"}]}"#.into(),
            r#"input "input": has no `data` (nor `parameters.binary_data_size`)"#),
        ("binary tensor data without its header", mlp.clone(),
            r#"{"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "parameters": {"binary_data_size": 128}}]}"#.into(),
            r#"input "input": `binary_data_size` is 128 but the request has no `Inference-Header-Content-Length` header saying where the JSON ends and the binary data begins"#),
        ("no inputs field", mlp.clone(), r#"{"id": "1"}"#.into(),
            "malformed request: missing field `inputs` (an array of input tensors)"),
        ("a shape that is a string", mlp.clone(),
            body(&[input("input", "FP32", r#""3""#, "[]")]),
            r#"input "input": `shape`: invalid type: string "3", expected a sequence at line 1 column 42"#),
        ("a shape that is a string, before the name", mlp.clone(),
            r#"{"inputs": [{"shape": "3", "name": "input"}]}"#.into(),
            r#"malformed request: inputs[0].shape: invalid type: string "3", expected a sequence at line 1 column 25"#),
        ("a fractional dim", mlp.clone(),
            body(&[input("input", "FP32", "[1.5, 32]", "[]")]),
            r#"input "input": `shape`: invalid type: floating point `1.5`, expected i64 at line 1 column 43"#),
        ("a name that is a number", mlp.clone(), r#"{"inputs": [{"name": 7}]}"#.into(),
            "malformed request: inputs[0].name: invalid type: integer `7`, expected a string at line 1 column 22"),
        ("an id that is a number", mlp.clone(), format!(r#"{{"id": 7, "inputs": [{ok}]}}"#),
            "malformed request: `id`: invalid type: integer `7`, expected a string at line 1 column 8"),
        ("inputs that is not an array", mlp.clone(), r#"{"inputs": {}}"#.into(),
            "malformed request: `inputs`: invalid type: map, expected an array of input tensors at line 1 column 11"),
        ("an input that is not an object", mlp.clone(), r#"{"inputs": [1]}"#.into(),
            "malformed request: inputs[0]: invalid type: integer `1`, expected an input tensor object {name, shape, datatype, data} at line 1 column 13"),
        ("outputs that are strings", mlp.clone(), format!(r#"{{"inputs": [{ok}], "outputs": ["probabilities"]}}"#),
            "malformed request: `outputs`: invalid type: string \"probabilities\", expected struct RequestedOutput"),
        ("a body that is an array", mlp.clone(), "[]".into(),
            "malformed request: invalid type: sequence, expected an inference request object at line 1 column 0"),
        ("a field given twice", mlp.clone(), format!(r#"{{"inputs": [{ok}], "inputs": []}}"#),
            "malformed request: duplicate field `inputs`"),
        ("an empty body", mlp.clone(), String::new(),
            "invalid JSON: EOF while parsing a value at line 1 column 0"),
        ("truncated JSON", mlp.clone(), r#"{"inputs": ["#.into(),
            "invalid JSON in inputs[0]: EOF while parsing a list at line 1 column 12"),
        ("trailing garbage", mlp.clone(), format!("{} x", body(std::slice::from_ref(&ok))),
            "invalid JSON: trailing characters at line 1 column"),
        ("a number too large for JSON floats", one_input("v", "FP64"), with("FP64", "[1e400, 0, 0]"),
            "invalid JSON in `data` of input \"v\": number out of range at line 1 column"),
        ("parameters nested past serde's limit", mlp.clone(),
            format!(r#"{{"parameters": {{"p": {}{}}}, "inputs": [{ok}]}}"#, "[".repeat(200), "]".repeat(200)),
            "invalid JSON in `parameters`: recursion limit exceeded at line 1 column"),
    ];
    let mut failures = String::new();
    for (what, model, request, expected) in &cases {
        match decode(request, model) {
            Ok(decoded) => {
                let _ = writeln!(
                    failures,
                    "{what}: accepted ({:?})",
                    decoded.inputs.first().map(Tensor::shape)
                );
            }
            Err(e) if !e.message().starts_with(expected) => {
                let _ = writeln!(
                    failures,
                    "{what}:\n  expected {expected}\n  got      {}",
                    e.message()
                );
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn errors_about_an_input_carry_its_name() {
    let mlp = fixture("mlp.onnx");
    let err = decode(&body(&[input("input", "INT64", "[1, 32]", "[]")]), &mlp).unwrap_err();
    assert_eq!(err.input(), Some("input"));
    assert!(matches!(err, OipError::Input { .. }));
}

#[test]
fn hostile_nesting_is_refused_without_overflowing_the_stack() {
    let mlp = fixture("mlp.onnx");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // Data after the shape is checked as it is read; data before it is skipped without
    // recursion, then read the same way.
    let after = body(&[input("input", "FP32", "[1, 32]", &deep)]);
    let before = format!(
        r#"{{"inputs": [{{"data": {deep}, "name": "input", "shape": [1, 32], "datatype": "FP32"}}]}}"#
    );
    for request in [after, before] {
        assert_eq!(
            refusal(&request, &mlp),
            r#"input "input": data[0][0] nests deeper than the shape [1, 32] (rank 2)"#
        );
    }
    // Anywhere else, serde_json's own recursion limit or a type error stops it.
    let unclosed = "[".repeat(100_000);
    for request in [
        unclosed.clone(),
        format!(r#"{{"id": {unclosed}"#),
        format!(r#"{{"parameters": {{"x": {unclosed}"#),
        format!(r#"{{"inputs": [{{"name": {unclosed}"#),
        format!(r#"{{"outputs": [{{"name": "y", "parameters": {unclosed}"#),
        format!(r#"{{"ignored": {unclosed}"#),
    ] {
        assert!(decode(&request, &mlp).is_err());
    }
    // An unknown field is skipped however deep, since skipping does not recurse.
    let ignored = format!(
        r#"{{"ignored": {deep}, "inputs": [{}]}}"#,
        input("input", "FP32", "[1, 32]", &floats(32))
    );
    assert!(decode(&ignored, &mlp).is_ok());
}

#[test]
fn a_ten_megabyte_string_where_a_number_belongs_gets_a_short_message() {
    let mlp = fixture("mlp.onnx");
    let huge = format!(r#"["{}"]"#, "9".repeat(10 << 20));
    for request in [
        body(&[input("input", "FP32", "[1, 32]", &huge)]),
        format!(
            r#"{{"inputs": [{{"data": {huge}, "name": "input", "shape": [1, 32], "datatype": "FP32"}}]}}"#
        ),
    ] {
        let message = refusal(&request, &mlp);
        assert_eq!(
            message,
            r#"input "input": element 0 is a string; FP32 data must be numbers"#
        );
    }
    // A huge name is cut in the message rather than echoed.
    let long = "n".repeat(10 << 20);
    let message = refusal(&body(&[input(&long, "FP32", "[1, 32]", "[]")]), &mlp);
    assert!(message.len() < 400, "{} bytes", message.len());
}

#[test]
fn a_shape_claiming_billions_of_elements_reserves_only_what_the_body_backs() {
    let mlp = fixture("mlp.onnx");
    // 2^40 elements would need 4 TiB; refusing without trying to reserve them is the test.
    let message = refusal(
        &body(&[input("input", "FP32", "[34359738368, 32]", "[1, 2]")]),
        &mlp,
    );
    assert_eq!(
        message,
        r#"input "input": shape [34359738368, 32] holds 1099511627776 elements, but data has 2"#
    );
}

#[test]
fn invalid_utf8_in_the_body_is_refused() {
    let mlp = fixture("mlp.onnx");
    let mut request = br#"{"inputs": [{"name": "in"#.to_vec();
    request.extend_from_slice(&[0xff, 0xfe]);
    request.extend_from_slice(br#"put", "shape": [1, 32], "datatype": "FP32", "data": []}]}"#);
    let err = oip::decode_infer_request(&request, &mlp).unwrap_err();
    assert!(
        err.message()
            .starts_with("invalid JSON in inputs[0].name: invalid unicode code point"),
        "{err}"
    );
    // Outside strings it is a syntax error like any other stray byte.
    let err = oip::decode_infer_request(b"{\xff}", &mlp).unwrap_err();
    assert!(
        err.message()
            .starts_with("invalid JSON: key must be a string"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Random requests against the real fixtures

/// A random valid request for `signature` and the tensors it must decode to.
fn random_request(signature: &ModelSignature, rng: &mut Rng) -> (String, Vec<Tensor>) {
    let rows = rng.below(4);
    let mut tensors = Vec::new();
    let mut objects = Vec::new();
    for spec in &signature.inputs {
        let dims = spec.shape.as_ref().unwrap();
        let shape: Vec<usize> = dims
            .iter()
            .enumerate()
            .map(|(i, dim)| match dim {
                Dim::Fixed(n) => *n as usize,
                _ if i == 0 => rows,
                _ => 1 + rng.below(3),
            })
            .collect();
        let len: usize = shape.iter().product();
        let (data, values): (TensorData, Vec<String>) = match spec.datatype.as_str() {
            "FP32" => {
                let v: Vec<f32> = (0..len)
                    .map(|_| (rng.next() as i32 as f32) / (1_u64 << rng.below(40)) as f32)
                    .collect();
                let text = v
                    .iter()
                    .map(|x| serde_json::to_string(x).unwrap())
                    .collect();
                (TensorData::F32(v), text)
            }
            "INT64" => {
                let v: Vec<i64> = (0..len)
                    .map(|_| rng.next() as i64 >> rng.below(64))
                    .collect();
                let text = v.iter().map(ToString::to_string).collect();
                (TensorData::I64(v), text)
            }
            other => panic!("no generator for {other}"),
        };
        let data_json = if rng.coin() || shape.is_empty() {
            format!("[{}]", values.join(","))
        } else {
            nest(&values, &shape)
        };
        let fields = [
            format!(r#""name": "{}""#, spec.name),
            format!(r#""shape": {shape:?}"#),
            format!(r#""datatype": "{}""#, spec.datatype),
            format!(r#""data": {data_json}"#),
            r#""parameters": {"content_type": "np"}"#.to_owned(),
        ];
        let mut order: Vec<usize> = (0..fields.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let object: Vec<&str> = order.iter().map(|&i| fields[i].as_str()).collect();
        objects.push(format!("{{{}}}", object.join(", ")));
        tensors.push(Tensor::new(spec.name.clone(), shape, data).unwrap());
    }
    for i in (1..objects.len()).rev() {
        objects.swap(i, rng.below(i + 1));
    }
    let request = format!(
        r#"{{"id": "r{}", "inputs": [{}]}}"#,
        rng.next(),
        objects.join(", ")
    );
    (request, tensors)
}

/// `values` nested like `shape`, row-major.
fn nest(values: &[String], shape: &[usize]) -> String {
    match shape {
        [] | [_] => format!("[{}]", values.join(",")),
        [rows, inner @ ..] => {
            let size: usize = inner.iter().product();
            let parts: Vec<String> = (0..*rows)
                .map(|r| nest(&values[r * size..(r + 1) * size], inner))
                .collect();
            format!("[{}]", parts.join(","))
        }
    }
}

/// A random edit of `request`: bytes flipped, cut, duplicated, or tokens swapped for others.
fn mutate(request: &str, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = request.as_bytes().to_vec();
    let at = |rng: &mut Rng, bytes: &Vec<u8>| rng.below(bytes.len().max(1));
    for _ in 0..1 + rng.below(3) {
        match rng.below(7) {
            0 => {
                let i = at(rng, &bytes);
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            1 => bytes.truncate(at(rng, &bytes)),
            2 => {
                let i = at(rng, &bytes);
                if i < bytes.len() {
                    bytes.remove(i);
                }
            }
            3 => {
                let i = at(rng, &bytes);
                let token: &[u8] = [
                    &b"["[..],
                    b"]",
                    b"{",
                    b"}",
                    b",",
                    b"-",
                    b"1e999",
                    b"null",
                    b"\"x\"",
                    b"0.5",
                    b"-1",
                    b"[[[",
                    b"true",
                    b"\\u0000",
                ][rng.below(14)];
                bytes.splice(i..i, token.iter().copied());
            }
            4 => {
                // Change one digit, usually a dim or an element.
                let digits: Vec<usize> = (0..bytes.len())
                    .filter(|&i| bytes[i].is_ascii_digit())
                    .collect();
                if !digits.is_empty() {
                    let i = digits[rng.below(digits.len())];
                    bytes[i] = b'0' + rng.below(10) as u8;
                }
            }
            5 => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let swapped = [
                    ("FP32", "INT64"),
                    ("INT64", "FP32"),
                    ("\"shape\"", "\"shap\""),
                    ("\"data\"", "\"dat\""),
                    ("\"name\"", "\"nam\""),
                    ("]", ",1]"),
                    ("[", "[["),
                    ("\"input\"", "\"output\""),
                    ("\"x\"", "\"scale\""),
                ][rng.below(9)];
                bytes = text.replacen(swapped.0, swapped.1, 1).into_bytes();
            }
            _ => {
                let i = at(rng, &bytes);
                let j = (i + rng.below(64)).min(bytes.len());
                let copy = bytes[i..j].to_vec();
                bytes.splice(i..i, copy);
            }
        }
    }
    bytes
}

#[test]
fn random_valid_requests_for_every_fixture_decode_and_random_mutations_never_panic() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut accepted = 0;
    let mut refused = 0;
    for name in [
        "mlp.onnx",
        "two_inputs.onnx",
        "int64.onnx",
        "fixed_shape.onnx",
    ] {
        let signature = fixture(name);
        for _ in 0..300 {
            let (request, tensors) = random_request(&signature, &mut rng);
            let decoded =
                decode(&request, &signature).unwrap_or_else(|e| panic!("{name}: {e}\n{request}"));
            assert_eq!(decoded.inputs, tensors, "{name}: {request}");
            for _ in 0..10 {
                let mutated = mutate(&request, &mut rng);
                match oip::decode_infer_request(&mutated, &signature) {
                    Ok(decoded) => {
                        // Whatever was accepted holds together.
                        accepted += 1;
                        assert_eq!(decoded.inputs.len(), signature.inputs.len());
                        for (tensor, spec) in decoded.inputs.iter().zip(&signature.inputs) {
                            assert_eq!(tensor.name(), spec.name);
                            assert_eq!(tensor.datatype().as_oip(), spec.datatype);
                        }
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(!e.message().is_empty());
                    }
                }
            }
        }
    }
    // Mutations must exercise both sides, or they test nothing.
    assert!(
        accepted > 100 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
}

// ---------------------------------------------------------------------------------------------
// Responses

#[test]
fn a_response_parses_back_to_the_outputs_with_exact_floats() {
    let probabilities = Tensor::new(
        "probabilities",
        vec![2, 2],
        vec![0.1_f32, 0.9, 1e-38, 1.0 / 3.0],
    )
    .unwrap();
    let labels = Tensor::new(
        "labels",
        vec![2],
        vec!["cat".to_owned(), "d\"og".to_owned()],
    )
    .unwrap();
    let flags = Tensor::new("flags", vec![2], vec![true, false]).unwrap();
    let encoded =
        oip::encode_infer_response("mlp", "3", Some("req-1"), &[probabilities, labels, flags]);
    let mut parsed: Value = serde_json::from_slice(&encoded).unwrap();
    let data = parsed["outputs"][0]["data"].take();
    assert_eq!(
        parsed,
        json!({
            "model_name": "mlp",
            "model_version": "3",
            "id": "req-1",
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": null},
                {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["cat", "d\"og"]},
                {"name": "flags", "datatype": "BOOL", "shape": [2], "data": [true, false]},
            ]
        })
    );
    // Shortest form that reads back to the same f32: "0.1", not "0.10000000149011612".
    assert_eq!(data.to_string(), "[0.1,0.9,1e-38,0.33333334]");
    let back: Vec<f32> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(back, [0.1_f32, 0.9, 1e-38, 1.0 / 3.0]);
}

#[test]
fn a_response_without_id_omits_it_and_parameters_are_written_when_given() {
    let out = Tensor::new("y", vec![1], vec![1_i64]).unwrap();
    let plain: Value = serde_json::from_slice(&oip::encode_infer_response(
        "m",
        "1",
        None,
        std::slice::from_ref(&out),
    ))
    .unwrap();
    assert!(plain.get("id").is_none() && plain.get("parameters").is_none());
    let mut parameters = oip::Parameters::new();
    parameters.insert("sequence_id".into(), json!(4));
    let with = oip::encode_infer_response_with_parameters("m", "1", None, &[out], &parameters);
    let with: Value = serde_json::from_slice(&with).unwrap();
    assert_eq!(with["parameters"], json!({"sequence_id": 4}));
}

#[test]
fn non_finite_outputs_are_written_as_null_and_read_back_as_nan() {
    let out = Tensor::new("y", vec![3], vec![f32::NAN, f32::INFINITY, 1.0]).unwrap();
    let encoded = oip::encode_infer_response("m", "1", None, &[out]);
    let parsed: Value = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(parsed["outputs"][0]["data"], json!([null, null, 1.0]));
}

#[test]
fn an_error_body_is_the_protocols_error_object() {
    let body: Value = serde_json::from_slice(&oip::encode_error("bad \"input\"")).unwrap();
    assert_eq!(body, json!({"error": "bad \"input\""}));
}

// ---------------------------------------------------------------------------------------------
// Metadata

#[test]
fn server_metadata_names_ferry_its_version_and_extensions() {
    let metadata = serde_json::to_value(oip::server_metadata("0.1.0")).unwrap();
    assert_eq!(
        metadata,
        json!({"name": "ferry", "version": "0.1.0", "extensions": ["binary_tensor_data", "model_configuration", "model_repository"]})
    );
}

#[test]
fn model_metadata_shows_open_dims_as_minus_one_and_unknown_rank_as_one_open_dim() {
    let mlp = serde_json::to_value(oip::model_metadata(
        "mlp",
        &["1".into(), "2".into()],
        &fixture("mlp.onnx"),
    ))
    .unwrap();
    assert_eq!(
        mlp,
        json!({
            "name": "mlp",
            "versions": ["1", "2"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 32]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
        })
    );
    let loose = signature(
        vec![spec("any", "BYTES", None)],
        vec![spec("y", "INT64", Some(vec![]))],
    );
    let loose = serde_json::to_value(oip::model_metadata("loose", &[], &loose)).unwrap();
    assert_eq!(loose["inputs"][0]["shape"], json!([-1]));
    assert_eq!(loose["outputs"][0]["shape"], json!([]));
}

#[test]
fn the_triton_config_of_a_batching_model_drops_the_batch_dim() {
    let config = oip::triton_config("mlp", &fixture("mlp.onnx"), 64, Duration::from_micros(500));
    assert_eq!(
        serde_json::to_value(&config).unwrap(),
        json!({
            "name": "mlp",
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": 64,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [32]}],
            "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]}],
            "dynamic_batching": {"max_queue_delay_microseconds": 500},
        })
    );
}

#[test]
fn the_triton_config_of_a_fixed_shape_model_has_no_batch_dim_and_full_dims() {
    let config = oip::triton_config("fixed", &fixture("fixed_shape.onnx"), 64, Duration::ZERO);
    assert_eq!(config.max_batch_size, 0);
    assert_eq!(config.input[0].dims, [1, 3, 4, 4]);
    assert_eq!(config.output[0].dims, [1, 3]);
    assert_eq!(config.dynamic_batching, None);
}

#[test]
fn the_triton_config_without_batching_keeps_full_dims_and_one_row_batches_have_no_batcher() {
    let mlp = fixture("mlp.onnx");
    let off = oip::triton_config("mlp", &mlp, 0, Duration::ZERO);
    assert_eq!(
        (off.max_batch_size, off.input[0].dims.clone()),
        (0, vec![-1, 32])
    );
    let one = oip::triton_config("mlp", &mlp, 1, Duration::ZERO);
    assert_eq!(
        (one.max_batch_size, one.input[0].dims.clone()),
        (1, vec![32])
    );
    assert_eq!(one.dynamic_batching, None);
}

#[test]
fn the_triton_config_reshapes_batch_only_tensors_and_names_string_types() {
    let model = signature(
        vec![spec("text", "BYTES", Some(vec![batch()]))],
        vec![spec("score", "FP64", Some(vec![batch()]))],
    );
    let config = serde_json::to_value(oip::triton_config("m", &model, 8, Duration::ZERO)).unwrap();
    assert_eq!(
        config["input"],
        json!([{"name": "text", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}}])
    );
    assert_eq!(config["output"][0]["data_type"], "TYPE_FP64");
}

#[test]
fn every_oip_datatype_has_a_triton_type() {
    for (oip_name, triton) in [
        ("BOOL", "TYPE_BOOL"),
        ("UINT8", "TYPE_UINT8"),
        ("UINT16", "TYPE_UINT16"),
        ("UINT32", "TYPE_UINT32"),
        ("UINT64", "TYPE_UINT64"),
        ("INT8", "TYPE_INT8"),
        ("INT16", "TYPE_INT16"),
        ("INT32", "TYPE_INT32"),
        ("INT64", "TYPE_INT64"),
        ("FP16", "TYPE_FP16"),
        ("FP32", "TYPE_FP32"),
        ("FP64", "TYPE_FP64"),
        ("BF16", "TYPE_BF16"),
        ("BYTES", "TYPE_STRING"),
        ("COMPLEX64", "TYPE_INVALID"),
    ] {
        assert_eq!(oip::triton_data_type(oip_name), triton);
        if let Some(dt) = DataType::from_oip(oip_name) {
            assert_eq!(dt.as_oip(), oip_name);
        }
    }
}

#[test]
fn the_repository_index_lists_entries_and_reads_the_ready_filter() {
    let entry = oip::RepositoryEntry {
        name: "mlp".into(),
        version: "2".into(),
        state: "READY".into(),
        reason: String::new(),
    };
    assert_eq!(
        serde_json::to_value([entry]).unwrap(),
        json!([{"name": "mlp", "version": "2", "state": "READY", "reason": ""}])
    );
    assert!(!oip::decode_repository_index_request(b"").unwrap().ready);
    assert!(!oip::decode_repository_index_request(b" {} ").unwrap().ready);
    assert!(
        oip::decode_repository_index_request(br#"{"ready": true}"#)
            .unwrap()
            .ready
    );
    assert!(oip::decode_repository_index_request(br#"{"ready": "yes"}"#).is_err());
}

// ---------------------------------------------------------------------------------------------
// The binary tensor data extension

/// A request in the extension's form: the JSON, then the tensors' bytes; and the JSON's length.
fn binary_request(json: &str, tensors: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = json.as_bytes().to_vec();
    for t in tensors {
        body.extend_from_slice(t);
    }
    (body, json.len())
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn binary_inputs_decode_like_json_ones_and_may_be_mixed_with_them() {
    let two = fixture("two_inputs.onnx");
    let names: Vec<_> = two
        .inputs
        .iter()
        .map(|s| (s.name.clone(), s.datatype.clone()))
        .collect();
    assert_eq!(names.len(), 2);
    let (a, b) = (&names[0], &names[1]);
    // The same values three ways: all JSON, all binary, one of each (binary listed second).
    let features = [0.5_f32, -1.0, 2.25, 3.0];
    let json_only = format!(
        r#"{{"inputs": [{{"name": "{}", "shape": [1, 4], "datatype": "{}", "data": [0.5, -1.0, 2.25, 3.0]}}, {{"name": "{}", "shape": [1, 1], "datatype": "{}", "data": [7]}}]}}"#,
        a.0, a.1, b.0, b.1
    );
    let want = oip::decode_infer_request(json_only.as_bytes(), &two).unwrap();
    let header = format!(
        r#"{{"inputs": [{{"name": "{}", "shape": [1, 4], "datatype": "{}", "parameters": {{"binary_data_size": 16}}}}, {{"name": "{}", "shape": [1, 1], "datatype": "{}", "parameters": {{"binary_data_size": 8}}}}], "outputs": [{{"name": "y", "parameters": {{"binary_data": true}}}}]}}"#,
        a.0, a.1, b.0, b.1
    );
    let (body, n) = binary_request(&header, &[&le_f32(&features), &7_i64.to_le_bytes()]);
    let got = oip::decode_binary_infer_request(&body, n, &two).unwrap();
    assert_eq!(got.inputs, want.inputs);
    assert!(got.binary_outputs.is_binary("y"));
    let mixed = format!(
        r#"{{"inputs": [{{"name": "{}", "shape": [1, 4], "datatype": "{}", "data": [0.5, -1.0, 2.25, 3.0]}}, {{"name": "{}", "shape": [1, 1], "datatype": "{}", "parameters": {{"binary_data_size": 8}}}}]}}"#,
        a.0, a.1, b.0, b.1
    );
    let (body, n) = binary_request(&mixed, &[&7_i64.to_le_bytes()]);
    assert_eq!(
        oip::decode_binary_infer_request(&body, n, &two)
            .unwrap()
            .inputs,
        want.inputs
    );
}

#[test]
fn every_binary_size_mismatch_is_refused_naming_the_input_and_the_numbers() {
    let mlp = fixture("mlp.onnx");
    let header = |size: usize| {
        format!(
            r#"{{"inputs": [{{"name": "input", "shape": [2, 32], "datatype": "FP32", "parameters": {{"binary_data_size": {size}}}}}]}}"#
        )
    };
    let rows = le_f32(&[0.25; 64]);
    let cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
        (
            "size short of the shape",
            binary_request(&header(128), &[&rows[..128]]).0,
            header(128).len(),
            r#"input "input": `binary_data_size` is 128 bytes, but shape [2, 32] of FP32 needs 64 elements × 4 bytes = 256"#,
        ),
        (
            "truncated body",
            binary_request(&header(256), &[&rows[..100]]).0,
            header(256).len(),
            r#"input "input": `binary_data_size` is 256 but only 100 bytes of binary data are left in the body (the body is truncated, or an earlier input's size is wrong)"#,
        ),
        (
            "bytes left over",
            binary_request(&header(256), &[&rows, b"xx"]).0,
            header(256).len(),
            "malformed request: 258 bytes of binary data follow the JSON header, but the inputs' `binary_data_size` add up to 256",
        ),
        (
            "header length past the body",
            binary_request(&header(256), &[&rows]).0,
            10_000,
            "malformed request: Inference-Header-Content-Length is 10000 but the body has only",
        ),
        (
            "header length cutting the JSON",
            binary_request(&header(256), &[&rows]).0,
            20,
            "invalid JSON",
        ),
        (
            "a size that is not a number",
            binary_request(&header(256).replace("256", "\"256\""), &[&rows]).0,
            header(256).len() + 2,
            r#"input "input": `binary_data_size` must be a non-negative integer, got "256""#,
        ),
        (
            "a size past u64",
            binary_request(&header(256).replace("256", "1e30"), &[&rows]).0,
            header(256).len() + 1,
            r#"input "input": `binary_data_size` must be a non-negative integer, got 1e+30"#,
        ),
    ];
    for (what, body, n, says) in cases {
        let err = match oip::decode_binary_infer_request(&body, n, &mlp) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.message(),
        };
        assert!(err.starts_with(says), "{what}: {err}");
    }
    // Both `data` and a binary size for one input.
    let both = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": {}, "parameters": {{"binary_data_size": 128}}}}]}}"#,
        floats(32)
    );
    let (body, n) = binary_request(&both, &[&rows[..128]]);
    let err = oip::decode_binary_infer_request(&body, n, &mlp)
        .unwrap_err()
        .message();
    assert!(err.contains("both `data` and `binary_data_size`"), "{err}");
}

#[test]
fn outputs_asked_as_binary_come_after_the_json_and_the_others_stay_json() {
    let probabilities = Tensor::new("probabilities", vec![1, 2], vec![0.25_f32, 0.75]).unwrap();
    let labels = Tensor::new("labels", vec![2], vec!["cat".to_owned(), "dög".to_owned()]).unwrap();
    let outputs = [probabilities, labels];
    let mut binary = oip::BinaryOutputs::default();

    // Nothing asked: exactly the JSON response.
    let (body, n) = oip::encode_binary_infer_response("m", "1", None, &outputs, &binary);
    assert_eq!(n, None);
    assert_eq!(body, oip::encode_infer_response("m", "1", None, &outputs));

    // `binary_data_output: true` for all, but `labels` asked for as JSON.
    binary.all = true;
    binary.named.push(("labels".into(), false));
    let (body, n) = oip::encode_binary_infer_response("m", "1", Some("r"), &outputs, &binary);
    let n = n.unwrap();
    let head: Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!(
        head["outputs"],
        json!([
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
            {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["cat", "dög"]},
        ])
    );
    assert_eq!(head["id"], "r");
    assert_eq!(body[n..], le_f32(&[0.25, 0.75]));

    // BYTES as binary: 4-byte little-endian lengths.
    binary.named.clear();
    let (body, n) = oip::encode_binary_infer_response("m", "1", None, &outputs[1..], &binary);
    let tail = &body[n.unwrap()..];
    assert_eq!(
        tail,
        [
            &3_u32.to_le_bytes()[..],
            b"cat",
            &4_u32.to_le_bytes(),
            "dög".as_bytes()
        ]
        .concat()
    );
}

#[test]
fn binary_output_flags_must_be_booleans() {
    let mlp = fixture("mlp.onnx");
    let request = |parameters: &str, output: &str| {
        format!(
            r#"{{"inputs": [{}], "parameters": {parameters}, "outputs": [{output}]}}"#,
            input("input", "FP32", "[1, 32]", &floats(32))
        )
    };
    let ok = oip::decode_infer_request(
        request(
            r#"{"binary_data_output": true}"#,
            r#"{"name": "probabilities", "parameters": {"binary_data": false}}"#,
        )
        .as_bytes(),
        &mlp,
    )
    .unwrap();
    assert!(ok.binary_outputs.all);
    assert!(!ok.binary_outputs.is_binary("probabilities"));
    assert!(ok.binary_outputs.is_binary("anything else"));
    let err = refusal(
        &request(
            r#"{"binary_data_output": 1}"#,
            r#"{"name": "probabilities"}"#,
        ),
        &mlp,
    );
    assert_eq!(
        err,
        "malformed request: parameter `binary_data_output` must be true or false, got 1"
    );
    let err = refusal(
        &request(
            "{}",
            r#"{"name": "probabilities", "parameters": {"binary_data": "yes"}}"#,
        ),
        &mlp,
    );
    assert!(
        err.contains("probabilities") && err.contains("`binary_data` must be true or false"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// gRPC (`inference.GRPCInferenceService`): protobuf messages to the same tensors

use oip::grpc::proto;

/// A `ModelInfer` request with `tensor` as its one input, in `raw_input_contents`.
fn grpc_raw(tensor: &Tensor) -> proto::ModelInferRequest {
    let response = oip::encode_grpc_infer_response("m", "1", None, std::slice::from_ref(tensor));
    let response = <proto::ModelInferResponse as prost::Message>::decode(&response[..]).unwrap();
    let output = &response.outputs[0];
    proto::ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![proto::InferInputTensor {
            name: output.name.clone(),
            datatype: output.datatype.clone(),
            shape: output.shape.clone(),
            ..Default::default()
        }],
        raw_input_contents: response.raw_output_contents,
        ..Default::default()
    }
}

fn grpc_decode(
    request: proto::ModelInferRequest,
    signature: &ModelSignature,
) -> Result<oip::DecodedRequest, OipError> {
    oip::decode_grpc_infer_request(&prost::Message::encode_to_vec(&request), signature)
}

fn any_width(datatype: &str) -> ModelSignature {
    signature(
        vec![spec("t", datatype, Some(vec![batch(), Dim::Unknown]))],
        vec![spec("y", "FP32", Some(vec![batch()]))],
    )
}

#[test]
fn every_supported_datatype_round_trips_through_a_grpc_response_and_request() {
    for tensor in tensors_of_every_datatype() {
        let model = any_width(tensor.datatype().as_oip());
        let decoded = grpc_decode(grpc_raw(&tensor), &model).unwrap();
        assert_eq!(
            decoded.inputs,
            vec![tensor.clone()],
            "{}",
            tensor.datatype()
        );
    }
}

#[test]
fn a_grpc_request_decodes_to_what_the_same_json_request_does() {
    let mlp = fixture("mlp.onnx");
    let json = decode(
        &format!(
            r#"{{"id": "r1", "parameters": {{"p": 3}}, "inputs": [{}], "outputs": [{{"name": "probabilities"}}]}}"#,
            input("input", "FP32", "[2, 32]", &floats(64))
        ),
        &mlp,
    )
    .unwrap();
    let values: Vec<f32> = (0..64).map(|i| i as f32 + 0.5).collect();
    let typed = proto::ModelInferRequest {
        model_name: "mlp".into(),
        id: "r1".into(),
        parameters: [(
            "p".to_string(),
            proto::InferParameter {
                parameter_choice: Some(proto::ParameterChoice::Int64Param(3)),
            },
        )]
        .into(),
        inputs: vec![proto::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![2, 32],
            contents: Some(proto::InferTensorContents {
                fp32_contents: values.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        outputs: vec![proto::InferRequestedOutputTensor {
            name: "probabilities".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut raw = typed.clone();
    raw.inputs[0].contents = None;
    raw.raw_input_contents = vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()];
    for request in [typed, raw] {
        let grpc = grpc_decode(request, &mlp).unwrap();
        assert_eq!(grpc.inputs, json.inputs);
        assert_eq!(grpc.outputs, json.outputs);
        assert_eq!(grpc.id, json.id);
        assert_eq!(grpc.parameters, json.parameters);
    }
}

#[test]
fn every_invalid_grpc_request_is_refused_naming_what_is_wrong() {
    let tensor = |datatype: &str, contents: proto::InferTensorContents| proto::ModelInferRequest {
        inputs: vec![proto::InferInputTensor {
            name: "t".into(),
            datatype: datatype.into(),
            shape: vec![1, 3],
            contents: Some(contents),
            ..Default::default()
        }],
        ..Default::default()
    };
    let refusal = |request: proto::ModelInferRequest, datatype: &str| {
        grpc_decode(request, &any_width(datatype))
            .unwrap_err()
            .message()
    };
    let contents = proto::InferTensorContents::default;
    let cases: Vec<(proto::ModelInferRequest, &str, &[&str])> = vec![
        (
            tensor(
                "INT8",
                proto::InferTensorContents {
                    int_contents: vec![1, 300, 2],
                    ..contents()
                },
            ),
            "INT8",
            &["\"t\"", "element 1 is 300", "INT8"],
        ),
        (
            tensor(
                "FP32",
                proto::InferTensorContents {
                    fp32_contents: vec![1.0, 2.0],
                    ..contents()
                },
            ),
            "FP32",
            &["contents.fp32_contents has 2 elements", "holds 3"],
        ),
        (
            tensor(
                "FP32",
                proto::InferTensorContents {
                    int_contents: vec![1, 2, 3],
                    ..contents()
                },
            ),
            "FP32",
            &["contents.fp32_contents has 0 elements"],
        ),
        (
            tensor(
                "FP16",
                proto::InferTensorContents {
                    fp32_contents: vec![1.0, 2.0, 3.0],
                    ..contents()
                },
            ),
            "FP16",
            &["FP16 has no typed field", "raw_input_contents"],
        ),
        (
            tensor(
                "BYTES",
                proto::InferTensorContents {
                    bytes_contents: vec![b"ok".to_vec(), vec![0xff, 0xfe], b"x".to_vec()],
                    ..contents()
                },
            ),
            "BYTES",
            &["BYTES element 1 is not UTF-8"],
        ),
        (
            {
                let mut r = tensor("FP32", contents());
                r.raw_input_contents = vec![vec![0; 12]];
                r
            },
            "FP32",
            &["has typed `contents` and raw_input_contents"],
        ),
        (
            {
                let mut r = tensor("FP32", contents());
                r.inputs[0].contents = None;
                r.raw_input_contents = vec![vec![0; 12], vec![0; 12]];
                r
            },
            "FP32",
            &["raw_input_contents has 2 entries for 1 inputs"],
        ),
        (
            {
                let mut r = tensor("FP32", contents());
                r.inputs[0].contents = None;
                r.raw_input_contents = vec![vec![0; 11]];
                r
            },
            "FP32",
            &["raw_input_contents[0] is 11 bytes", "= 12"],
        ),
        (
            {
                let mut r = tensor("FP32", contents());
                r.inputs[0].contents = None;
                r
            },
            "FP32",
            &["\"t\"", "has no data"],
        ),
        (
            tensor(
                "INT64",
                proto::InferTensorContents {
                    int64_contents: vec![1, 2, 3],
                    ..contents()
                },
            ),
            "FP32",
            &["\"t\"", "INT64", "FP32"],
        ),
    ];
    for (request, datatype, says) in cases {
        let message = refusal(request, datatype);
        for s in says {
            assert!(message.contains(s), "{message:?} does not say {s:?}");
        }
    }
    let garbage = oip::decode_grpc_infer_request(b"\xff\xff\xff", &any_width("FP32"))
        .unwrap_err()
        .message();
    assert!(
        garbage.contains("not a ModelInferRequest message"),
        "{garbage}"
    );
}
