"""The official Triton HTTP client with its default settings, which send and ask for binary
tensors (the binary tensor data extension), against `ferry serving` and `ferry up`.

Nothing here passes `binary_data=...`: that is the point. Run by scripts/test.sh (pytest);
needs FERRY_BIN and ONNX Runtime (ORT_DYLIB_PATH or .ort/).
"""
import json
import time

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import (FIXTURES, Process, array, expected, ferry, half_precision_case,
                      variant)


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    ferry = Process(
        ["serving",
         "--model", f"mlp={FIXTURES / 'mlp.onnx'}",
         "--model", f"two={FIXTURES / 'two_inputs.onnx'}",
         "--model", f"ints={FIXTURES / 'int64.onnx'}",
         "--model", f"strings={FIXTURES / 'strings.onnx'}",
         "--model", f"half={FIXTURES / 'half.onnx'}"],
        tmp_path_factory.mktemp("ferry") / "serving.log")
    client = httpclient.InferenceServerClient(url=ferry.address)
    ferry.wait_until(client.is_server_ready, "ferry serving becoming ready")
    yield client
    ferry.stop()


def infer_case(client, model, fixture, outputs=None):
    case = expected(fixture)
    inputs = []
    for spec in case["inputs"]:
        data = array(spec)
        i = httpclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        i.set_data_from_numpy(data)  # binary_data defaults to True
        inputs.append(i)
    return case, client.infer(model, inputs, outputs=outputs)


def check_outputs(case, result):
    for o in case["outputs"]:
        got = result.as_numpy(o["name"])
        assert got is not None, f"no output {o['name']}: {result.get_response()}"
        np.testing.assert_allclose(got, array(o), rtol=1e-5, atol=1e-6)


def test_fp32_rows_in_binary_and_every_output_back_in_binary(serving):
    # No outputs named: the client asks for all of them in binary (`binary_data_output`).
    case, result = infer_case(serving, "mlp", "mlp.onnx")
    check_outputs(case, result)
    output = result.get_response()["outputs"][0]
    assert "data" not in output and output["parameters"]["binary_data_size"] > 0
    assert array(case["inputs"][0]).shape[0] == 3, "several rows in one request"


def test_requested_outputs_default_to_binary_and_json_ones_stay_json(serving):
    case, result = infer_case(serving, "two", "two_inputs.onnx",
                              outputs=[httpclient.InferRequestedOutput("y")])
    check_outputs(case, result)
    assert "data" not in result.get_response()["outputs"][0]
    case, result = infer_case(serving, "two", "two_inputs.onnx",
                              outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    check_outputs(case, result)
    assert "data" in result.get_response()["outputs"][0]


def test_inputs_mixed_json_and_binary(serving):
    case = expected("two_inputs.onnx")
    x, scale = (array(s) for s in case["inputs"])
    a = httpclient.InferInput("x", list(x.shape), "FP32")
    a.set_data_from_numpy(x, binary_data=False)
    b = httpclient.InferInput("scale", list(scale.shape), "INT64")
    b.set_data_from_numpy(scale)
    check_outputs(case, serving.infer("two", [a, b]))


def test_int64_in_binary(serving):
    case, result = infer_case(serving, "ints", "int64.onnx")
    check_outputs(case, result)


def test_bytes_in_binary_round_trip(serving):
    text = np.array([[b"hello"], ["w\u00f6rld".encode()], [b""]], dtype=np.object_)
    i = httpclient.InferInput("text", list(text.shape), "BYTES")
    i.set_data_from_numpy(text)
    result = serving.infer("strings", [i])
    assert result.as_numpy("echo").tolist() == text.tolist()


def test_fp16_and_bf16_in_binary(serving):
    inputs, check = half_precision_case(httpclient)
    echo = check(serving.infer("half", inputs))
    assert echo.dtype == ml_dtypes.bfloat16


def test_fp16_as_json_numbers(serving):
    x = np.array([[0.5, -1.25, 1000.0, 0.0]], dtype=np.float16)
    xi = httpclient.InferInput("x", list(x.shape), "FP16")
    xi.set_data_from_numpy(x, binary_data=False)
    b = np.zeros((1, 4), dtype=ml_dtypes.bfloat16)
    bi = httpclient.InferInput("b", [1, 4], "BF16")
    bi.set_data_from_numpy(b)
    result = serving.infer("half", [xi, bi], outputs=[
        httpclient.InferRequestedOutput("doubled", binary_data=False)])
    assert result.get_response()["outputs"][0]["data"] == [1.0, -2.5, 2000.0, 0.0]


def test_a_wrong_shape_is_an_error_naming_the_input(serving):
    data = np.zeros((2, 31), dtype=np.float32)
    i = httpclient.InferInput("input", [2, 31], "FP32")
    i.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as err:
        serving.infer("mlp", [i])
    assert '"input"' in str(err.value) and "31" in str(err.value)


def test_an_endpoint_with_a_canary_answers_binary_requests_from_both_versions(tmp_path):
    log = tmp_path / "predictions"
    up = Process(["up", "--no-demo", "--data-dir", str(tmp_path / "data"),
                  "--prediction-log", f"file://{log}", "--log-inputs"],
                 tmp_path / "up.log", cwd=tmp_path)
    try:
        registry = f"http://{up.address}"
        client = httpclient.InferenceServerClient(url=up.address)
        up.wait_until(client.is_server_live, "ferry up starting")
        for tag in ("one", "two"):
            ferry(registry, "model", "push", str(variant(tmp_path, tag)), "--name", "fraud")
        ferry(registry, "endpoint", "set", "fraud", "--model", "fraud",
              "--stable", "1", "--canary", "2", "--weight", "0.5")

        def both_served():
            return client.is_model_ready("fraud", "1") and client.is_model_ready("fraud", "2")

        up.wait_until(both_served, "both versions being served")
        case = expected("mlp.onnx")
        versions = set()
        deadline = time.time() + 60
        while versions != {"1", "2"} and time.time() < deadline:
            _, result = infer_case(client, "fraud", "mlp.onnx")
            check_outputs(case, result)
            versions.add(result.get_response()["model_version"])
        assert versions == {"1", "2"}, f"only {versions} answered"

        # The prediction log holds JSON lines with the tensors as numbers, never raw bytes.
        lines = []
        deadline = time.time() + 30
        while not lines and time.time() < deadline:
            time.sleep(0.5)
            lines = [line for p in log.rglob("*") if p.is_file()
                     for line in p.read_bytes().splitlines() if line]
        assert lines, f"nothing in the prediction log:\n{up.log.read_text()}"
        record = json.loads(lines[0])
        assert record["response"]["outputs"][0]["data"], record
        assert len(record["request"]["inputs"][0]["data"]) == 3 * 32, record
    finally:
        up.stop()
