"""What the test API server lacks, done for real on this machine.

The API server of scripts/kube-apiserver.sh stores and validates objects but runs nothing: no
controller-manager, no kubelet. Two stand-ins fill the gap for the objects this chart creates
(and tests/helm/kubelet.py a third, for `kubectl port-forward`):

- `JobController` completes each Job the way the Job controller and a kubelet would: it runs the
  Job's pod with `PodRunner`, then writes `Complete` or `Failed` into the Job's status, so Helm's
  pre-install/pre-upgrade hook waits end on the real outcome of `ferry registry migrate`.
- `PodRunner` runs a pod spec as stored by the API server with the real `ferry` binary in place of
  the image: volumes become folders (Secrets written from the API server, claims kept across
  pods), environment variables are resolved from Secrets, container ports get free local ports,
  and in-cluster Service URLs are routed to the pod the Service's selector matches (a tiny
  kube-proxy). Its probes are the chart's probes, asked over HTTP.

`Kube` is the smallest API client these need (bearer token, the cluster's CA): no client library.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class KubeError(Exception):
    """An API call answered with an error status."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Kube:
    """A bearer-token client for one API server."""

    def __init__(self, server: str, ca_pem: str, token: str):
        self.server = server.rstrip("/")
        self.token = token
        self.ca_pem = ca_pem
        self.ssl = ssl.create_default_context(cadata=ca_pem)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike) -> "Kube":
        config = yaml.safe_load(Path(path).read_text())
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        if "token" not in user:
            raise ValueError(f"{path}: the tests need a token user (as scripts/kube-apiserver.sh writes)")
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        else:
            ca = Path(cluster["certificate-authority"]).read_text()
        return cls(cluster["server"], ca, user["token"])

    def request(self, method: str, path: str, body=None, content_type: str = "application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            method=method,
            data=data,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": content_type,
            },
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise KubeError(e.code, e.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else None

    def get(self, path: str):
        return self.request("GET", path)

    def find(self, path: str):
        """The object at `path`, or None when it does not exist."""
        try:
            return self.get(path)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def items(self, path: str) -> list[dict]:
        return self.get(path)["items"]

    def create(self, path: str, body: dict):
        return self.request("POST", path, body)

    def delete(self, path: str):
        try:
            return self.request("DELETE", path)
        except KubeError as e:
            if e.status != 404:
                raise
            return None

    def merge_patch(self, path: str, body: dict):
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def secret(self, namespace: str, name: str) -> dict[str, bytes]:
        data = self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}").get("data") or {}
        return {k: base64.b64decode(v) for k, v in data.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunningPod:
    """A pod's main container, running as a local process."""

    name: str
    namespace: str
    labels: dict
    spec: dict
    process: subprocess.Popen
    ports: dict  # containerPort (int) and port name (str) -> local port
    log: Path

    def local_port(self, port) -> int:
        return self.ports[port]

    def url(self, port=None) -> str:
        if port is None:
            port = next(iter(self.spec["containers"][0].get("ports", [])))["containerPort"]
        return f"http://127.0.0.1:{self.ports[port]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def http_get(self, port, path: str, timeout: float = 2.0) -> int:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports[port]}{path}", timeout=timeout
            ) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0

    def probe(self, kind: str) -> int:
        """Asks the main container's `kind` probe (readinessProbe, livenessProbe, startupProbe)."""
        probe = self.spec["containers"][0][kind]["httpGet"]
        return self.http_get(probe["port"], probe["path"])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"pod {self.name} exited with {self.process.returncode}:\n{self.output()}"
                )
            if self.probe("readinessProbe") == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"pod {self.name} not ready within {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class PodRunner:
    """Runs pod specs locally with the real binary; see the module documentation."""

    kube: Kube
    ferry_bin: Path
    root: Path
    # Paths the image provides, mapped to this machine (e.g. the ONNX Runtime folder).
    image_paths: dict = field(default_factory=dict)
    # The image's ENV, already mapped.
    image_env: dict = field(default_factory=dict)
    # Where claims' contents live: the same for every runner of a cluster, since a claim
    # outlives the pods (and the tests) that mount it.
    claims: Path | None = None
    pods: list = field(default_factory=list)
    _counter: int = 0

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _volumes(self, namespace: str, pod: str, spec: dict) -> dict[str, Path]:
        local = {}
        for volume in spec.get("volumes", []):
            name = volume["name"]
            if "secret" in volume:
                source = volume["secret"]
                data = self.kube.secret(namespace, source["secretName"])
                folder = self._dir("pods", pod, "volumes", name)
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    target = folder / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
                local[name] = folder
            elif "emptyDir" in volume:
                local[name] = self._dir("pods", pod, "volumes", name)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                # The claim must exist for the pod to be scheduled at all.
                self.kube.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
                folder = (self.claims or self.root / "claims") / namespace / claim
                folder.mkdir(parents=True, exist_ok=True)
                local[name] = folder
            else:
                raise AssertionError(f"volume kind not supported by the test runner: {volume}")
        return local

    def _env(self, namespace: str, container: dict) -> dict:
        env = dict(self.image_env)
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                for k, v in self.kube.secret(namespace, source["secretRef"]["name"]).items():
                    env[k] = v.decode()
            else:
                raise AssertionError(f"envFrom kind not supported: {source}")
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.kube.secret(namespace, ref["name"])[ref["key"]].decode()
            else:
                raise AssertionError(f"env source not supported: {var}")
        return env

    def _rewrite(self, text: str, mounts: dict[str, Path], ports: dict, namespace: str) -> str:
        # One pass, longest mount path first: a replaced path is never replaced again.
        if mounts:
            pattern = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
            text = re.sub(
                f"({pattern})(?=/|$|[^A-Za-z0-9_.-])", lambda m: str(mounts[m.group(1)]), text
            )
        listen = re.match(r"^(--listen=)?([0-9.]+):(\d+)$", text)
        if listen:
            text = f"{listen.group(1) or ''}{listen.group(2)}:{ports[int(listen.group(3))]}"
        return self.route(text, namespace)

    def route(self, text: str, namespace: str) -> str:
        """Rewrites in-cluster Service URLs to the local port of the pod the Service selects."""

        def local(match: re.Match) -> str:
            service, ns, port = match.group(1), match.group(2), int(match.group(3))
            svc = self.kube.get(f"/api/v1/namespaces/{ns}/services/{service}")
            spec_port = next(p for p in svc["spec"]["ports"] if p["port"] == port)
            selector = svc["spec"]["selector"]
            for pod in self.pods:
                if pod.namespace == ns and pod.process.poll() is None and all(
                    pod.labels.get(k) == v for k, v in selector.items()
                ):
                    return f"http://127.0.0.1:{pod.local_port(spec_port['targetPort'])}"
            raise AssertionError(f"Service {ns}/{service} selects no running pod")

        return re.sub(
            r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)",
            local,
            text,
        )

    def _mounts(self, container: dict, volumes: dict[str, Path]) -> dict[str, Path]:
        mounts = dict(self.image_paths)
        for mount in container.get("volumeMounts", []):
            mounts[mount["mountPath"]] = volumes[mount["name"]]
        return mounts

    def _argv(self, container: dict, mounts, ports, namespace) -> list[str]:
        command = container.get("command")
        if command:
            assert command[0] in ("ferry", "/usr/local/bin/ferry"), command
            args = command[1:] + container.get("args", [])
        else:
            args = container.get("args", [])
        return [str(self.ferry_bin)] + [self._rewrite(a, mounts, ports, namespace) for a in args]

    def run_to_completion(self, namespace: str, spec: dict, name: str, timeout: float = 120) -> int:
        """Runs every init container, then every container, each to its end (a Job's pod)."""
        self._counter += 1
        pod = f"{name}-{self._counter}"
        volumes = self._volumes(namespace, pod, spec)
        for container in spec.get("initContainers", []) + spec["containers"]:
            code = self._run_once(namespace, pod, container, volumes, timeout)
            if code != 0:
                return code
        return 0

    def _run_once(self, namespace, pod, container, volumes, timeout) -> int:
        mounts = self._mounts(container, volumes)
        log = self.root / "pods" / pod / f"{container['name']}.log"
        with open(log, "ab") as out:
            result = subprocess.run(
                self._argv(container, mounts, {}, namespace),
                env=self._rewrite_env(self._env(namespace, container), mounts, {}, namespace),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=mounts.get("/tmp", self.root),
                timeout=timeout,
            )
        return result.returncode

    def _rewrite_env(self, env: dict, mounts, ports, namespace) -> dict:
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        base.update({k: self._rewrite(v, mounts, ports, namespace) for k, v in env.items()})
        return base

    def service_account_kubeconfig(self, namespace: str, account: str, folder: Path) -> Path:
        """What a pod's mounted service-account token gives it, as a kubeconfig: a token for
        `account` from the TokenRequest API (the clients Ferry uses read KUBECONFIG first)."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        }
        token = self.kube.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request
        )["status"]["token"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.kube.server,
                "certificate-authority-data": base64.b64encode(self.kube.ca_pem.encode()).decode(),
            }}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "in-cluster", "context": {
                "cluster": "in-cluster", "user": account, "namespace": namespace}}],
            "current-context": "in-cluster",
        }
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, namespace: str, template: dict, name: str, extra_env: dict | None = None) -> RunningPod:
        """Starts a Deployment's pod template: init containers to completion, then the first
        container in the background."""
        spec = template["spec"]
        self._counter += 1
        pod = f"{name}-{self._counter}"
        volumes = self._volumes(namespace, pod, spec)
        for init in spec.get("initContainers", []):
            code = self._run_once(namespace, pod, init, volumes, 120)
            if code != 0:
                log = self.root / "pods" / pod / f"{init['name']}.log"
                raise AssertionError(f"init container {init['name']} exited {code}:\n{log.read_text()}")
        container = spec["containers"][0]
        ports = {}
        for port in container.get("ports", []):
            local = free_port()
            ports[port["containerPort"]] = local
            if "name" in port:
                ports[port["name"]] = local
        mounts = self._mounts(container, volumes)
        log = self.root / "pods" / pod / f"{container['name']}.log"
        env = self._rewrite_env(self._env(namespace, container), mounts, ports, namespace)
        if spec.get("automountServiceAccountToken", True):
            account = spec.get("serviceAccountName", "default")
            env["KUBECONFIG"] = str(
                self.service_account_kubeconfig(namespace, account, self._dir("pods", pod))
            )
        env.update(extra_env or {})
        out = open(log, "ab")
        process = subprocess.Popen(
            self._argv(container, mounts, ports, namespace),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=mounts.get("/tmp", self.root),
        )
        out.close()
        running = RunningPod(
            name=pod,
            namespace=namespace,
            labels=template["metadata"].get("labels", {}),
            spec=spec,
            process=process,
            ports=ports,
            log=log,
        )
        self.pods.append(running)
        return running

    def start_deployment(self, namespace: str, name: str, extra_env: dict | None = None) -> RunningPod:
        deployment = self.kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        return self.start(namespace, deployment["spec"]["template"], name, extra_env)

    def stop_all(self) -> None:
        for pod in self.pods:
            pod.stop()
        self.pods.clear()


class JobController:
    """Completes the Jobs of one namespace by running them (see the module documentation)."""

    def __init__(self, kube: Kube, runner: PodRunner, namespace: str):
        self.kube = kube
        self.runner = runner
        self.namespace = namespace
        self.seen: list[dict] = []  # every Job run, as the API server stored it
        self.results: dict[str, int] = {}  # uid -> exit code
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "JobController":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        path = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        while not self._stop.is_set():
            try:
                for job in self.kube.items(path):
                    uid = job["metadata"]["uid"]
                    if uid in self.results:
                        continue
                    self.seen.append(job)
                    name = job["metadata"]["name"]
                    start = now()
                    code = self.runner.run_to_completion(
                        self.namespace, job["spec"]["template"]["spec"], name
                    )
                    self.results[uid] = code
                    condition = "Complete" if code == 0 else "Failed"
                    status = {
                        "startTime": start,
                        "conditions": [
                            {
                                "type": condition,
                                "status": "True",
                                "lastProbeTime": now(),
                                "lastTransitionTime": now(),
                                "reason": "ExitCode" if code else "Completed",
                                "message": f"exit code {code}",
                            }
                        ],
                    }
                    if code == 0:
                        status |= {"succeeded": 1, "completionTime": now()}
                    else:
                        status |= {"failed": 1}
                    self.kube.merge_patch(f"{path}/{name}/status", {"status": status})
            except Exception as e:  # noqa: BLE001 - reported by the test, not swallowed
                self.errors.append(repr(e))
            self._stop.wait(0.2)


class ServiceProxy:
    """An HTTP forward proxy that sends in-cluster Service URLs to the pods `runner` runs:
    cluster DNS and kube-proxy for processes that honour HTTP_PROXY (reqwest does)."""

    HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
                  "trailer", "transfer-encoding", "upgrade"}

    def __init__(self, runner: PodRunner):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            # HTTP/1.0: the response ends when the connection closes, so streams pass through.
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def relay(self):
                proxy.requests.append(f"{self.command} {self.path}")
                match = re.match(r"^http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)(/.*)?$", self.path)
                if not match:
                    self.send_error(502, f"not an in-cluster Service URL: {self.path}")
                    return
                try:
                    local = runner.route(self.path, match.group(2))
                except Exception as e:  # noqa: BLE001 - answered as the proxy's 502
                    self.send_error(502, str(e)[:200])
                    return
                target = urllib.parse.urlsplit(local)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path or "/", body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in proxy.HOP_BY_HOP:
                        self.send_header(k, v)
                self.end_headers()
                while chunk := response.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = relay

        self.requests: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ServiceProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self) -> dict:
        """The environment that sends a process's in-cluster calls through this proxy."""
        return {"HTTP_PROXY": self.url, "http_proxy": self.url,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
