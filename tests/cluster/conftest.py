"""Fixtures of the tests on a real one-node Kubernetes cluster (scripts/kube-cluster.sh): the
cluster, Ferry's image built from deploy/Dockerfile and loaded into it, kubectl, Helm (its Go SDK
from PyPI, helm-python-sdk: no helm binary is packaged where this project can reach), and the
`ferry` binary on the test's side (the CLI a user types).

scripts/test.sh starts the cluster as root and exports FERRY_TEST_CLUSTER (its folder) and
FERRY_TEST_IMAGE (the image reference). Without them these tests skip with the reason, except
under CI, where the same absence fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import helm_python
import pytest

from kube import Kube, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "ferry"
VALUES = REPO / "tests" / "helm" / "values"
CACHE = Path(os.environ.get("FERRY_CACHE", Path.home() / ".cache" / "ferry"))
# The image's user (deploy/Dockerfile): a volume the tests provide must be writable by it.
IMAGE_UID = 65532


def in_ci() -> bool:
    """One definition of CI for every test: CI=true and CI=1 both count."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def need(condition, why: str):
    """Skips the test when `condition` is false, or fails it under CI."""
    if not condition:
        if in_ci():
            pytest.fail(f"CI is set and {why}")
        pytest.skip(why)


class Cluster:
    """The running cluster: its folder, an admin client, the node, the image under test."""

    def __init__(self, folder: Path, image: str, default_image: str, redis_image: str | None = None):
        self.folder = folder
        self.kubeconfig = folder / "kubeconfig"
        self.kube = Kube.from_kubeconfig(self.kubeconfig)
        env = dict(line.split("=", 1) for line in (folder / "env").read_text().splitlines() if "=" in line)
        self.node = env["FERRY_KUBE_NODE"]
        # The node's address: pods reach the host's own services (PostgreSQL, S3) there.
        self.node_ip = env["FERRY_KUBE_NODE_IP"]
        # The image under test by two names: a local one the tests set with chart values, and
        # the chart's (and the operator's) default for this version, so the README's commands
        # run unchanged. Both name the same image, built here from deploy/Dockerfile.
        self.image = image
        self.default_image = default_image
        self.redis_image = redis_image
        repository, _, tag = image.rpartition(":")
        self.image_repository, self.image_tag = repository, tag
        self.volumes = folder / "volumes"

    def redis_values(self, cluster_ip: str) -> dict:
        """The chart values that run the in-chart Redis on the image built here from Debian's
        package (deploy/redis.Dockerfile), at a fixed ClusterIP that the Ferry processes are
        given directly: the cluster has no DNS for the chart's default `…-redis.NS.svc`."""
        need(self.redis_image, "FERRY_TEST_REDIS_IMAGE is not set "
             "(scripts/kube-cluster.sh redis-image DIR TAG builds and loads it)")
        repository, _, tag = self.redis_image.rpartition(":")
        return {"feedback": {
            "redisUrl": f"redis://{cluster_ip}:6379",
            "redis": {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
                      "service": {"clusterIP": cluster_ip}},
        }}

    def helm(self, namespace: str) -> helm_python.Config:
        return helm_python.Config(kubeconfig_path=str(self.kubeconfig), namespace=namespace)

    def image_values(self) -> dict:
        """The chart values that run the image under test (never pulled: it is only local)."""
        return {"image": {"repository": self.image_repository, "tag": self.image_tag,
                          "pullPolicy": "Never"}}

    def provide_volume(self, namespace: str, claim: str, size: str = "10Gi") -> str:
        """A new, empty PersistentVolume (a folder on the node) reserved for the claim
        `namespace/claim`, as an administrator provides one on a cluster without a dynamic
        provisioner; returns its name. Its folder is owned by the image's user, as a provisioner
        with fsGroup support would make it."""
        name = f"ferry-test-{uuid.uuid4().hex[:8]}-{claim}"[:63]
        path = self.volumes / name
        path.mkdir(parents=True)
        os.chown(path, IMAGE_UID, IMAGE_UID)
        self.kube.create("/api/v1/persistentvolumes", {
                "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        })
        return name

    def remove_volume(self, name: str) -> None:
        self.kube.delete(f"/api/v1/persistentvolumes/{name}")
        shutil.rmtree(self.volumes / name, ignore_errors=True)

    def pods(self, namespace: str, selector: str) -> list[dict]:
        return self.kube.items(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")

    def ready_pods(self, namespace: str, selector: str) -> list[dict]:
        """Pods of the selector that are Ready and not being deleted."""
        ready = []
        for pod in self.pods(namespace, selector):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conditions.get("Ready") == "True":
                ready.append(pod)
        return ready

    def wait_ready(self, namespace: str, selector: str, count: int = 1, timeout: float = 180) -> list[dict]:
        def check():
            ready = self.ready_pods(namespace, selector)
            return ready if len(ready) >= count else None
        try:
            return wait_for(f"{count} ready pod(s) {selector} in {namespace}", check, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"{count} pod(s) {selector} in {namespace} never became ready:\n"
                                 + self.describe(namespace, selector)) from None

    def describe(self, namespace: str, selector: str) -> str:
        """What a person would look at when pods do not come up: phases, container states,
        events and the last log lines."""
        lines = []
        for pod in self.pods(namespace, selector):
            name = pod["metadata"]["name"]
            status = pod.get("status", {})
            lines.append(f"pod {name}: {status.get('phase')} {status.get('containerStatuses')}")
            # The readiness probe's own requests say nothing about why; keep the rest.
            log = [line for line in self.pod_logs(namespace, name).splitlines() if "/v2/health/" not in line]
            lines += [f"  log {name}: {line}" for line in log[-25:]]
        events = self.kube.items(f"/api/v1/namespaces/{namespace}/events")
        lines += [f"event {e['involvedObject']['name']}: {e['reason']}: {e.get('message')}" for e in events[-20:]]
        return "\n".join(lines)

    def service_ip(self, namespace: str, name: str) -> str:
        return self.kube.get(f"/api/v1/namespaces/{namespace}/services/{name}")["spec"]["clusterIP"]

    def pod_logs(self, namespace: str, pod: str, previous: bool = False) -> str:
        """A pod's log, for failure messages."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log" + ("?previous=true" if previous else "")
        try:
            return self.kube.request_text("GET", path)
        except Exception as e:  # noqa: BLE001 - only ever shown in a failure message
            return f"(no log: {e})"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    folder = os.environ.get("FERRY_TEST_CLUSTER")
    need(folder and (Path(folder) / "kubeconfig").is_file(),
         "no real Kubernetes cluster: scripts/test.sh starts one when run as root "
         "(scripts/kube-cluster.sh up DIR), or set FERRY_TEST_CLUSTER=DIR")
    image = os.environ.get("FERRY_TEST_IMAGE")
    default_image = os.environ.get("FERRY_TEST_DEFAULT_IMAGE")
    need(image and default_image, "FERRY_TEST_IMAGE and FERRY_TEST_DEFAULT_IMAGE are not set "
         "(scripts/kube-cluster.sh image DIR BINARY TAG... loads the image under both)")
    return Cluster(Path(folder), image, default_image, os.environ.get("FERRY_TEST_REDIS_IMAGE"))


class Kubectl:
    """kubectl against the cluster, as a user would type it."""

    def __init__(self, binary: Path, kubeconfig: Path):
        self.binary = binary
        self.env = dict(os.environ, KUBECONFIG=str(kubeconfig))

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60):
        result = subprocess.run([str(self.binary), *args], env=self.env, input=stdin,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def kubectl(cluster) -> Kubectl:
    """FERRY_KUBECTL, else the 1.20.2 kubectl that scripts/fetch-kubectl.sh unpacks (Debian's
    kubernetes-client, built from the same sources as the cluster)."""
    given = os.environ.get("FERRY_KUBECTL")
    binary = Path(given) if given else CACHE / "kube" / "kubectl"
    need(binary.is_file(), f"kubectl is not at {binary}: run scripts/fetch-kubectl.sh (or set FERRY_KUBECTL)")
    # The walk-through says `kubectl`: the one first on PATH must be this one.
    if binary.name != "kubectl":
        link = Path(tempfile.mkdtemp(prefix="ferry-kubectl-")) / "kubectl"
        link.symlink_to(binary)
        binary = link
    return Kubectl(binary, cluster.kubeconfig)


@pytest.fixture(scope="session")
def ferry_bin() -> Path:
    """The CLI on the user's side: FERRY_BIN, else the debug build."""
    candidates = [os.environ.get("FERRY_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(str(Path(target) / "debug" / "ferry"))
    candidates.append(str(REPO / "target" / "debug" / "ferry"))
    found = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    need(found, "the ferry binary is not built (cargo build --bin ferry, or set FERRY_BIN)")
    return found


def ferry(ferry_bin: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI with no FERRY_* variable but those given."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    full_env.update(env or {})
    return subprocess.run([str(ferry_bin), *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


class Relay:
    """A TCP relay from the node's address to a service the host runs on loopback (PostgreSQL,
    the S3 test server), so pods can reach it: the test machine's services listen on 127.0.0.1,
    which inside a pod is the pod itself. Plain byte copying, no protocol knowledge."""

    def __init__(self, listen_host: str, target: tuple[str, int]):
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((listen_host, 0))
        self.server.listen(64)
        self.address = (listen_host, self.server.getsockname()[1])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.server.close()


@pytest.fixture
def relay(cluster):
    """Opens relays from the node's address to host services; closes them after the test."""
    opened = []

    def open_relay(host: str, port: int) -> tuple[str, int]:
        r = Relay(cluster.node_ip, (host, port))
        opened.append(r)
        return r.address

    yield open_relay
    for r in opened:
        r.close()


def uninstall_quietly(helm: helm_python.Config, release: str):
    try:
        helm.uninstall(release, ignore_not_found=True, timeout=120)
    except helm_python.HelmError:
        pass


