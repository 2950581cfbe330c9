"""The official Triton gRPC client against Ferry's `inference.GRPCInferenceService`, served on
the same port as REST: `tritonclient.grpc` with its default settings (tensors in
`raw_input_contents`), and grpcio itself for the status codes. KServe's `InferenceGRPCClient` is
in test_kserve_client.py (its generated modules and tritonclient's cannot share a process).

Run by scripts/test.sh (pytest); needs FERRY_BIN and ONNX Runtime (ORT_DYLIB_PATH or .ort/).
"""
import json
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import (FIXTURES, Process, array, expected, ferry, half_precision_case,
                      variant)


def serving_process(tmp_path_factory, *flags):
    ferry = Process(
        ["serving",
         "--model", f"mlp={FIXTURES / 'mlp.onnx'}",
         "--model", f"two={FIXTURES / 'two_inputs.onnx'}",
         "--model", f"ints={FIXTURES / 'int64.onnx'}",
         "--model", f"strings={FIXTURES / 'strings.onnx'}",
         "--model", f"half={FIXTURES / 'half.onnx'}", *flags],
        tmp_path_factory.mktemp("ferry") / "serving.log")

    def ready():
        with urllib.request.urlopen(f"http://{ferry.address}/v2/health/ready", timeout=2) as r:
            return r.status == 200

    ferry.wait_until(ready, "ferry serving becoming ready")
    return ferry


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ferry = serving_process(tmp_path_factory)
    yield ferry
    ferry.stop()


@pytest.fixture(scope="module")
def triton(server):
    client = grpcclient.InferenceServerClient(url=server.address)
    yield client
    client.close()


def infer_case(client, model, fixture, outputs=None):
    case = expected(fixture)
    inputs = []
    for spec in case["inputs"]:
        data = array(spec)
        i = grpcclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        i.set_data_from_numpy(data)
        inputs.append(i)
    return case, client.infer(model, inputs, outputs=outputs)


def check_outputs(case, result, names=None):
    for o in case["outputs"]:
        if names is not None and o["name"] not in names:
            assert result.as_numpy(o["name"]) is None, f"{o['name']} was not asked for"
            continue
        got = result.as_numpy(o["name"])
        assert got is not None, f"no output {o['name']}: {result.get_response()}"
        np.testing.assert_allclose(got, array(o), rtol=1e-5, atol=1e-6)


