//! Hand-encoded ONNX models of any size, for tests that need big uploads without big fixtures.
//! The model is `y = Identity(x)` with `x` FP32 [batch, 4], plus an unused initializer `w`
//! whose raw bytes make up the size.
#![allow(dead_code)]

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn field_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field << 3));
    varint(out, v);
}

fn value_info(name: &str) -> Vec<u8> {
    // TensorShapeProto { dim { dim_param: "batch" }, dim { dim_value: 4 } }
    let mut dim_batch = Vec::new();
    field_bytes(&mut dim_batch, 2, b"batch");
    let mut dim_four = Vec::new();
    field_varint(&mut dim_four, 1, 4);
    let mut shape = Vec::new();
    field_bytes(&mut shape, 1, &dim_batch);
    field_bytes(&mut shape, 1, &dim_four);
    let mut tensor = Vec::new();
    field_varint(&mut tensor, 1, 1); // elem_type FLOAT
    field_bytes(&mut tensor, 2, &shape);
    let mut type_proto = Vec::new();
    field_bytes(&mut type_proto, 1, &tensor);
    let mut vi = Vec::new();
    field_bytes(&mut vi, 1, name.as_bytes());
    field_bytes(&mut vi, 2, &type_proto);
    vi
}

/// Everything before the initializer's raw bytes, and everything after them, such that
/// `prefix + weights zero bytes + suffix` is a valid ONNX model.
pub fn identity_model_parts(weights: usize) -> (Vec<u8>, Vec<u8>) {
    let mut node = Vec::new();
    field_bytes(&mut node, 1, b"x");
    field_bytes(&mut node, 2, b"y");
    field_bytes(&mut node, 4, b"Identity");
    let mut graph_rest = Vec::new();
    field_bytes(&mut graph_rest, 1, &node);
    field_bytes(&mut graph_rest, 2, b"big");
    field_bytes(&mut graph_rest, 11, &value_info("x"));
    field_bytes(&mut graph_rest, 12, &value_info("y"));

    // TensorProto { dims: [weights/4], data_type: FLOAT, name: "w", raw_data: … }
    let mut tensor_head = Vec::new();
    field_varint(&mut tensor_head, 1, (weights / 4) as u64);
    field_varint(&mut tensor_head, 2, 1);
    field_bytes(&mut tensor_head, 8, b"w");
    varint(&mut tensor_head, u64::from(9u32 << 3 | 2));
    varint(&mut tensor_head, weights as u64);
    let tensor_len = tensor_head.len() + weights;

    let mut initializer_head = Vec::new();
    varint(&mut initializer_head, u64::from(5u32 << 3 | 2));
    varint(&mut initializer_head, tensor_len as u64);
    let graph_len = initializer_head.len() + tensor_len + graph_rest.len();

    let mut prefix = Vec::new();
    field_varint(&mut prefix, 1, 8); // ir_version
    let mut opset = Vec::new();
    field_bytes(&mut opset, 1, b"");
    field_varint(&mut opset, 2, 17);
    field_bytes(&mut prefix, 8, &opset);
    varint(&mut prefix, u64::from(7u32 << 3 | 2));
    varint(&mut prefix, graph_len as u64);
    prefix.extend_from_slice(&initializer_head);
    prefix.extend_from_slice(&tensor_head);
    (prefix, graph_rest)
}

/// Writes a whole model of about `weights` bytes into `out`.
pub fn write_identity_model(out: &mut Vec<u8>, weights: usize) {
    let (prefix, suffix) = identity_model_parts(weights);
    out.extend_from_slice(&prefix);
    out.extend(std::iter::repeat_n(0u8, weights));
    out.extend_from_slice(&suffix);
}
