"""The official Triton HTTP client against `ferry serving`, with JSON tensors (`binary_data=False`);
test_binary_clients.py runs it with its default settings (binary tensors).

Run by scripts/test.sh (pytest); needs FERRY_BIN (the ferry binary) and ONNX Runtime
(ORT_DYLIB_PATH or .ort/).
"""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import FIXTURES, Process, expected


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ferry = Process(
        ["serving",
         "--model", f"mlp={FIXTURES / 'mlp.onnx'}",
         "--model", f"two={FIXTURES / 'two_inputs.onnx'}",
         "--model", f"fixed={FIXTURES / 'fixed_shape.onnx'}"],
        tmp_path_factory.mktemp("ferry") / "serving.log")
    client = httpclient.InferenceServerClient(url=ferry.address)
    ferry.wait_until(client.is_server_ready, "ferry serving becoming ready")
    yield client
    ferry.stop()


def test_health_and_server_metadata(server):
    assert server.is_server_live()
    assert server.is_server_ready()
    meta = server.get_server_metadata()
    assert meta["name"] == "ferry"


def test_model_metadata_and_config(server):
    assert server.is_model_ready("mlp")
    meta = server.get_model_metadata("mlp")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 32]}
    config = server.get_model_config("mlp")
    assert config["max_batch_size"] > 0
    assert config["input"][0]["name"] == "input"
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [32]
    index = server.get_model_repository_index()
    assert sorted(m["name"] for m in index) == ["fixed", "mlp", "two"]


def test_infer_matches_onnxruntime(server):
    case = expected("mlp.onnx")
    spec = case["inputs"][0]
    data = np.array(spec["data"], dtype=np.float32).reshape(spec["shape"])
    inp = httpclient.InferInput("input", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=False)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=False)
    result = server.infer("mlp", [inp], outputs=[out], request_id="triton-1")
    got = result.as_numpy("probabilities")
    want = np.array(case["outputs"][0]["data"], dtype=np.float32).reshape(case["outputs"][0]["shape"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert response["id"] == "triton-1"
    assert response["model_version"] == "1"


def test_infer_with_two_inputs_of_different_types(server):
    case = expected("two_inputs.onnx")
    inputs = []
    for spec in case["inputs"]:
        dtype = {"FP32": np.float32, "INT64": np.int64}[spec["datatype"]]
        arr = np.array(spec["data"], dtype=dtype).reshape(spec["shape"])
        i = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
        i.set_data_from_numpy(arr, binary_data=False)
        inputs.append(i)
    outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=False) for o in case["outputs"]]
    result = server.infer("two", inputs, outputs=outputs, model_version="1")
    for o in case["outputs"]:
        np.testing.assert_allclose(result.as_numpy(o["name"]).reshape(-1), np.array(o["data"], dtype=np.float32), rtol=1e-5, atol=1e-6)


def test_a_bad_request_is_an_error_that_names_the_input(server):
    data = np.zeros((1, 31), dtype=np.float32)
    inp = httpclient.InferInput("input", [1, 31], "FP32")
    inp.set_data_from_numpy(data, binary_data=False)
    with pytest.raises(InferenceServerException) as err:
        server.infer("mlp", [inp])
    assert "input" in str(err.value)
