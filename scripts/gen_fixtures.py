#!/usr/bin/env python3
"""Writes the ONNX fixtures Ferry's tests load from tests/fixtures/.

Needs: pip install onnx numpy onnxruntime==1.31.1

Every file is a pure function of the fixed seeds below, so running the script twice gives
byte-identical files; `--check` regenerates into a temporary folder and fails if anything in
tests/fixtures/ differs (stale or hand-edited fixtures).

Models use opset 17 and IR version 8, which every onnxruntime since 1.13 loads.
`mlp_large.onnx` (~21 MB, for benchmarks) is written too but is git-ignored.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ORT_VERSION = "1.31.1"
OPSET = 17
IR_VERSION = 8
BATCH = "batch"
# Inputs in expected.json use this many rows for models with a symbolic batch dimension.
EXPECTED_BATCH = 3

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

# ONNX element type -> Open Inference Protocol datatype, as the registry reports it.
OIP = {TensorProto.FLOAT: "FP32", TensorProto.INT64: "INT64"}
NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64}


def tensor(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ferry-fixtures",
        producer_version="1",
    )
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def he(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    # Gemm with transB=1 takes [out, in] weights, the layout PyTorch exports.
    return (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def mlp(name: str, sizes: list[int], seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    layers = len(sizes) - 1
    for i in range(layers):
        w, b = f"fc{i}.weight", f"fc{i}.bias"
        inits.append(numpy_helper.from_array(he(rng, sizes[i + 1], sizes[i]), w))
        inits.append(numpy_helper.from_array((rng.standard_normal(sizes[i + 1]) * 0.01).astype(np.float32), b))
        out = f"fc{i}" if i < layers - 1 else "logits"
        nodes.append(helper.make_node("Gemm", [prev, w, b], [out], name=f"fc{i}", transB=1))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            prev = f"relu{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1))
    graph = helper.make_graph(
        nodes,
        name,
        [tensor("input", TensorProto.FLOAT, [BATCH, sizes[0]])],
        [tensor("probabilities", TensorProto.FLOAT, [BATCH, sizes[-1]])],
        initializer=inits,
    )
    return model(graph)


def two_inputs() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["scale"], ["scale_f"], name="cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x", "scale_f"], ["y"], name="mul"),
        ],
        "two_inputs",
        [tensor("x", TensorProto.FLOAT, [BATCH, 4]), tensor("scale", TensorProto.INT64, [BATCH, 1])],
        [tensor("y", TensorProto.FLOAT, [BATCH, 4])],
    )
    return model(graph)


def int64_sum() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["ids", "axes"], ["sum"], name="sum", keepdims=1)],
        "int64",
        [tensor("ids", TensorProto.INT64, [BATCH, 8])],
        [tensor("sum", TensorProto.INT64, [BATCH, 1])],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return model(graph)


def fixed_shape() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["pooled"], name="flatten", axis=1),
        ],
        "fixed_shape",
        [tensor("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [tensor("pooled", TensorProto.FLOAT, [1, 3])],
    )
    return model(graph)


def strings() -> onnx.ModelProto:
    """BYTES in and out (ONNX STRING tensors): the text echoed, for clients' BYTES encodings."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"], name="echo")],
        "strings",
        [tensor("text", TensorProto.STRING, [BATCH, 1])],
        [tensor("echo", TensorProto.STRING, [BATCH, 1])],
    )
    return model(graph)


def half_precision() -> onnx.ModelProto:
    """FP16 and BF16 in and out: `x` (FP16) doubled, `b` (BF16) echoed, and `x` widened to FP32
    (what the runtime computed, readable by any client)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "x"], ["doubled"], name="double"),
            helper.make_node("Identity", ["b"], ["b_echo"], name="echo"),
            helper.make_node("Cast", ["x"], ["x_float"], name="widen", to=TensorProto.FLOAT),
        ],
        "half",
        [tensor("x", TensorProto.FLOAT16, [BATCH, 4]), tensor("b", TensorProto.BFLOAT16, [BATCH, 4])],
        [
            tensor("doubled", TensorProto.FLOAT16, [BATCH, 4]),
            tensor("b_echo", TensorProto.BFLOAT16, [BATCH, 4]),
            tensor("x_float", TensorProto.FLOAT, [BATCH, 4]),
        ],
    )
    return model(graph)


def unloadable() -> onnx.ModelProto:
    """A well-formed ONNX graph (the registry accepts it) that ONNX Runtime cannot load: its only
    node is an operator from a domain no runtime implements. Tests use it for failed loads."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["probabilities"], name="missing", domain="ai.ferry.test")],
        "unloadable",
        [tensor("input", TensorProto.FLOAT, [BATCH, 32])],
        [tensor("probabilities", TensorProto.FLOAT, [BATCH, 2])],
    )
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ferry.test", 1)],
        producer_name="ferry-fixtures",
        producer_version="1",
    )
    m.ir_version = 8
    return m