def test_health_and_metadata_calls(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("mlp") and not triton.is_model_ready("nope")
    meta = triton.get_server_metadata(as_json=True)
    assert meta["name"] == "ferry" and "binary_tensor_data" in meta["extensions"]
    model = triton.get_model_metadata("mlp", as_json=True)
    assert model["platform"] == "onnxruntime_onnx"
    assert model["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": ["-1", "32"]}
    config = triton.get_model_config("mlp", as_json=True)["config"]
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == ["32"]
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert {m["name"] for m in index} == {"mlp", "two", "ints", "strings", "half"}
    assert all(m["state"] == "READY" for m in index)


def test_fp32_rows_and_int64_with_the_clients_defaults(triton):
    case, result = infer_case(triton, "mlp", "mlp.onnx")
    check_outputs(case, result)
    assert array(case["inputs"][0]).shape[0] == 3, "several rows in one request"
    case, result = infer_case(triton, "ints", "int64.onnx")
    check_outputs(case, result)


def test_only_the_outputs_asked_for(triton):
    case, result = infer_case(triton, "two", "two_inputs.onnx",
                              outputs=[grpcclient.InferRequestedOutput("y")])
    check_outputs(case, result, names={"y"})
    assert [o.name for o in result.get_response().outputs] == ["y"]


def test_bytes_round_trip(triton):
    text = np.array([[b"hello"], ["w\u00f6rld".encode()], [b""]], dtype=np.object_)
    i = grpcclient.InferInput("text", list(text.shape), "BYTES")
    i.set_data_from_numpy(text)
    assert triton.infer("strings", [i]).as_numpy("echo").tolist() == text.tolist()


def test_fp16_and_bf16(triton):
    inputs, check = half_precision_case(grpcclient)
    check(triton.infer("half", inputs))


def test_typed_contents_are_accepted_too(server):
    """Clients that fill `contents` instead of raw bytes (grpcio with the protocol's messages)."""
    case = expected("mlp.onnx")
    data = array(case["inputs"][0])
    request = service_pb2.ModelInferRequest(model_name="mlp", id="typed-1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(data.shape))
    tensor.contents.fp32_contents.extend(data.flatten().tolist())
    response = call(server, "ModelInfer", request, service_pb2.ModelInferResponse)
    assert response.id == "typed-1" and response.model_name == "mlp"
    out = response.outputs[0]
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(out.shape)
    np.testing.assert_allclose(got, array(case["outputs"][0]), rtol=1e-5, atol=1e-6)


def call(server, method, request, response_type, metadata=None, timeout=30):
    with grpc.insecure_channel(server.address) as channel:
        stub = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString)
        return stub(request, metadata=metadata, timeout=timeout)


def grpc_error(server, method, request, response_type, metadata=None):
    with pytest.raises(grpc.RpcError) as err:
        call(server, method, request, response_type, metadata)
    return err.value.code(), err.value.details()


def test_bad_input_is_invalid_argument_naming_the_input(triton, server):
    data = np.zeros((2, 31), dtype=np.float32)
    i = grpcclient.InferInput("input", [2, 31], "FP32")
    i.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as err:
        triton.infer("mlp", [i])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
    assert '"input"' in err.value.message() and "31" in err.value.message()

    request = service_pb2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(b"\0" * 12)
    code, details = grpc_error(server, "ModelInfer", request, service_pb2.ModelInferResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents[0] is 12 bytes" in details and "128" in details, details


def test_unknown_model_is_not_found_and_unknown_methods_unimplemented(server):
    request = service_pb2.ModelInferRequest(model_name="nope")
    code, details = grpc_error(server, "ModelInfer", request, service_pb2.ModelInferResponse)
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details, details
    code, details = grpc_error(server, "ModelStatistics", service_pb2.ModelStatisticsRequest(),
                               service_pb2.ModelStatisticsResponse)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "ModelInfer" in details, details


def test_tokens_are_bearer_metadata_with_the_same_roles(tmp_path_factory):
    ferry = serving_process(tmp_path_factory, "--token", "read:grpc-reader-secret")
    try:
        request = service_pb2.ServerMetadataRequest()
        code, details = grpc_error(ferry, "ServerMetadata", request,
                                   service_pb2.ServerMetadataResponse)
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        code, _ = grpc_error(ferry, "ServerMetadata", request, service_pb2.ServerMetadataResponse,
                             metadata=[("authorization", "Bearer wrong")])
        assert code == grpc.StatusCode.UNAUTHENTICATED
        answer = call(ferry, "ServerMetadata", request, service_pb2.ServerMetadataResponse,
                      metadata=[("authorization", "Bearer grpc-reader-secret")])
        assert answer.name == "ferry"
        client = grpcclient.InferenceServerClient(url=ferry.address)
        headers = {"authorization": "Bearer grpc-reader-secret"}
        case = expected("mlp.onnx")
        data = array(case["inputs"][0])
        i = grpcclient.InferInput("input", list(data.shape), "FP32")
        i.set_data_from_numpy(data)
        result = client.infer("mlp", [i], headers=headers)
        np.testing.assert_allclose(result.as_numpy(case["outputs"][0]["name"]), array(case["outputs"][0]),
                                   rtol=1e-5, atol=1e-6)
        client.close()
    finally:
        ferry.stop()


def big_mlp_input(rows):
    i = grpcclient.InferInput("input", [rows, 32], "FP32")
    i.set_data_from_numpy(np.full((rows, 32), 0.25, dtype=np.float32))
    return i


def test_the_servers_deadline_is_deadline_exceeded(tmp_path_factory):
    ferry = serving_process(tmp_path_factory, "--request-timeout-ms", "1",
                            "--max-batch-size", "1", "--intra-op-threads", "1")
    try:
        client = grpcclient.InferenceServerClient(url=ferry.address)
        with pytest.raises(InferenceServerException) as err:
            for _ in range(20):
                client.infer("mlp", [big_mlp_input(20000)])
        assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED", err.value
        client.close()
    finally:
        ferry.stop()


def test_the_clients_grpc_timeout_shortens_the_servers_deadline(tmp_path_factory, tmp_path):
    # A batch waits 3 s for rows to fill it; the call says `grpc-timeout: 300m`. The server
    # answers DEADLINE_EXCEEDED at the caller's deadline instead of running the request 3 s
    # later (its own deadline is 10 s). curl sends the call, since it does not give up at the
    # deadline itself as gRPC clients do: what comes back is the server's doing.
    ferry = serving_process(tmp_path_factory, "--max-batch-size", "64",
                            "--max-queue-delay-ms", "3000")
    try:
        case = expected("mlp.onnx")
        data = array(case["inputs"][0])
        request = service_pb2.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="input", datatype="FP32", shape=list(data.shape))
        request.raw_input_contents.append(data.astype("<f4").tobytes())
        message = request.SerializeToString()
        body = tmp_path / "call.bin"
        body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)

        def call(timeout):
            headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
            if timeout:
                headers += ["-H", f"grpc-timeout: {timeout}"]
            out = subprocess.run(
                ["curl", "-sS", "-i", "--http2-prior-knowledge", *headers, "--data-binary",
                 f"@{body}", f"http://{ferry.address}/inference.GRPCInferenceService/ModelInfer"],
                capture_output=True, timeout=30)
            assert out.returncode == 0, out.stderr
            head = out.stdout.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
            return head

        head = call("300m")
        assert "grpc-status: 4" in head, head
        assert "grpc-message: " in head and "deadline" in head, head
        # Without one, the same call waits for its batch and succeeds (status in the trailers).
        head = call(None)
        assert "grpc-status" not in head and head.startswith("http/2 200"), head
    finally:
        ferry.stop()


