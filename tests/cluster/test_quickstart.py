"""The README's Kubernetes quickstart on a real one-node cluster, then what a user does next:
rollouts under live traffic and feedback, faults on real pods, an upgrade and an uninstall.

Everything runs for real: the chart's pods run the image built from deploy/Dockerfile on the
kubelet (containerd + runc), `kubectl port-forward` goes through the API server and the kubelet,
the serving pods' Service is kube-proxy's. The tests run in file order and share one release, as
a user's session would; each says what it measured.

Only a few values differ from what the README shows, and the tests print them: the image (built
here, not pulled), the registry address in the example ModelDeployment (the Service's ClusterIP:
the cluster has no DNS), and the in-chart Redis's image (built here from Debian's package) and
address (a fixed ClusterIP, for the same reason).
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CHART, REPO, ferry, uninstall_quietly, wait_for
from traffic import Traffic, first_answer, infer, post

EXAMPLE = REPO / "deploy/examples/modeldeployment.yaml"
NS = "ferry"
MD = f"/apis/ferry.dev/v1alpha1/namespaces/{NS}/modeldeployments"
SERVING = "ferry.dev/model-deployment=fraud"

# The README's Kubernetes quickstart, command by command, in order: the walk-through below runs
# each one as written (with bash, from the repository root), `helm install` through the Helm SDK,
# and the port-forward to a free local port instead of 8080 (which FERRY_REGISTRY then names).
# test_the_readme_quickstart_is_the_tested_one keeps README.md's `sh` blocks equal to this list.
INSTALL = "helm install ferry deploy/helm/ferry --namespace ferry --create-namespace --set feedback.redis.enabled=true"
# The in-chart Redis's Service: a fixed address in the cluster's Service range (no DNS here).
REDIS_IP = "10.96.200.10"
TOKEN = ("export FERRY_TOKEN=$(kubectl -n ferry get secret ferry-registry-tokens"
         " -o jsonpath='{.data.write}' | base64 -d)")
PORT_FORWARD = "kubectl -n ferry port-forward svc/ferry-registry 8080:8080 &"
PUSH = "ferry model push tests/fixtures/mlp.onnx --name fraud --alias production"
APPLY = "kubectl apply -f deploy/examples/modeldeployment.yaml"
WATCH = "kubectl -n ferry get md -w"
PUSH_2 = "ferry model push tests/fixtures/mlp.onnx --name fraud --param lr=0.02 --alias production"
WATCH_2 = "kubectl -n ferry get md fraud -w"
QUICKSTART = [INSTALL, TOKEN, PORT_FORWARD, PUSH, APPLY, WATCH, PUSH_2, WATCH_2]

# Short steps for the rollouts after the quickstart (the example's take 18 minutes).
FAST = {"strategy": {
    "shadow": {"duration": "15s", "sampleRate": 1},
    "canary": {
        "steps": [{"weight": 20, "pause": "15s"}, {"weight": 50, "pause": "12s"}, {"weight": 100, "pause": "6s"}],
        "analysis": {"interval": "6s", "minRequests": 15, "minRewards": 8, "maxErrorRate": 0.01,
                     # A shared 2-CPU machine: latency is not what these rollouts are about.
                     "maxLatencyP99Ms": 2000, "minShadowAgreement": 0.95, "maxInconclusive": 0},
    },
}}


def test_the_readme_quickstart_is_the_tested_one():
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## Kubernetes quickstart\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, "README.md has no '## Kubernetes quickstart' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.M | re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == QUICKSTART


class Session:
    """What the user has at hand during the walk-through: a shell with `ferry` and kubectl on
    PATH, the registry through the port-forward, the tokens, and live traffic."""

    def __init__(self, cluster, kubectl, ferry_bin, bin_dir: Path):
        self.cluster, self.kubectl, self.ferry_bin = cluster, kubectl, ferry_bin
        self.path = f"{bin_dir}{os.pathsep}{kubectl.binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.forward = None
        self.volume: str | None = None
        # The values the release was installed with (an upgrade passes them again, as helm wants).
        self.values: dict = {}

    def shell(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in self.kubectl.env.items() if not k.startswith("FERRY_")}
        env.update(self.env, PATH=self.path)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env, capture_output=True,
                              text=True, timeout=120, cwd=REPO)
        if check:
            assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done

    def ferry(self, *args: str) -> subprocess.CompletedProcess:
        done = ferry(self.ferry_bin, *args, env=self.env)
        assert done.returncode == 0, f"ferry {' '.join(args)}\n{done.stdout}{done.stderr}"
        return done

    def md(self, name: str = "fraud") -> dict:
        return self.cluster.kube.get(f"{MD}/{name}")

    def status(self, name: str = "fraud") -> dict:
        return self.md(name).get("status", {})

    def wait_status(self, what: str, check, name: str = "fraud", timeout: float = 180) -> dict:
        seen = []

        def probe():
            status = self.status(name)
            seen.append((status.get("phase"), status.get("currentStep"), status.get("reason")))
            return status if check(status) else None

        try:
            return wait_for(what, probe, timeout=timeout, every=0.5)
        except AssertionError:
            phases = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
            raise AssertionError(f"timed out waiting for {what}; statuses seen: {phases}\n"
                                 f"last: {json.dumps(self.status(name), indent=1)[:3000]}") from None

    def registry_get(self, path: str) -> dict:
        """GET on the registry's API through its Service (the host reaches ClusterIPs through
        kube-proxy's rules, like a pod)."""
        import urllib.request
        url = f"http://{self.cluster.service_ip(NS, 'ferry-registry')}:8080{path}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.tokens['read']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def registry_events(self, subject: str, after: int = 0) -> list[dict]:
        events = self.registry_get(f"/api/v1/events?after={after}&limit=1000")["events"]
        return [e for e in events if e.get("subject") == subject]

    def use_service(self) -> None:
        """After the walk-through: the CLI talks to the registry's Service directly (the host
        reaches ClusterIPs), not through a port-forward that a replaced pod would break. A pod
        that just became ready is reachable through the Service once kube-proxy has its endpoint:
        wait for that, as a client retrying would."""
        if self.forward:
            self.forward.stop()
            self.forward = None
        self.env["FERRY_REGISTRY"] = f"http://{self.cluster.service_ip(NS, 'ferry-registry')}:8080"
        wait_for_service(self.env["FERRY_REGISTRY"])

    def serving_url(self, name: str = "fraud") -> str:
        return f"http://{self.cluster.service_ip(NS, name)}:8080"

    def patch(self, name: str, spec: dict) -> None:
        self.kubectl("-n", NS, "patch", "md", name, "--type", "merge", "-p", json.dumps({"spec": spec}))