def fragile() -> onnx.ModelProto:
    """mlp.onnx's signature and weights with an embedding-style lookup whose index comes from the
    input: row r reads table[int(1000 * input[r, 0])] from a one-entry table. Zeros (the warm-up)
    pass and the answers equal mlp.onnx's; any row whose first feature is not within
    (-0.002, 0.002) fails inside ONNX Runtime ("indices element out of data bounds"). Tests use it
    for a version that loads fine and then fails real requests."""
    m = mlp("fragile", [32, 256, 256, 2], seed=7)
    g = m.graph
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    softmax.output[0] = "mlp_probabilities"
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], dtype=np.int64), "first_col.start"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "first_col.end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "first_col.axis"),
            numpy_helper.from_array(np.array(1000.0, dtype=np.float32), "index.scale"),
            numpy_helper.from_array(np.array([1.0], dtype=np.float32), "table"),
        ]
    )
    g.node.extend(
        [
            helper.make_node(
                "Slice", ["input", "first_col.start", "first_col.end", "first_col.axis"], ["first_col"], name="first_col"
            ),
            helper.make_node("Mul", ["first_col", "index.scale"], ["scaled"], name="scale"),
            helper.make_node("Cast", ["scaled"], ["index"], name="index", to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["gate"], name="lookup", axis=0),
            helper.make_node("Mul", ["mlp_probabilities", "gate"], ["probabilities"], name="gated"),
        ]
    )
    onnx.checker.check_model(m, full_check=True)
    return m


def spec(vi: onnx.ValueInfoProto) -> dict:
    t = vi.type.tensor_type
    dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
    return {"name": vi.name, "datatype": OIP[t.elem_type], "shape": dims}


def sample(vi: onnx.ValueInfoProto, rng: np.random.Generator) -> np.ndarray:
    t = vi.type.tensor_type
    shape = [EXPECTED_BATCH if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
    if t.elem_type == TensorProto.INT64:
        return rng.integers(-50, 50, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(NUMPY[t.elem_type])


def oip_tensor(name: str, datatype: str, array: np.ndarray) -> dict:
    # Open Inference Protocol v2 tensor, row-major flat data. float32 values go through float()
    # so the JSON holds the exact binary value; parse as f64 and narrow to f32 to get it back.
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": [float(v) if array.dtype.kind == "f" else int(v) for v in array.reshape(-1)],
    }


def expected(m: onnx.ModelProto, path: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {vi.name: sample(vi, rng) for vi in m.graph.input}
    options = ort.SessionOptions()
    # One thread and no graph rewrites: the reference values should not depend on the machine's cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    return {
        "signature": {
            "inputs": [spec(vi) for vi in m.graph.input],
            "outputs": [spec(vi) for vi in m.graph.output],
        },
        "inputs": [oip_tensor(vi.name, spec(vi)["datatype"], feeds[vi.name]) for vi in m.graph.input],
        "outputs": [
            oip_tensor(vi.name, spec(vi)["datatype"], out) for vi, out in zip(m.graph.output, outputs)
        ],
    }


def generate(out: Path, large: bool) -> None:
    if ort.__version__ != ORT_VERSION:
        sys.exit(f"expected onnxruntime {ORT_VERSION}, found {ort.__version__}: pip install onnxruntime=={ORT_VERSION}")
    out.mkdir(parents=True, exist_ok=True)
    small = {
        "mlp.onnx": mlp("mlp", [32, 256, 256, 2], seed=7),
        "two_inputs.onnx": two_inputs(),
        "int64.onnx": int64_sum(),
        "fixed_shape.onnx": fixed_shape(),
    }
    results = {}
    for seed, (file, m) in enumerate(small.items(), start=100):
        path = out / file
        path.write_bytes(m.SerializeToString(deterministic=True))
        results[file] = expected(m, path, seed)
    doc = {
        "generator": "scripts/gen_fixtures.py",
        "onnxruntime": ORT_VERSION,
        "note": "outputs from onnxruntime CPU, one thread; compare floats with a tolerance (rtol 1e-5, atol 1e-6)",
        "models": results,
    }
    (out / "expected.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (out / "unloadable.onnx").write_bytes(unloadable().SerializeToString(deterministic=True))
    (out / "strings.onnx").write_bytes(strings().SerializeToString(deterministic=True))
    (out / "half.onnx").write_bytes(half_precision().SerializeToString(deterministic=True))
    (out / "fragile.onnx").write_bytes(fragile().SerializeToString(deterministic=True))
    if large:
        big = mlp("mlp_large", [512, 2048, 2048, 10], seed=11)
        (out / "mlp_large.onnx").write_bytes(big.SerializeToString(deterministic=True))
        # Same signature as mlp.onnx, about ten times the work: a slow shadow for bench/shadow.sh.
        slow = mlp("mlp_slow", [32, 896, 896, 2], seed=13)
        (out / "mlp_slow.onnx").write_bytes(slow.SerializeToString(deterministic=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=FIXTURES, help="output folder (default: tests/fixtures)")
    parser.add_argument("--no-large", action="store_true", help="skip mlp_large.onnx")
    parser.add_argument("--check", action="store_true", help="fail if the committed fixtures are stale")
    args = parser.parse_args()
    # `ferry up`'s demo model (assets/demo.onnx) is the mlp fixture: one definition, two homes
    # (the product's own asset, and the tests' fixture).
    demo = Path(__file__).resolve().parents[1] / "assets" / "demo.onnx"
    if not args.check:
        generate(args.out, large=not args.no_large)
        if args.out == FIXTURES:
            shutil.copyfile(FIXTURES / "mlp.onnx", demo)
        return
    if not filecmp.cmp(FIXTURES / "mlp.onnx", demo, shallow=False):
        sys.exit(f"{demo} differs from {FIXTURES / 'mlp.onnx'}; run scripts/gen_fixtures.py")
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), large=False)
        names = sorted(p.name for p in Path(tmp).iterdir())
        _, mismatch, missing = filecmp.cmpfiles(args.out, tmp, names, shallow=False)
        if mismatch or missing:
            sys.exit(f"stale fixtures in {args.out}: {mismatch + missing}; run scripts/gen_fixtures.py")


if __name__ == "__main__":
    main()
