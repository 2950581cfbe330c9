"""KServe's Python client against `ferry serving`, with its defaults, over REST
(`InferenceRESTClient`: `InferInput.set_data_from_numpy` sends binary tensors unless told
otherwise; the only setting given is `protocol="v2"`, since the client speaks KServe's v1
protocol by default, which is not the Open Inference Protocol) and over gRPC
(`InferenceGRPCClient`, tensors in `raw_input_contents`).

The client runs in a process of its own (kserve_call.py): its generated gRPC modules and
tritonclient's cannot be loaded in one process, and the tritonclient tests share pytest's.
Run by scripts/test.sh (pytest); needs FERRY_BIN and ONNX Runtime.
"""
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, Process, array, expected

CALL = Path(__file__).with_name("kserve_call.py")


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    ferry = Process(
        ["serving",
         "--model", f"mlp={FIXTURES / 'mlp.onnx'}",
         "--model", f"two={FIXTURES / 'two_inputs.onnx'}",
         "--model", f"strings={FIXTURES / 'strings.onnx'}"],
        tmp_path_factory.mktemp("ferry") / "serving.log")

    def ready():
        with urllib.request.urlopen(f"http://{ferry.address}/v2/health/ready", timeout=2) as r:
            return r.status == 200

    ferry.wait_until(ready, "ferry serving becoming ready")
    yield ferry.address
    ferry.stop()


def infer(protocol, address, model, inputs):
    url = f"http://{address}" if protocol == "rest" else address
    out = subprocess.run([sys.executable, str(CALL), protocol, url, model],
                         input=json.dumps({"inputs": inputs}), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def case_inputs(case):
    return [{"name": s["name"], "datatype": s["datatype"], "shape": list(array(s).shape),
             "dtype": str(array(s).dtype), "data": array(s).reshape(-1).tolist()}
            for s in case["inputs"]]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("model,fixture", [("mlp", "mlp.onnx"), ("two", "two_inputs.onnx")])
def test_requests_with_the_clients_defaults(address, protocol, model, fixture):
    case = expected(fixture)
    response = infer(protocol, address, model, case_inputs(case))
    assert response["model_name"] == model
    for o in case["outputs"]:
        got = np.array(response["outputs"][o["name"]])
        np.testing.assert_allclose(got.reshape(array(o).shape), array(o), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_bytes_with_the_clients_defaults(address, protocol):
    text = ["kserve", "\u00e9t\u00e9"]
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "dtype": "object",
               "data": text}]
    response = infer(protocol, address, "strings", inputs)
    assert response["outputs"]["echo"] == text