def test_overload_is_resource_exhausted_and_nothing_else_fails(tmp_path_factory):
    # Four runtime threads decode requests in parallel so that they reach the queue faster than
    # one inference thread empties it: with the default (half of CI's 2 CPUs, one thread) the
    # server decoded the 24 requests one after another and the queue of 2 never overflowed.
    ferry = serving_process(tmp_path_factory, "--queue-capacity", "2", "--max-batch-size", "1",
                            "--intra-op-threads", "1", "--http-threads", "4")
    try:
        statuses = []
        lock = threading.Lock()

        def one():
            client = grpcclient.InferenceServerClient(url=ferry.address)
            try:
                client.infer("mlp", [big_mlp_input(4000)])
                status = "OK"
            except InferenceServerException as e:
                status = e.status()
            finally:
                client.close()
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, statuses
        assert "StatusCode.RESOURCE_EXHAUSTED" in statuses, statuses
        assert "OK" in statuses, statuses
    finally:
        ferry.stop()


def test_an_endpoint_splits_sticks_and_joins_feedback_over_grpc(tmp_path):
    log = tmp_path / "predictions"
    up = Process(["up", "--no-demo", "--data-dir", str(tmp_path / "data"),
                  "--prediction-log", f"file://{log}", "--log-inputs"],
                 tmp_path / "up.log", cwd=tmp_path)
    try:
        registry = f"http://{up.address}"
        client = grpcclient.InferenceServerClient(url=up.address)
        up.wait_until(client.is_server_live, "ferry up starting")
        for tag in ("one", "two"):
            ferry(registry, "model", "push", str(variant(tmp_path, tag)), "--name", "fraud")
        ferry(registry, "endpoint", "set", "fraud", "--model", "fraud", "--stable", "1",
              "--canary", "2", "--weight", "0.5", "--sticky-header", "x-user")
        up.wait_until(lambda: client.is_model_ready("fraud", "1")
                      and client.is_model_ready("fraud", "2"), "both versions being served")
        case = expected("mlp.onnx")
        data = array(case["inputs"][0])

        def predict(**kw):
            i = grpcclient.InferInput("input", list(data.shape), "FP32")
            i.set_data_from_numpy(data)
            result = client.infer("fraud", [i], **kw)
            check_outputs(case, result)
            return result.get_response().model_version

        # Across users, both versions answer; one user always gets the same one.
        versions = set()
        deadline = time.time() + 60
        n = 0
        while versions != {"1", "2"} and time.time() < deadline:
            versions.add(predict(headers={"x-user": f"user-{n}"}))
            n += 1
        assert versions == {"1", "2"}, f"only {versions} answered"
        assert len({predict(headers={"x-user": "alice"}) for _ in range(20)}) == 1

        # The request's id is the prediction id feedback joins on.
        predict(request_id="grpc-prediction-1", headers={"x-user": "bob"})
        feedback = urllib.request.Request(
            f"{registry}/v2/models/fraud/feedback", method="POST",
            data=json.dumps({"id": "grpc-prediction-1", "reward": 1.0}).encode(),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(feedback, timeout=10) as r:
            assert r.status in (200, 202), r.status

        # The prediction log keeps JSON lines, with the tensors as numbers (and the feedback
        # joined to the prediction, as its own line).
        def logged():
            lines = [json.loads(line) for p in log.rglob("*") if p.is_file()
                     for line in p.read_bytes().splitlines() if line]
            return [r for r in lines if r.get("id") == "grpc-prediction-1"]
        records = []
        deadline = time.time() + 30
        while len(records) < 2 and time.time() < deadline:
            time.sleep(0.5)
            records = logged()
        assert any(r.get("reward") == 1.0 for r in records), records
        record = next(r for r in records if "response" in r)
        assert len(record["request"]["inputs"][0]["data"]) == 3 * 32, record
        assert record["response"]["outputs"][0]["data"], record
    finally:
        up.stop()
