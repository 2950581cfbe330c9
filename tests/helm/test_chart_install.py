"""The chart installed, upgraded and uninstalled on a real kube-apiserver (1.20), its pods run with
the real binary (tests/helm/kube.py), and the README's Kubernetes quickstart typed as a user
would: helm install, the token from the Secret, kubectl port-forward (tests/helm/kubelet.py),
ferry model push, kubectl apply, kubectl get md -w, a second version."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import helm_python
import pytest
import yaml

from conftest import CHART, REPO, load_values, need
from kube import JobController, ServiceProxy, free_port
from kubelet import Kubelet

EXAMPLE = REPO / "deploy/examples/modeldeployment.yaml"
MODEL = REPO / "tests/fixtures/mlp.onnx"

# The README's Kubernetes quickstart, command by command, in order: the walk-through below runs
# each one as written (with bash, from the repository root), `helm install` through the Helm SDK,
# and the port-forward to a free local port instead of 8080 (which FERRY_REGISTRY then names).
# test_the_readme_quickstart_is_the_tested_one keeps README.md's `sh` blocks equal to this list.
INSTALL = "helm install ferry deploy/helm/ferry --namespace ferry --create-namespace"
TOKEN = ("export FERRY_TOKEN=$(kubectl -n ferry get secret ferry-registry-tokens"
         " -o jsonpath='{.data.write}' | base64 -d)")
PORT_FORWARD = "kubectl -n ferry port-forward svc/ferry-registry 8080:8080 &"
PUSH = "ferry model push tests/fixtures/mlp.onnx --name fraud --alias production"
APPLY = "kubectl apply -f deploy/examples/modeldeployment.yaml"
WATCH = "kubectl -n ferry get md -w"
PUSH_2 = "ferry model push tests/fixtures/mlp.onnx --name fraud --param lr=0.02 --alias production"
WATCH_2 = "kubectl -n ferry get md fraud -w"
QUICKSTART = [INSTALL, TOKEN, PORT_FORWARD, PUSH, APPLY, WATCH, PUSH_2, WATCH_2]


def test_the_readme_quickstart_is_the_tested_one():
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## Kubernetes quickstart\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    need(section, "README.md has no '## Kubernetes quickstart' section")
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.M | re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == QUICKSTART


def helm_install(cluster, command: str, values: dict | None = None, timeout: int = 120):
    """`helm install RELEASE CHART --namespace NS [--create-namespace]`, through the Helm v4 SDK
    (no helm binary is packaged where this project can reach)."""
    words = shlex.split(command)
    assert words[:2] == ["helm", "install"] and len(words) >= 4, command
    release, chart, flags = words[2], REPO / words[3], words[4:]
    namespace = flags[flags.index("--namespace") + 1]
    assert set(flags) <= {"--namespace", namespace, "--create-namespace"}, command
    helm = cluster.helm(namespace)
    installed = helm.install(str(chart), release, values or {}, namespace=namespace,
                             create_namespace="--create-namespace" in flags, timeout=timeout)
    return helm, installed


@pytest.fixture(scope="module")
def user_shell(kubectl, ferry_bin, tmp_path_factory):
    """Runs a quickstart line with bash from the repository root, `ferry` (the binary under test)
    and kubectl first on PATH, and no FERRY_* variable but those given."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "ferry").symlink_to(ferry_bin)
    path = f"{bin_dir}{os.pathsep}{kubectl.binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(command: str, env: dict | None = None) -> subprocess.CompletedProcess:
        saved = kubectl.env
        kubectl.env = {k: v for k, v in saved.items() if not k.startswith("FERRY_")}
        try:
            done = kubectl.shell(command, extra_env={"PATH": path, **(env or {})})
        finally:
            kubectl.env = saved
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done

    return run


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def ferry(ferry_bin: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    full_env.update(env or {})
    return subprocess.run([str(ferry_bin), *args], env=full_env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def watch_lines(kubectl, args: list[str], want: int, timeout: float = 30.0) -> list[str]:
    """The first `want` lines of a `kubectl … -w`, which never ends by itself."""
    process = subprocess.Popen([str(kubectl.binary), *args], env=kubectl.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        # Raw reads: a buffered reader would hide lines select() no longer reports.
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
    """The quickstart's `kubectl port-forward … &`, on `local` instead of its local port."""

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


def objects(kube, namespace: str) -> dict[str, set[str]]:
    """Names of what a release may create, by kind."""
    paths = {
        "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments",
        "Service": f"/api/v1/namespaces/{namespace}/services",
        "Secret": f"/api/v1/namespaces/{namespace}/secrets",
        "ServiceAccount": f"/api/v1/namespaces/{namespace}/serviceaccounts",
        "PersistentVolumeClaim": f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs",
        "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
    }
    found = {}
    for kind, path in paths.items():
        names = {o["metadata"]["name"] for o in kube.items(path)}
        if kind == "Secret":  # Helm's release records and service-account tokens are not ours
            names = {n for n in names if not n.startswith("sh.helm.release") and "-token-" not in n}
        if kind == "ServiceAccount":
            names.discard("default")
        found[kind] = names
    return found


def cluster_objects(kube, name: str) -> set[str]:
    found = set()
    for kind, path in (("ClusterRole", "clusterroles"), ("ClusterRoleBinding", "clusterrolebindings")):
        if kube.find(f"/apis/rbac.authorization.k8s.io/v1/{path}/{name}"):
            found.add(kind)
    return found


@pytest.fixture(scope="module")
def quickstart(cluster):
    """The quickstart's `helm install`."""
    helm, release = helm_install(cluster, INSTALL)
    yield helm, release
    try:
        helm.uninstall("ferry", ignore_not_found=True, timeout=60)
    except helm_python.HelmError:
        pass


def test_install_creates_every_object_of_the_default_release(cluster, quickstart):
    _, release = quickstart
    assert release["status"] == "deployed" and release["revision"] == 1
    assert objects(cluster.kube, "ferry") == {
        "Deployment": {"ferry-registry", "ferry-operator"},
        "Service": {"ferry-registry", "ferry-operator"},
        "Secret": {"ferry-registry-tokens"},
        "ServiceAccount": {"ferry-registry", "ferry-operator"},
        "PersistentVolumeClaim": {"ferry-registry-data"},
        "Job": set(),
        "NetworkPolicy": set(),
    }
    assert cluster_objects(cluster.kube, "ferry-operator") == {"ClusterRole", "ClusterRoleBinding"}
    crd = cluster.kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.ferry.dev")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"


def test_the_operator_account_may_do_what_the_operator_does_and_no_more(kubectl, quickstart):
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


def test_the_walkthrough_pushes_applies_and_watches_a_rollout(cluster, kubectl, quickstart, runner, user_shell):
    kube = cluster.kube
    # The registry pod, exactly as its Deployment says.
    registry = runner.start_deployment("ferry", "ferry-registry")
    registry.wait_ready()
    assert registry.probe("livenessProbe") == 200 and registry.probe("startupProbe") == 200
    assert "applied" in (runner.root / "pods").joinpath(registry.name, "migrate.log").read_text()

    # The test's kubelet reports the registry pod Running on its Node, so that kubectl
    # port-forward reaches it through the API server; the operator's in-cluster calls reach the
    # registry's Service through ServiceProxy.
    with Kubelet(kube) as kubelet, ServiceProxy(runner) as proxy:
        kubelet.report(registry)
        # The operator pod, with its ServiceAccount's token and the chart's RBAC.
        # Only the test's clock differs: aliases are re-resolved every 5 s instead of every 60 s.
        operator = runner.start_deployment(
            "ferry", "ferry-operator", extra_env=proxy.env() | {"FERRY_OPERATOR_ALIAS_RESYNC": "5s"})
        operator.wait_ready()
        assert operator.probe("livenessProbe") == 200
        assert operator.http_get("http", "/metrics") == 200

        token = user_shell(f'{TOKEN}\nprintf %s "$FERRY_TOKEN"').stdout
        assert kube.secret("ferry", "ferry-registry-tokens")["write"].decode() == token

        forward = PortForward(kubectl, PORT_FORWARD, free_port())
        try:
            forward.wait_forwarding()
            env = {"FERRY_TOKEN": token, "FERRY_REGISTRY": f"http://127.0.0.1:{forward.local}"}

            pushed = user_shell(PUSH, env)
            assert "pushed fraud:1" in pushed.stdout and "alias fraud@production -> 1" in pushed.stdout

            applied = user_shell(APPLY)
            assert applied.stdout.strip() == "modeldeployment.ferry.dev/fraud created"

            # The operator reconciles it: the serving Deployment and Service, the endpoint, the status.
            md_path = "/apis/ferry.dev/v1alpha1/namespaces/ferry/modeldeployments/fraud"
            wait_for("the operator's serving Deployment",
                     lambda: kube.find("/apis/apps/v1/namespaces/ferry/deployments/fraud"))
            md = wait_for("status.stableVersion 1",
                          lambda: (m := kube.get(md_path)).get("status", {}).get("stableVersion") == 1 and m)
            assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
            assert any(r.startswith("PUT http://ferry-registry.ferry.svc:8080/api/v1/endpoints/fraud")
                       for r in proxy.requests), proxy.requests

            assert shlex.split(WATCH)[0] == shlex.split(WATCH_2)[0] == "kubectl"
            lines = watch_lines(kubectl, shlex.split(WATCH)[1:], want=2)
            assert lines[0].split() == ["NAME", "PHASE", "STABLE", "CANDIDATE", "WEIGHT", "AGE"]
            assert lines[1].split()[:3] == ["fraud", md["status"]["phase"], "1"]

            # A second version moves the alias: the operator starts rolling it out.
            pushed = user_shell(PUSH_2, env)
            assert "pushed fraud:2" in pushed.stdout and "alias fraud@production -> 2" in pushed.stdout
        finally:
            forwarded = forward.stop()
        # Both pushes went through kubectl port-forward, the API server and the kubelet.
        assert forwarded.count(f"Handling connection for {forward.local}") >= 2, forwarded
        assert kubelet.requests == [f"POST /portForward/ferry/{registry.name}"]
        assert len(kubelet.forwarded) >= 2 and set(kubelet.forwarded) == {("ferry", registry.name, 8080)}

        md = wait_for("a rollout of version 2",
                      lambda: (m := kube.get(md_path))["status"].get("candidateVersion") == 2 and m,
                      timeout=90)
        assert md["status"]["phase"] in ("Shadowing", "Progressing", "Promoted", "RolledBack", "Failed")
        lines = watch_lines(kubectl, shlex.split(WATCH_2)[1:], want=2)
        assert lines[1].split()[:4] == ["fraud", md["status"]["phase"], "1", "2"] or \
            lines[1].split()[:2] == ["fraud", kube.get(md_path)["status"]["phase"]]
        operator.stop()
        assert operator.process.returncode == 0, operator.output()


def test_a_bad_model_deployment_is_rejected_naming_the_field(kubectl, quickstart):
    good = yaml.safe_load(EXAMPLE.read_text())
    bad_weight = json.loads(json.dumps(good))
    bad_weight["metadata"]["name"] = "bad-weight"
    bad_weight["spec"]["strategy"]["canary"]["steps"][0]["weight"] = 150
    no_registry = json.loads(json.dumps(good))
    no_registry["metadata"]["name"] = "no-registry"
    del no_registry["spec"]["registry"]
    # kubectl checks against the schema the API server publishes for the CRD; with
    # --validate=false the API server itself refuses (HTTP 422).
    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(no_registry), check=False)
    assert refused.returncode != 0 and 'missing required field "registry"' in refused.stderr
    for bad, says in ((bad_weight, "spec.strategy.canary.steps.weight"), (no_registry, "spec.registry")):
        refused = kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
        assert refused.returncode != 0, bad["metadata"]["name"]
        assert says in refused.stderr and "is invalid" in refused.stderr, refused.stderr
    weight = kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(bad_weight), check=False)
    assert "less than or equal to 100" in weight.stderr
    assert kubectl("-n", "ferry", "get", "md", "bad-weight", check=False).returncode != 0
    assert kubectl("-n", "ferry", "get", "md", "no-registry", check=False).returncode != 0


def test_upgrade_keeps_tokens_and_models_and_uninstall_keeps_the_data(cluster, quickstart, runner, ferry_bin):
    helm, _ = quickstart
    kube = cluster.kube
    tokens = kube.secret("ferry", "ferry-registry-tokens")
    upgraded = helm.upgrade(str(CHART), "ferry", {"registry": {"maxUploadSize": "1GiB"}}, timeout=120)
    assert upgraded["revision"] == 2 and upgraded["status"] == "deployed"
    # The generated tokens were read back, not generated again.
    assert kube.secret("ferry", "ferry-registry-tokens") == tokens
    args = kube.get("/apis/apps/v1/namespaces/ferry/deployments/ferry-registry")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--max-upload-size=1GiB" in args
    # The new pod finds the models pushed before the upgrade on the same claim.
    registry = runner.start_deployment("ferry", "ferry-registry")
    registry.wait_ready()
    shown = ferry(ferry_bin, "model", "show", "fraud@production",
                  env={"FERRY_REGISTRY": registry.url("http"), "FERRY_TOKEN": tokens["read"].decode()})
    assert shown.returncode == 0 and "version:     2" in shown.stdout, shown.stdout + shown.stderr
    registry.stop()

    helm.uninstall("ferry", timeout=60)
    left = objects(kube, "ferry")
    assert left["Deployment"] == {"fraud"}  # the operator's child, owned by the ModelDeployment
    assert left["PersistentVolumeClaim"] == {"ferry-registry-data"}  # helm.sh/resource-policy: keep
    assert left["Secret"] == set() and left["ServiceAccount"] == set()
    assert cluster_objects(kube, "ferry-operator") == set()
    # CRDs outlive releases, as Helm does with crds/: the ModelDeployment is still there.
    assert kube.find("/apis/ferry.dev/v1alpha1/namespaces/ferry/modeldeployments/fraud")
    # Installing again adopts the kept claim.
    helm.install(str(CHART), "ferry", {}, namespace="ferry", timeout=120)
    assert objects(kube, "ferry")["PersistentVolumeClaim"] == {"ferry-registry-data"}


def test_operator_only_installs_the_operator_alone(cluster):
    helm = cluster.helm("ferry-ops")
    release = helm.install(str(CHART), "ops", load_values("operator-only"), namespace="ferry-ops",
                           create_namespace=True, timeout=120)
    try:
        assert release["status"] == "deployed"
        found = objects(cluster.kube, "ferry-ops")
        assert found["Deployment"] == {"ops-ferry-operator"}
        assert found["Secret"] == set() and found["PersistentVolumeClaim"] == set()
        assert cluster_objects(cluster.kube, "ops-ferry-operator") == {"ClusterRole", "ClusterRoleBinding"}
    finally:
        helm.uninstall("ops", timeout=60)
    assert objects(cluster.kube, "ferry-ops")["Deployment"] == set()
    assert cluster_objects(cluster.kube, "ops-ferry-operator") == set()


def test_bad_values_fail_the_install_before_anything_is_created(cluster):
    helm = cluster.helm("ferry-bad")
    with pytest.raises(helm_python.HelmError) as refused:
        helm.install(str(CHART), "bad", load_values("bad-replicas-on-sqlite"), namespace="ferry-bad",
                     create_namespace=True, timeout=60)
    assert "schema" in str(refused.value)
    assert helm.list(all_states=True) == [] or all(r["name"] != "bad" for r in helm.list(all_states=True))
    assert cluster.kube.find("/apis/apps/v1/namespaces/ferry-bad/deployments/bad-ferry-registry") is None


def test_a_service_monitor_without_its_crd_fails_the_install_and_says_why(cluster):
    # The test API server has no Prometheus Operator CRDs; the rendered ServiceMonitor itself is
    # checked by test_chart_render.py.
    helm = cluster.helm("ferry-sm")
    with pytest.raises(helm_python.HelmError) as refused:
        helm.install(str(CHART), "sm", load_values("servicemonitor"), namespace="ferry-sm",
                     create_namespace=True, timeout=60)
    assert "ServiceMonitor" in str(refused.value)
    assert cluster.kube.find("/apis/apps/v1/namespaces/ferry-sm/deployments/sm-ferry-registry") is None


@pytest.fixture
def postgres_database():
    url = os.environ.get("FERRY_TEST_POSTGRES_URL")
    need(url, "FERRY_TEST_POSTGRES_URL is not set (scripts/test.sh sets it)")
    psql = subprocess.run(["psql", url, "-qc", "SELECT 1"], capture_output=True, text=True)
    need(psql.returncode == 0, f"PostgreSQL is not reachable at {url}")
    name = f"ferry_test_helm_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {name}"], check=True)
    base, _, _ = url.rpartition("/")
    yield f"{base}/{name}"
    subprocess.run(["psql", url, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


@pytest.fixture
def s3_bucket():
    endpoint = os.environ.get("FERRY_TEST_S3_ENDPOINT")
    need(endpoint and os.environ.get("AWS_ACCESS_KEY_ID"),
         "FERRY_TEST_S3_ENDPOINT and AWS_* are not set (scripts/test.sh starts an S3 server)")
    return endpoint, os.environ.get("FERRY_TEST_S3_BUCKET", "ferry-test")


def test_postgres_and_s3_migrate_in_the_hook_job_and_serve_from_several_replicas(
        cluster, kubectl, runner, ferry_bin, postgres_database, s3_bucket):
    kube = cluster.kube
    ns = "ferry-pg"
    endpoint, bucket = s3_bucket
    kubectl("create", "namespace", ns)
    # The Secrets the values name, created the way the chart's README says.
    kubectl("-n", ns, "create", "secret", "generic", "ferry-database", f"--from-literal=url={postgres_database}")
    kubectl("-n", ns, "create", "secret", "generic", "ferry-s3",
            f"--from-literal=AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']}")
    values = load_values("postgres-s3")
    values["registry"]["objectStore"]["url"] = f"s3://{bucket}/helm-{uuid.uuid4().hex[:8]}"
    values["registry"]["objectStore"]["s3"]["endpoint"] = endpoint
    helm = cluster.helm(ns)
    with JobController(kube, runner, ns) as jobs:
        release = helm.install(str(CHART), "ferry-pg", values, namespace=ns, timeout=120)
    assert jobs.errors == []
    assert release["status"] == "deployed"
    # The pre-install hook ran `ferry registry migrate` on the real database, and Helm deleted
    # the Job once it succeeded.
    assert [j["metadata"]["name"] for j in jobs.seen] == ["ferry-pg-registry-migrate"]
    assert list(jobs.results.values()) == [0]
    assert kube.find(f"/apis/batch/v1/namespaces/{ns}/jobs/ferry-pg-registry-migrate") is None
    migrate_log = next((runner.root / "pods").glob("ferry-pg-registry-migrate-*/migrate.log")).read_text()
    assert "applied" in migrate_log and "PostgreSQL" in migrate_log
    assert objects(kube, ns)["PersistentVolumeClaim"] == set()

    try:
        tokens = {k: v.decode() for k, v in kube.secret(ns, "ferry-pg-registry-tokens").items()}
        deployment = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/ferry-pg-registry")
        assert deployment["spec"]["replicas"] == 2
        first = runner.start_deployment(ns, "ferry-pg-registry")
        second = runner.start_deployment(ns, "ferry-pg-registry")
        first.wait_ready()
        second.wait_ready()
        pushed = ferry(ferry_bin, "model", "push", str(MODEL), "--name", "fraud", "--alias", "production",
                       env={"FERRY_REGISTRY": first.url("http"), "FERRY_TOKEN": tokens["write"]})
        assert pushed.returncode == 0, pushed.stderr
        # The other replica sees it: one database, one bucket.
        shown = ferry(ferry_bin, "model", "show", "fraud@production",
                      env={"FERRY_REGISTRY": second.url("http"), "FERRY_TOKEN": tokens["read"]})
        assert shown.returncode == 0 and "version:     1" in shown.stdout, shown.stderr

        # Standalone serving loads fraud@production through the registry Service and answers.
        serving = runner.start_deployment(ns, "ferry-pg-serving")
        serving.wait_ready(timeout=90)
        assert serving.probe("livenessProbe") == 200
        request = urllib.request.Request(
            f"{serving.url('http')}/v2/models/fraud/infer",
            data=(REPO / "tests/fixtures/mlp-request.json").read_bytes(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {tokens['read']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["model_version"] == "1" and body["outputs"][0]["name"] == "probabilities"

        # An upgrade migrates again first (nothing to apply) and keeps the release's tokens.
        with JobController(kube, runner, ns) as jobs:
            upgraded = helm.upgrade(str(CHART), "ferry-pg", values, timeout=120)
        assert upgraded["revision"] == 2 and list(jobs.results.values()) == [0]
        logs = sorted((runner.root / "pods").glob("ferry-pg-registry-migrate-*/migrate.log"))
        assert "up to date" in logs[-1].read_text()
        assert kube.secret(ns, "ferry-pg-registry-tokens")["write"].decode() == tokens["write"]
    finally:
        runner.stop_all()
        helm.uninstall("ferry-pg", timeout=60)
    assert objects(kube, ns)["Deployment"] == set()


def test_a_failed_migration_fails_the_install_and_keeps_the_job(cluster, kubectl, runner):
    ns = "ferry-pg-down"
    kubectl("create", "namespace", ns)
    # Nothing listens on port 9 (discard): the migration cannot connect.
    kubectl("-n", ns, "create", "secret", "generic", "ferry-database",
            "--from-literal=url=postgres://ferry@127.0.0.1:9/ferry?connect_timeout=2")
    values = {"registry": {"database": {"type": "external", "external": {"existingSecret": "ferry-database"}},
                           "migrations": {"backoffLimit": 0}}}
    helm = cluster.helm(ns)
    with JobController(cluster.kube, runner, ns) as jobs:
        with pytest.raises(helm_python.HelmError) as failed:
            helm.install(str(CHART), "down", values, namespace=ns, timeout=60)
    assert list(jobs.results.values()) != [0]
    assert "down-ferry-registry-migrate" in str(failed.value)
    # Kept for its logs (hook-delete-policy has no hook-failed); no registry was created.
    job = cluster.kube.find(f"/apis/batch/v1/namespaces/{ns}/jobs/down-ferry-registry-migrate")
    assert job and job["status"]["conditions"][0]["type"] == "Failed"
    assert cluster.kube.find(f"/apis/apps/v1/namespaces/{ns}/deployments/down-ferry-registry") is None
    helm.uninstall("down", timeout=60, ignore_not_found=True)
