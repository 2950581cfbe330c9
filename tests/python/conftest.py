"""What the Python client tests share: expected.json's fixtures as numpy, and starting the ferry
binary (FERRY_BIN, set by scripts/test.sh) on a free port and waiting until it is ready."""
import json
import os
import pathlib
import socket
import subprocess
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def expected(name):
    """A fixture's entry in expected.json: its inputs and what ONNX Runtime answered."""
    return json.loads((FIXTURES / "expected.json").read_text())["models"][name]


def array(spec):
    """An expected.json tensor as a numpy array of its shape."""
    dtype = {"FP32": np.float32, "INT64": np.int64}[spec["datatype"]]
    return np.array(spec["data"], dtype=dtype).reshape(spec["shape"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ferry_bin():
    binary = os.environ.get("FERRY_BIN")
    if not binary:
        pytest.fail("FERRY_BIN must name the ferry binary (scripts/test.sh sets it)")
    return binary


def ferry_env():
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".ort" / "libonnxruntime.so"))
    return env


class Process:
    """A running `ferry` command, its port and its log."""

    def __init__(self, args, log, cwd=None):
        self.port = free_port()
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [ferry_bin(), *args, "--listen", f"127.0.0.1:{self.port}"],
                stdout=out, stderr=out, env=ferry_env(), cwd=cwd)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def wait_until(self, ready, what, timeout=60):
        deadline = time.time() + timeout
        while True:
            try:
                if ready():
                    return
            except Exception:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                pytest.fail(f"{what} did not happen:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def variant(tmp, tag):
    """mlp.onnx with another doc string: the same model as a new version."""
    import onnx
    m = onnx.load(str(FIXTURES / "mlp.onnx"))
    m.doc_string = tag
    path = tmp / f"mlp-{tag}.onnx"
    onnx.save(m, str(path))
    return path


def ferry(registry, *args):
    """Runs a `ferry` client command against `registry`; fails the test unless it succeeds."""
    out = subprocess.run([ferry_bin(), *args], env={**ferry_env(), "FERRY_REGISTRY": registry},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def half_precision_case(client):
    """FP16 and BF16 inputs for `half.onnx` built with `client` (tritonclient.http or .grpc),
    with the client's defaults, and a check of the answer; returns (inputs, check)."""
    import ml_dtypes
    x = np.array([[0.5, -1.25, 1000.0, 0.0], [3.0, -0.0625, 2.5, 7.0]], dtype=np.float16)
    b = np.array([[1.0, -0.5, 3.0, 256.0], [0.25, -2.0, 1e30, 42.0]], dtype=ml_dtypes.bfloat16)
    xi = client.InferInput("x", list(x.shape), "FP16")
    xi.set_data_from_numpy(x)
    bi = client.InferInput("b", list(b.shape), "BF16")
    bi.set_data_from_numpy(b)

    def check(result):
        np.testing.assert_array_equal(result.as_numpy("doubled"), x * 2)
        np.testing.assert_array_equal(result.as_numpy("x_float"), x.astype(np.float32))
        echo = result.as_numpy("b_echo")
        np.testing.assert_array_equal(echo.astype(np.float32), b.astype(np.float32))
        return echo

    return [xi, bi], check
