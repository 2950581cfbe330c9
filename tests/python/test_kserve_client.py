"""KServe's Python client (`kserve.InferenceRESTClient`) against `ferry serving`, with its
defaults: `InferInput.set_data_from_numpy` sends binary tensors unless told otherwise. The only
setting given is `protocol="v2"` (the client speaks KServe's v1 protocol by default, which is
not the Open Inference Protocol).

Run by scripts/test.sh (pytest); needs FERRY_BIN and ONNX Runtime.
"""
import asyncio

import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig

from conftest import FIXTURES, Process, array, expected


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    ferry = Process(
        ["serving",
         "--model", f"mlp={FIXTURES / 'mlp.onnx'}",
         "--model", f"two={FIXTURES / 'two_inputs.onnx'}",
         "--model", f"strings={FIXTURES / 'strings.onnx'}"],
        tmp_path_factory.mktemp("ferry") / "serving.log")
    url = f"http://{ferry.address}"

    def ready():
        import urllib.request
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
            return r.status == 200

    ferry.wait_until(ready, "ferry serving becoming ready")
    yield url
    ferry.stop()


def infer(base_url, model, inputs):
    # What the defaults produce: binary tensors after a JSON header of this length.
    assert InferRequest(model, inputs).to_rest()[1], "the client sent JSON, not binary tensors"

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        return await client.infer(base_url, InferRequest(model, inputs), model_name=model)
    return asyncio.run(call())


@pytest.mark.parametrize("model,fixture", [("mlp", "mlp.onnx"), ("two", "two_inputs.onnx")])
def test_binary_requests_with_the_clients_defaults(base_url, model, fixture):
    case = expected(fixture)
    inputs = []
    for spec in case["inputs"]:
        data = array(spec)
        i = InferInput(spec["name"], list(data.shape), spec["datatype"])
        i.set_data_from_numpy(data)  # binary_data defaults to True
        inputs.append(i)
    response = infer(base_url, model, inputs)
    assert response.model_name == model
    for o in case["outputs"]:
        got = next(out for out in response.outputs if out.name == o["name"]).as_numpy()
        np.testing.assert_allclose(got.reshape(array(o).shape), array(o), rtol=1e-5, atol=1e-6)


def test_bytes_with_the_clients_defaults(base_url):
    text = np.array([[b"kserve"], ["\u00e9t\u00e9".encode()]], dtype=np.object_)
    i = InferInput("text", list(text.shape), "BYTES")
    i.set_data_from_numpy(text)
    response = infer(base_url, "strings", [i])
    echo = response.outputs[0].as_numpy()
    assert [bytes(v) if not isinstance(v, str) else v.encode() for v in echo.reshape(-1)] == \
        [b"kserve", "\u00e9t\u00e9".encode()]