def watch_lines(kubectl, args: list[str], want: int, timeout: float = 60.0) -> list[str]:
    """The first `want` lines of a `kubectl … -w`, which never ends by itself."""
    process = subprocess.Popen([str(kubectl.binary), *args], env=kubectl.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while output.count(b"\n") < want and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    lines = output.decode().splitlines()
    assert len(lines) >= want, f"kubectl {' '.join(args)} printed {lines}; stderr: {err.decode()}"
    return lines


class PortForward:
    """The quickstart's `kubectl port-forward … &`, on `local` instead of its local port: through
    the API server to the real kubelet, which connects inside the pod's network namespace."""

    def __init__(self, kubectl, command: str, local: int):
        words = shlex.split(command.removesuffix("&").strip())
        assert words[0] == "kubectl" and "port-forward" in words, command
        remote = words[-1].split(":")[1]
        self.local = local
        self.process = subprocess.Popen([str(kubectl.binary), *words[1:-1], f"{local}:{remote}"],
                                        env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.output = b""

    def wait_forwarding(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while b"Forwarding from 127.0.0.1:" not in self.output:
            assert self.process.poll() is None and time.monotonic() < deadline, self.stop()
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                self.output += os.read(self.process.stdout.fileno(), 65536)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        out, err = self.process.communicate(timeout=10)
        self.output += out
        return (self.output + err).decode()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def session(cluster, kubectl, ferry_bin, tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "ferry").symlink_to(ferry_bin)
    s = Session(cluster, kubectl, ferry_bin, bin_dir)
    yield s
    if s.forward:
        s.forward.stop()
    # Leave the cluster as found for the next module: the release, the resources, the namespace.
    kubectl("delete", "md", "--all", "-n", NS, "--wait=true", check=False, timeout=120)
    uninstall_quietly(cluster.helm(NS), "ferry")
    kubectl("delete", "namespace", NS, "--wait=true", check=False, timeout=180)
    if s.volume:
        cluster.remove_volume(s.volume)


def test_helm_install_runs_the_registry_and_the_operator_on_real_pods(cluster, kubectl, session):
    start = time.monotonic()
    # The cluster has no dynamic provisioner: a PersistentVolume for the chart's claim, as an
    # administrator would provide.
    session.volume = cluster.provide_volume(NS, "ferry-registry-data")
    words = shlex.split(INSTALL)
    assert words[:4] == ["helm", "install", "ferry", "deploy/helm/ferry"]
    # The README's --set values; the chart's default image is the one built here (only local,
    # never pulled). The in-chart Redis runs the Redis image built here, at a fixed address.
    values = set_values(words)
    assert values == {"feedback": {"redis": {"enabled": True}}}, values
    # Besides the README's: the in-chart Redis at a fixed address, and a registry whose
    # monitors judge every 5 s (the perishable-model test).
    extra = merge(cluster.redis_values(REDIS_IP),
                  {"registry": {"extraEnv": [{"name": "FERRY_DRIFT_INTERVAL", "value": "5s"}]}})
    merge(values, extra)
    print(f"values besides the README's: {json.dumps(extra)}")
    session.values = values
    release = cluster.helm(NS).install(str(REPO / words[3]), "ferry", values, namespace=NS,
                                       create_namespace=True, timeout=180)
    assert release["status"] == "deployed" and release["revision"] == 1
    registry = cluster.wait_ready(NS, "app.kubernetes.io/component=registry")[0]
    operator = cluster.wait_ready(NS, "app.kubernetes.io/component=operator")[0]
    redis = cluster.wait_ready(NS, "app.kubernetes.io/component=redis")[0]
    assert redis["spec"]["containers"][0]["image"] == cluster.redis_image
    print(f"registry and operator Ready {time.monotonic() - start:.0f} s after helm install")
    crd = cluster.kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.ferry.dev")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    claim = cluster.kube.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/ferry-registry-data")
    assert claim["status"]["phase"] == "Bound"
    # The SQLite registry migrated in its own pod before the server started.
    migrate = kubectl("-n", NS, "logs", registry["metadata"]["name"], "-c", "migrate").stdout
    assert "applied" in migrate, migrate
    # Both run as the image's user on a read-only root filesystem.
    for pod, container in ((registry, "registry"), (operator, "operator")):
        name = pod["metadata"]["name"]
        who = kubectl("-n", NS, "exec", name, "-c", container, "--", "id", "-u").stdout.strip()
        assert who == "65532", (name, who)
        touched = kubectl("-n", NS, "exec", name, "-c", container, "--", "touch", "/usr/x", check=False)
        assert touched.returncode != 0 and "Read-only file system" in touched.stderr, touched.stderr


def set_values(words: list[str]) -> dict:
    """The values of a command's `--set a.b=c` flags, as helm reads them (true/false as booleans)."""
    values: dict = {}
    for i, word in enumerate(words):
        if word == "--set":
            for pair in words[i + 1].split(","):
                key, _, raw = pair.partition("=")
                value = {"true": True, "false": False}.get(raw, raw)
                *path, last = key.split(".")
                node = values
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = value
    return values


def merge(into: dict, more: dict) -> dict:
    """`more` merged into `into`, nested maps key by key (how helm layers values)."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def test_the_operator_account_may_do_what_the_operator_does_and_no_more(kubectl, session):
    account = "system:serviceaccount:ferry:ferry-operator"
    allowed = [
        ("watch", "modeldeployments.ferry.dev", "--all-namespaces"),
        ("patch", "modeldeployments.ferry.dev/status", "-n", "team-a"),
        ("update", "modeldeployments.ferry.dev/finalizers", "-n", "team-a"),
        ("create", "deployments.apps", "-n", "team-a"),
        ("delete", "services", "-n", "team-a"),
        ("create", "events", "-n", "team-a"),
        ("get", "secrets", "-n", "team-a"),
    ]
    denied = [
        ("list", "secrets", "-n", "team-a"),
        ("create", "modeldeployments.ferry.dev", "-n", "team-a"),
        ("create", "pods", "-n", "team-a"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
    ]
    for verb, resource, *scope in allowed:
        result = kubectl("auth", "can-i", verb, resource, *scope, "--as", account, check=False)
        assert result.stdout.strip() == "yes", (verb, resource, result.stderr)
    for verb, resource, *scope in denied:
        result = kubectl("auth", "can-i", verb, resource, *scope, "--as", account, check=False)
        assert result.stdout.strip() == "no", (verb, resource)


def grpc_through_the_service(address: str, token: str) -> None:
    """gRPC on the Service's one port (the operator's Service has no other): the official
    client, the release's read token as metadata, and the same refusal without it."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=address)
    try:
        data = np.zeros((1, 32), dtype=np.float32)
        tensor = grpcclient.InferInput("input", [1, 32], "FP32")
        tensor.set_data_from_numpy(data)
        result = client.infer("fraud", [tensor], headers={"authorization": f"Bearer {token}"})
        assert result.get_response().model_version == "1", result.get_response()
        with pytest.raises(InferenceServerException) as refused:
            client.infer("fraud", [tensor])
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED", refused.value
    finally:
        client.close()
    print(f"gRPC through the Service at {address}: answered by version 1")


def test_the_quickstart_serves_fraud_from_two_real_pods_behind_their_service(cluster, kubectl, session):
    kube = cluster.kube
    token = session.shell(f'{TOKEN}\nprintf %s "$FERRY_TOKEN"').stdout
    secret = kube.secret(NS, "ferry-registry-tokens")
    assert secret["write"].decode() == token
    session.tokens = {k: secret[k].decode() for k in ("read", "write", "serving", "feedback")}

    session.forward = PortForward(kubectl, PORT_FORWARD, free_port())
    session.forward.wait_forwarding()
    session.env = {"FERRY_TOKEN": token, "FERRY_REGISTRY": f"http://127.0.0.1:{session.forward.local}"}
    pushed = session.shell(PUSH)
    assert "pushed fraud:1" in pushed.stdout and "alias fraud@production -> 1" in pushed.stdout

    # The example as written, but for the registry's address: no cluster DNS here.
    registry_ip = cluster.service_ip(NS, "ferry-registry")
    example = EXAMPLE.read_text()
    assert "url: http://ferry-registry.ferry.svc:8080" in example
    example = example.replace("http://ferry-registry.ferry.svc:8080", f"http://{registry_ip}:8080")
    print(f"the example ModelDeployment with spec.registry.url: http://{registry_ip}:8080")
    assert shlex.split(APPLY)[:3] == ["kubectl", "apply", "-f"]
    applied = kubectl("apply", "-f", "-", stdin=example)
    assert applied.stdout.strip() == "modeldeployment.ferry.dev/fraud created"

    start = time.monotonic()
    pods = cluster.wait_ready(NS, SERVING, count=2, timeout=240)
    print(f"two serving pods Ready {time.monotonic() - start:.0f} s after kubectl apply")
    status = session.wait_status("fraud Promoted at version 1",
                                 lambda s: s.get("phase") == "Promoted" and s.get("stableVersion") == 1)
    lines = watch_lines(kubectl, shlex.split(WATCH)[1:], want=2)
    assert lines[0].split() == ["NAME", "PHASE", "STABLE", "CANDIDATE", "WEIGHT", "AGE"]
    assert lines[1].split()[:3] == ["fraud", "Promoted", "1"], lines
    assert status["observedGeneration"] == session.md()["metadata"]["generation"]

    # The pods: serving as the image's user, read-only root, the pod's own tokens file.
    pod = pods[0]
    container = pod["spec"]["containers"][0]
    assert container["image"] == cluster.default_image
    assert "--tokens-file" in container["args"]
    who = kubectl("-n", NS, "exec", pod["metadata"]["name"], "--", "id", "-u").stdout.strip()
    assert who == "65532"

    # Inference through the Service (kube-proxy), with the release's read token; without a token
    # the pods refuse (they never run open on the pod network).
    url = session.serving_url()
    body = first_answer(url, "fraud", session.tokens["read"])
    assert body["model_version"] == "1" and body["route"] == "stable", body
    code, body, _ = infer(url, "fraud", None)
    assert code == 401, (code, body)
    code, body, _ = infer(url, "fraud", session.tokens["serving"])
    assert code == 401, "the serving pods' registry token is not a client token"
    grpc_through_the_service(url.removeprefix("http://"), session.tokens["read"])

    # Traffic is spread over both pods: each pod's own counters, read from its metrics.
    with Traffic(url, "fraud", session.tokens["read"], rate=50) as traffic:
        time.sleep(6)
    answered = traffic.versions()
    assert answered == {"1": sum(answered.values())}, answered
    per_pod = {p["metadata"]["name"]: served_requests(p) for p in cluster.ready_pods(NS, SERVING)}
    assert len(per_pod) == 2 and all(n >= 0.2 * sum(answered.values()) for n in per_pod.values()), \
        (per_pod, answered)
    print(f"{sum(answered.values())} requests through the Service, per pod: {per_pod}")

    # Feedback joins whichever pod answered: both pods share the in-chart Redis, and each
    # feedback goes through the Service on a new connection, so kube-proxy sends about half of
    # them to the pod that did not answer. Every one joins, once, and the registry counts them
    # exactly. Business systems post with the release's `feedback` token.
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        assert env.get("FERRY_FEEDBACK_STORE") == f"redis://{REDIS_IP}:6379", env
    before = rewards_counted(session)
    with Traffic(url, "fraud", session.tokens["read"], session.tokens["feedback"],
                 reward_of=lambda v: 1.0, rate=25) as traffic:
        time.sleep(10)
    given = traffic.feedback()
    sent = sum(given.values())
    assert sent >= 50 and given == {200: sent}, f"feedback outcomes through the Service: {dict(given)}"
    wait_for(f"{sent} rewards counted by the registry",
             lambda: rewards_counted(session) - before == sent or None, timeout=60, every=1)
    # A second feedback for an id is a 409, whichever pod it reaches.
    again = [post(f"{url}/v2/models/fraud/feedback", {"id": a.id, "reward": 1.0},
                  session.tokens["feedback"])[0] for a in traffic.since(0)[:10]]
    assert again == [409] * 10, again
    print(f"{sent} feedbacks through the Service over 2 pods: all joined, counted exactly once")


def rewards_counted(session) -> int:
    """Rewards the registry counts for `fraud` in the last hour, every pod and version summed."""
    analysis = session.registry_get("/api/v1/endpoints/fraud/analysis?window=1h")
    return sum(v.get("reward_count") or 0 for v in analysis["versions"])


def wait_for_service(base: str, timeout: float = 60.0) -> None:
    """Waits until a new Service's ClusterIP reaches a ready registry. kube-proxy programs a new
    Service's rules a moment after it exists; until then the host's packets to the ClusterIP
    follow the default route, where this machine's network answers anything (even a 404)."""
    import urllib.request

    def ready():
        with urllib.request.urlopen(f"{base}/readyz", timeout=3) as response:
            return json.loads(response.read()).get("status") == "ready"
    wait_for(f"the registry behind {base}", ready, timeout=timeout)


def served_requests(pod: dict) -> float:
    """`ferry_serving_requests_total` of a pod, read from its /metrics on the pod network."""
    ip = pod["status"]["podIP"]
    import urllib.request
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ferry_serving_requests_total{") and 'endpoint="fraud"' in line)


def step_reasons(events: list[dict], after: int) -> list[str]:
    return [e["data"]["reason"] for e in events if e["type"] == "rollout.step" and e["id"] > after]


def last_event_id(session) -> int:
    return session.registry_get("/api/v1/events?after=0&limit=1")["head"]


def test_a_second_version_shadows_then_is_promoted_step_by_step_and_survives_an_operator_restart(
        cluster, kubectl, session):
    after = last_event_id(session)
    url = session.serving_url()
    with Traffic(url, "fraud", session.tokens["read"], session.tokens["write"],
                 reward_of=lambda v: 1.0, rate=40) as traffic:
        pushed = session.shell(PUSH_2)
        assert "pushed fraud:2" in pushed.stdout and "alias fraud@production -> 2" in pushed.stdout
        status = session.wait_status("a shadow stage for version 2",
                                     lambda s: s.get("candidateVersion") == 2 and s.get("phase") == "Shadowing")
        lines = watch_lines(kubectl, shlex.split(WATCH_2)[1:], want=2)
        assert lines[1].split()[:5] == ["fraud", "Shadowing", "1", "2", "0"], lines
        rollout_started = status["rolloutStartedAt"]

        # The example holds the shadow 5 minutes and its steps 13 more: shorten them for the test.
        session.patch("fraud", FAST)
        seen_steps = []

        def progressing_step(s):
            if s.get("phase") == "Progressing" and s.get("currentStep") not in seen_steps:
                seen_steps.append(s.get("currentStep"))
            # Steps count from 1; the second one, judged at least once inside its hold.
            return s.get("phase") == "Progressing" and s.get("currentStep") == 2 and \
                (s.get("lastAnalysis") or {}).get("step") == 2
        before = session.wait_status("a judgement inside the second step", progressing_step, timeout=180)

        # The operator pod is deleted mid-step: its replacement resumes the same step.
        old = cluster.ready_pods(NS, "app.kubernetes.io/component=operator")[0]["metadata"]["name"]
        kubectl("-n", NS, "delete", "pod", old, "--wait=false")
        new = wait_for("a new operator pod", lambda: [p for p in cluster.ready_pods(
            NS, "app.kubernetes.io/component=operator") if p["metadata"]["name"] != old], timeout=120)
        print(f"operator pod {old} deleted at step {before['currentStep']}; {new[0]['metadata']['name']} took over")

        promoted = session.wait_status(
            "version 2 promoted", lambda s: (progressing_step(s) or True) and s.get("phase") == "Promoted"
            and s.get("stableVersion") == 2, timeout=240)
    assert promoted["rolloutStartedAt"] == rollout_started, "the rollout was not restarted"
    assert seen_steps == sorted(seen_steps), f"a step went backwards: {seen_steps}"
    reasons = step_reasons(session.registry_events("fraud", after), after)
    # Each stage once: shadow → step 1 → step 2 → step 3 → promoted, none repeated or skipped.
    assert reasons == ["RolloutStarted", "StepAdvanced", "StepAdvanced", "StepAdvanced", "Promoted"], reasons
    # Each step after a judgement carries the analysis that decided it, every check included.
    steps = [e["data"] for e in session.registry_events("fraud", after)
             if e["type"] == "rollout.step" and e["id"] > after]
    assert "analysis" not in steps[0], steps[0]
    for step in steps[1:]:
        analysis = step["analysis"]
        assert analysis["verdict"] == "Passed" and analysis["candidate"] == 2, step
        checks = {c["check"] for c in analysis["checks"]}
        want = {"sampleSize", "shadowAgreement"} | ({"errorRate", "latencyP99"} if analysis["stage"] == "Canary" else set())
        assert checks >= want, step
    assert [s["analysis"]["stage"] for s in steps[1:]] == ["Shadow", "Canary", "Canary", "Canary"], steps
    assert traffic.failures() == [], traffic.failures()[:5]
    answered = traffic.versions()
    assert set(answered) == {"1", "2"}, answered
    print(f"rollout of version 2: answers {dict(answered)}, feedback {dict(traffic.feedback())}")
    # The walk-through is over: from here on the CLI talks to the registry's Service.
    session.use_service()


def roll_out(session, version: int, push_args: list[str], reward_of) -> tuple[dict, Traffic, float]:
    """Pushes a version to @production under live traffic with feedback and waits for the end of
    its rollout. Returns the final status, the traffic, and when the push happened."""
    url = session.serving_url()
    with Traffic(url, "fraud", session.tokens["read"], session.tokens["write"], reward_of=reward_of,
                 rate=40) as traffic:
        time.sleep(3)
        pushed_at = time.monotonic()
        session.ferry("model", "push", *push_args, "--name", "fraud", "--alias", "production")
        final = session.wait_status(
            f"the end of version {version}'s rollout",
            lambda s: (s.get("phase") in ("RolledBack", "Failed") and s.get("candidateVersion") == version)
            or (s.get("phase") == "Promoted" and s.get("stableVersion") == version), timeout=240)
        time.sleep(3)  # answers after the rollback, to see the candidate gone
    return final, traffic, pushed_at


def test_a_version_with_a_lower_reward_is_rolled_back_at_its_first_step(session):
    stable = session.status()["stableVersion"]
    after = last_event_id(session)
    status, traffic, pushed_at = roll_out(session, 3, ["tests/fixtures/mlp.onnx", "--param", "lr=0.5"],
                                          reward_of=lambda v: 0.2 if v == "3" else 1.0)
    assert status["phase"] == "RolledBack", status
    assert status["reason"] == "RewardTooLow", status
    assert status["stableVersion"] == stable and status["candidateVersion"] == 3
    assert status["lastAnalysis"]["decidedBy"] == "rewardRatio", status["lastAnalysis"]
    assert status["lastAnalysis"]["step"] == 1, "judged at its first canary step (after its shadow stage)"
    # The registry's rollout.step for the rollback carries the same checks as the status.
    [rolled_back] = [e["data"] for e in session.registry_events("fraud", after)
                     if e["type"] == "rollout.step" and e["data"]["reason"] == "RewardTooLow"]
    assert rolled_back["analysis"]["decided_by"] == "rewardRatio", rolled_back
    reward = next(c for c in rolled_back["analysis"]["checks"] if c["check"] == "rewardRatio")
    in_status = next(c for c in status["lastAnalysis"]["checks"] if c["check"] == "rewardRatio")
    assert (reward["passed"], reward["value"], reward["threshold"]) == \
        (False, in_status["value"], in_status["threshold"]), (reward, in_status)
    answered = traffic.versions(pushed_at)
    candidate, total = answered.get("3", 0), sum(answered.values())
    assert traffic.failures() == [], traffic.failures()[:5]
    # The candidate had no more than its first step's share (20%), with room for chance.
    assert candidate <= 0.2 * total + 4 * (0.2 * 0.8 * total) ** 0.5 + 5, answered
    print(f"version 3: {candidate} of {total} answers, feedback {dict(traffic.feedback(pushed_at))}")


def test_a_version_that_fails_real_requests_is_rolled_back_on_its_error_rate(session):
    # Straight to the canary: the version must fail real requests, not only shadow copies.
    session.patch("fraud", {"strategy": {"shadow": None}})
    status, traffic, pushed_at = roll_out(session, 4, ["tests/fixtures/fragile.onnx"],
                                          reward_of=lambda v: 1.0)
    assert status["phase"] == "RolledBack", status
    assert status["reason"] == "ErrorRateTooHigh", status
    assert status["candidateVersion"] == 4 and status["lastAnalysis"]["step"] == 1
    answered = traffic.versions(pushed_at)
    failed = sum(n for k, n in answered.items() if k.startswith("error"))
    total = sum(answered.values())
    assert "4" not in answered, "the fragile version answered nothing successfully"
    assert failed <= 0.2 * total + 4 * (0.2 * 0.8 * total) ** 0.5 + 5, answered
    # After the rollback every request is answered by the stable version again.
    late = [a for a in traffic.answers if a.at > traffic.answers[-1].at - 2]
    assert late and all(a.status == 200 for a in late), late[:3]
    print(f"fragile version 4: {failed} failed of {total} answers")


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def test_a_perishable_model_is_stale_past_its_max_age_until_a_fresher_version_is_promoted(session):
    # `maxAge` on the resource; the registry's lifecycle monitor judges every 5 s here
    # (`registry.extraEnv` FERRY_DRIFT_INTERVAL, set at install).
    session.patch("fraud", {"maxAge": "30d"})
    dataset = ["--data-uri", f"s3://ml/fraud/train.parquet={'a' * 64}"]
    old = ["tests/fixtures/mlp.onnx", "--param", "lr=0.03", *dataset, "--data-as-of", "2025-01-01"]
    after = last_event_id(session)
    status, traffic, _ = roll_out(session, 5, old, reward_of=lambda v: 1.0)
    assert status["phase"] == "Promoted" and status["stableVersion"] == 5, status
    assert traffic.failures() == [], traffic.failures()[:5]

    def stale_event():
        events = [e for e in session.registry_events("fraud", after) if e["type"] == "model.stale"]
        return events or None
    [event] = wait_for("model.stale for version 5", stale_event, timeout=60)
    assert event["data"]["version"] == 5 and event["data"]["age_from"] == "data", event
    # The operator follows the registry's events: the condition follows the event at once, not
    # at the next resync (60 s for a resource tracking an alias), so a short wait is the test.
    stale = session.wait_status("the Stale condition True for version 5",
                                lambda s: condition(s, "Stale").get("status") == "True", timeout=30)
    c = condition(stale, "Stale")
    assert c["reason"] == "MaxAgeExceeded", c
    assert c["message"].startswith("version 5 is ") and "counted from its training data" in c["message"], c
    print(f"Stale: {c['message']}")

    # A version trained on fresh data replaces it: `model.refreshed`, and the condition clears.
    after = last_event_id(session)
    fresh = ["tests/fixtures/mlp.onnx", "--param", "lr=0.04", *dataset,
             "--data-as-of", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())]
    status, _, _ = roll_out(session, 6, fresh, reward_of=lambda v: 1.0)
    assert status["phase"] == "Promoted" and status["stableVersion"] == 6, status
    refreshed = session.wait_status("the Stale condition False for version 6",
                                    lambda s: condition(s, "Stale").get("status") == "False", timeout=60)
    c = condition(refreshed, "Stale")
    assert c["reason"] == "WithinMaxAge" and c["message"].startswith("version 6 is "), c
    # The condition reads version 6's own age at once; the monitor closes version 5's incident
    # at its next pass (every 5 s here) with one `model.refreshed`.
    def judged():
        kinds = [e["type"] for e in session.registry_events("fraud", after)
                 if e["type"] in ("model.stale", "model.refreshed")]
        return kinds or None
    kinds = wait_for("model.refreshed", judged, timeout=30)
    assert kinds == ["model.refreshed"], kinds
    print(f"after version 6: {c['message']}")


def test_a_serving_pod_deleted_under_traffic_is_replaced_and_fails_at_most_its_in_flight_requests(
        cluster, kubectl, session):
    url = session.serving_url()
    pods = cluster.ready_pods(NS, SERVING)
    assert len(pods) == 2
    victim = pods[0]["metadata"]["name"]
    with Traffic(url, "fraud", session.tokens["read"], rate=40) as traffic:
        time.sleep(3)
        deleted_at = time.monotonic()
        kubectl("-n", NS, "delete", "pod", victim, "--wait=false")
        replacement = wait_for("a replacement serving pod", lambda: [
            p for p in cluster.ready_pods(NS, SERVING) if p["metadata"]["name"] != victim
            and p["metadata"]["name"] != pods[1]["metadata"]["name"]], timeout=180)
        ready_after = time.monotonic() - deleted_at
        time.sleep(6)
    failures = traffic.failures(deleted_at)
    total = len(traffic.since(deleted_at))
    print(f"serving pod {victim} deleted under 40 req/s: {len(failures)} failed of {total} "
          f"({[a.status for a in failures]}); replacement Ready after {ready_after:.0f} s")
    # A pod being deleted leaves the Service's endpoints first and finishes what it has
    # (SIGTERM, graceful shutdown): at most a request in flight on a connection kube-proxy had
    # already sent there may fail.
    assert len(failures) <= 1, failures
    new = replacement[0]
    assert served_requests(new) > 0, "the replacement pod answers requests from the registry's model"


def test_serving_keeps_answering_while_the_registry_pod_is_replaced(cluster, kubectl, session):
    url = session.serving_url()
    registry = cluster.ready_pods(NS, "app.kubernetes.io/component=registry")[0]["metadata"]["name"]
    with Traffic(url, "fraud", session.tokens["read"], rate=40) as traffic:
        time.sleep(2)
        start = time.monotonic()
        kubectl("-n", NS, "delete", "pod", registry, "--wait=false")
        wait_for("the registry pod to go", lambda: not [
            p for p in cluster.ready_pods(NS, "app.kubernetes.io/component=registry")
            if p["metadata"]["name"] == registry], timeout=60)
        down_at = time.monotonic()
        new = cluster.wait_ready(NS, "app.kubernetes.io/component=registry", timeout=180)
        back_at = time.monotonic()
        time.sleep(3)
    during = [a for a in traffic.answers if down_at <= a.at <= back_at]
    print(f"registry pod replaced: {back_at - down_at:.0f} s without a ready registry, "
          f"{len(during)} requests answered meanwhile, failures: {len(traffic.failures(start))}")
    assert traffic.failures(start) == [], traffic.failures(start)[:5]
    assert during, "traffic went on while the registry was away"
    assert new[0]["metadata"]["name"] != registry
    # Serving converges with the new registry: its reports arrive there again.
    session.use_service()

    def reported():
        analysis = json.loads(session.ferry("endpoint", "show", "fraud", "--window", "30s", "-o", "json").stdout)
        replicas = analysis.get("analysis", {}).get("replicas", [])
        return len(replicas) == 2 and replicas
    with Traffic(url, "fraud", session.tokens["read"], rate=20):
        wait_for("reports from both pods to the new registry", reported, timeout=90, every=2)


def test_helm_upgrade_changes_a_value_and_keeps_tokens_models_and_rollouts(cluster, kubectl, session):
    helm = cluster.helm(NS)
    tokens = cluster.kube.secret(NS, "ferry-registry-tokens")
    values = merge(json.loads(json.dumps(session.values)), {"registry": {"maxUploadSize": "1GiB"}})
    upgraded = helm.upgrade(str(CHART), "ferry", values, timeout=180)
    assert upgraded["revision"] == 2 and upgraded["status"] == "deployed"
    assert cluster.kube.secret(NS, "ferry-registry-tokens") == tokens

    def upgraded_pod():
        pods = cluster.ready_pods(NS, "app.kubernetes.io/component=registry")
        return [p for p in pods if "--max-upload-size=1GiB" in p["spec"]["containers"][0]["args"]]
    wait_for("a registry pod with the new value", upgraded_pod, timeout=180)
    session.use_service()
    shown = session.ferry("model", "show", "fraud", "-o", "json")
    assert json.loads(shown.stdout)["model"]["latest_version"] >= 4, shown.stdout
    assert session.status()["phase"] in ("Promoted", "RolledBack")


def test_helm_uninstall_keeps_the_claim_the_crd_and_the_model_deployments(cluster, kubectl, session):
    cluster.helm(NS).uninstall("ferry", timeout=180)
    kube = cluster.kube
    # `helm uninstall` returns once the objects are deleted; their pods go a little later (the
    # garbage collector, then each pod's grace period). A registry pod of the old release still
    # running would join the new release's Service (same labels) and refuse the new tokens.
    release = "labelSelector=app.kubernetes.io/instance=ferry"
    wait_for("the registry and the operator to go", lambda: not kube.items(
        f"/apis/apps/v1/namespaces/{NS}/deployments?{release}")
        and not kube.items(f"/api/v1/namespaces/{NS}/pods?{release}"), timeout=120)
    claim = kube.find(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/ferry-registry-data")
    assert claim and claim["status"]["phase"] == "Bound", "helm.sh/resource-policy: keep"
    assert kube.find("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.ferry.dev")
    assert kube.find(f"{MD}/fraud"), "CRDs and their objects outlive the release"
    assert kube.find(f"/apis/apps/v1/namespaces/{NS}/deployments/fraud"), "owned by the ModelDeployment"
    # Installing again adopts the kept claim and finds the models in it.
    cluster.helm(NS).install(str(CHART), "ferry", {}, namespace=NS, timeout=180)
    cluster.wait_ready(NS, "app.kubernetes.io/component=registry")
    ip = cluster.service_ip(NS, "ferry-registry")
    wait_for_service(f"http://{ip}:8080")
    read = kube.secret(NS, "ferry-registry-tokens")["read"].decode()
    shown = ferry(session.ferry_bin, "model", "show", "fraud@production", "-o", "json",
                  env={"FERRY_REGISTRY": f"http://{ip}:8080", "FERRY_TOKEN": read})
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"] >= 4, shown.stdout + shown.stderr
