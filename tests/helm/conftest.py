"""Fixtures of the chart's tests: the chart and its renders, the Kubernetes API server, kubectl,
and the `ferry` binary.

What is absent (the API server, kubectl, the binary, PostgreSQL, the S3 server) makes its tests
skip with the reason, except under CI=true, where the same absence fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import helm_python
import pytest
import yaml

from image import final_env
from kube import Kube, PodRunner

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "ferry"
VALUES = Path(__file__).resolve().parent / "values"
CACHE = Path(os.environ.get("FERRY_CACHE", Path.home() / ".cache" / "ferry"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need(condition, why: str):
    """Skips the test when `condition` is false, or fails it under CI=true."""
    if not condition:
        if in_ci():
            pytest.fail(f"CI=true and {why}")
        pytest.skip(why)


def load_values(name: str) -> dict:
    """A value set from tests/helm/values/NAME.yaml (the file a user would pass with -f)."""
    return yaml.safe_load((VALUES / f"{name}.yaml").read_text()) or {}


@pytest.fixture(scope="session")
def chart():
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict, name: str = "ferry", namespace: str = "ferry") -> dict[str, str]:
    """Template path -> rendered text, the empty ones left out (as `helm template` prints)."""
    rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    return {path: text for path, text in rendered.items() if text.strip()}


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """(template path, object) for every manifest of a render, NOTES.txt excluded."""
    out = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


@pytest.fixture(scope="session")
def ferry_bin() -> Path:
    candidates = [os.environ.get("FERRY_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(str(Path(target) / "debug" / "ferry"))
    candidates += [str(REPO / "target" / "debug" / "ferry")]
    found = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    need(found, "the ferry binary is not built (cargo build --bin ferry, or set FERRY_BIN)")
    return found


@pytest.fixture(scope="session")
def ort_lib() -> Path:
    path = Path(os.environ.get("ORT_DYLIB_PATH", REPO / ".ort" / "libonnxruntime.so"))
    need(path.exists(), f"ONNX Runtime is not at {path} (make ort)")
    return path.resolve()


class Cluster:
    """An API server the tests may install into: its kubeconfig and a client."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.kube = Kube.from_kubeconfig(kubeconfig)
        # The contents of PersistentVolumeClaims, for the pods the tests run.
        self.claims = Path(tempfile.mkdtemp(prefix="ferry-helm-claims-"))

    def helm(self, namespace: str) -> helm_python.Config:
        return helm_python.Config(kubeconfig_path=str(self.kubeconfig), namespace=namespace)


@pytest.fixture(scope="session")
def cluster():
    """FERRY_TEST_HELM_KUBECONFIG when the caller started a server for these tests alone, else one
    of our own in a temporary folder (scripts/kube-apiserver.sh start), stopped at the end of the
    session. Not FERRY_TEST_KUBECONFIG: the operator's tests apply deploy/rbac/operator.yaml there
    (ServiceAccount ferry/ferry-operator, ClusterRole ferry-operator), which the quickstart's
    release `ferry` in namespace `ferry` creates too, and Helm refuses objects it does not own."""
    given = os.environ.get("FERRY_TEST_HELM_KUBECONFIG")
    if given:
        cluster = Cluster(Path(given))
        yield cluster
        shutil.rmtree(cluster.claims, ignore_errors=True)
        return
    apiserver = CACHE / "kube" / "kube-apiserver"
    need(
        apiserver.exists() and shutil.which("etcd"),
        f"no Kubernetes API server: {apiserver} is not built (scripts/kube-apiserver.sh build) "
        "or etcd is missing (apt-get install etcd-server); or set FERRY_TEST_HELM_KUBECONFIG",
    )
    folder = Path(tempfile.mkdtemp(prefix="ferry-helm-kube-"))
    script = REPO / "scripts" / "kube-apiserver.sh"
    started = subprocess.run([script, "start", folder], capture_output=True, text=True)
    try:
        need(
            started.returncode == 0,
            f"the API server did not start: {started.stderr.strip()[-2000:]}",
        )
        cluster = Cluster(folder / "kubeconfig")
        yield cluster
        shutil.rmtree(cluster.claims, ignore_errors=True)
    finally:
        subprocess.run([script, "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


class Kubectl:
    """kubectl against the test cluster, as a user would type it."""

    def __init__(self, binary: Path, kubeconfig: Path):
        self.binary = binary
        self.env = dict(os.environ, KUBECONFIG=str(kubeconfig))

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None):
        result = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def shell(self, command: str, extra_env: dict | None = None):
        """A pipeline from the walk-through, run by bash with this kubectl first on PATH."""
        env = dict(self.env)
        env["PATH"] = f"{self.binary.parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra_env or {})
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )


@pytest.fixture(scope="session")
def kubectl(cluster) -> Kubectl:
    """FERRY_KUBECTL, else the 1.20.2 kubectl that tests/helm/fetch-kubectl.sh unpacks."""
    given = os.environ.get("FERRY_KUBECTL")
    binary = Path(given) if given else CACHE / "kube" / "kubectl"
    need(
        binary.is_file(),
        f"kubectl is not at {binary}: run tests/helm/fetch-kubectl.sh (or set FERRY_KUBECTL)",
    )
    # The walk-through says `kubectl`: the one on PATH in Kubectl.shell must be this one.
    if binary.name != "kubectl":
        link = Path(tempfile.mkdtemp(prefix="ferry-kubectl-")) / "kubectl"
        link.symlink_to(binary)
        binary = link
    return Kubectl(binary, cluster.kubeconfig)


@pytest.fixture
def runner(cluster, ferry_bin, ort_lib, tmp_path):
    """Runs the chart's pods locally; the image's paths and ENV come from deploy/Dockerfile."""
    env = final_env()
    lib_dir = str(Path(env["ORT_DYLIB_PATH"]).parent)
    pods = PodRunner(
        kube=cluster.kube,
        ferry_bin=ferry_bin,
        root=tmp_path / "runner",
        image_paths={lib_dir: ort_lib.parent},
        image_env=env,
        claims=cluster.claims,
    )
    (tmp_path / "runner").mkdir()
    yield pods
    pods.stop_all()
