"""The chart's other configurations installed on the real cluster: PostgreSQL and S3 with several
registry replicas and standalone serving (migrated by the pre-install hook Job, run by the real
Job controller), a failed migration, the operator alone, and values that must fail the install
before anything is created."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.parse
import uuid

import helm_python
import pytest
import yaml

from conftest import CHART, REPO, VALUES, ferry, need, uninstall_quietly
from traffic import first_answer, infer

MODEL = REPO / "tests/fixtures/mlp.onnx"


def load_values(name: str) -> dict:
    return yaml.safe_load((VALUES / f"{name}.yaml").read_text()) or {}


def merged(base: dict, extra: dict) -> dict:
    out = json.loads(json.dumps(base))
    for k, v in extra.items():
        out[k] = merged(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class JobWatcher:
    """Follows the pods of a namespace's Jobs with a watch while Helm runs its hooks: Helm deletes
    a succeeded hook Job (and so its pod) at once, so looking afterwards finds nothing. Every
    state change arrives as a watch event; the log is fetched as soon as a pod ends, which can
    lose the race with the deletion (then it stays empty)."""

    def __init__(self, kube, namespace: str):
        self.kube, self.namespace = kube, namespace
        self.pods: dict[str, dict] = {}  # pod name -> {"job", "phase", "exit", "log"}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)  # the watch is open before Helm starts
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=10)

    def _run(self):
        path = f"/api/v1/namespaces/{self.namespace}/pods?labelSelector=job-name"
        for event in self.kube.watch(path, self.stopping):
            pod = event["object"]
            name = pod["metadata"]["name"]
            seen = self.pods.setdefault(name, {"job": pod["metadata"]["labels"]["job-name"], "log": ""})
            status = pod.get("status", {})
            seen["phase"] = status.get("phase")
            for c in status.get("containerStatuses") or []:
                if "terminated" in c.get("state", {}):
                    seen["exit"] = c["state"]["terminated"]["exitCode"]
            if seen["phase"] in ("Succeeded", "Failed") and not seen["log"]:
                try:
                    seen["log"] = self.kube.request_text(
                        "GET", f"/api/v1/namespaces/{self.namespace}/pods/{name}/log")
                except Exception:  # noqa: BLE001 - deleted already
                    pass

    def succeeded(self, job: str) -> list[dict]:
        return [p for p in self.pods.values() if p["job"] == job and p.get("phase") == "Succeeded"
                and p.get("exit") == 0]


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
        cluster, kubectl, ferry_bin, relay, postgres_database, s3_bucket):
    kube = cluster.kube
    ns = "ferry-pg"
    endpoint, bucket = s3_bucket
    # Pods reach the host's PostgreSQL and S3 server through relays on the node's address.
    db = urllib.parse.urlsplit(postgres_database)
    db_host, db_port = relay(db.hostname, db.port or 5432)
    pod_db_url = urllib.parse.urlunsplit(db._replace(netloc=f"{db.username}@{db_host}:{db_port}"))
    s3 = urllib.parse.urlsplit(endpoint)
    s3_host, s3_port = relay(s3.hostname, s3.port)
    kubectl("create", "namespace", ns)
    try:
        # The Secrets the values name, created the way the chart's README says.
        kubectl("-n", ns, "create", "secret", "generic", "ferry-database", f"--from-literal=url={pod_db_url}")
        kubectl("-n", ns, "create", "secret", "generic", "ferry-s3",
                f"--from-literal=AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']}",
                f"--from-literal=AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']}")
        values = merged(load_values("postgres-s3"), cluster.image_values())
        values["registry"]["objectStore"]["url"] = f"s3://{bucket}/helm-{uuid.uuid4().hex[:8]}"
        values["registry"]["objectStore"]["s3"]["endpoint"] = f"http://{s3_host}:{s3_port}"
        # Serving comes with the upgrade below: it needs the registry Service's address (no
        # cluster DNS here), known once the release exists.
        values["serving"]["enabled"] = False
        helm = cluster.helm(ns)
        with JobWatcher(kube, ns) as jobs:
            release = helm.install(str(CHART), "ferry-pg", values, namespace=ns, timeout=240)
        assert release["status"] == "deployed"
        # The pre-install hook ran `ferry registry migrate` in a pod, on the real database, and
        # Helm deleted the Job once it succeeded.
        migrated = jobs.succeeded("ferry-pg-registry-migrate")
        assert len(migrated) == 1, jobs.pods
        assert "applied" in migrated[0]["log"] or not migrated[0]["log"], migrated
        assert kube.find(f"/apis/batch/v1/namespaces/{ns}/jobs/ferry-pg-registry-migrate") is None
        # Two registry replicas: a disruption budget, in the API this (1.20) server has.
        budget = kube.find(f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/ferry-pg-registry")
        assert budget is not None and budget["spec"]["maxUnavailable"] == 1, budget
        applied = subprocess.run(["psql", postgres_database, "-Atc", "SELECT count(*) FROM _sqlx_migrations WHERE success"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert int(applied) > 0
        assert kube.items(f"/api/v1/namespaces/{ns}/persistentvolumeclaims") == []

        tokens = {k: v.decode() for k, v in kube.secret(ns, "ferry-pg-registry-tokens").items()}
        first, second = cluster.wait_ready(ns, "app.kubernetes.io/component=registry", count=2)
        urls = [f"http://{p['status']['podIP']}:8080" for p in (first, second)]
        pushed = ferry(ferry_bin, "model", "push", str(MODEL), "--name", "fraud", "--alias", "production",
                       env={"FERRY_REGISTRY": urls[0], "FERRY_TOKEN": tokens["write"]})
        assert pushed.returncode == 0, pushed.stderr
        # The other replica sees it: one database, one bucket.
        shown = ferry(ferry_bin, "model", "show", "fraud@production",
                      env={"FERRY_REGISTRY": urls[1], "FERRY_TOKEN": tokens["read"]})
        assert shown.returncode == 0 and "version:     1" in shown.stdout, shown.stderr

        # An upgrade that adds standalone serving migrates again first (nothing to apply) and
        # keeps the release's tokens.
        values["serving"]["enabled"] = True
        values["serving"]["registryUrl"] = f"http://{cluster.service_ip(ns, 'ferry-pg-registry')}:8080"
        print(f"serving.registryUrl={values['serving']['registryUrl']}")
        with JobWatcher(kube, ns) as jobs:
            upgraded = helm.upgrade(str(CHART), "ferry-pg", values, timeout=240)
        assert upgraded["revision"] == 2
        migrated = jobs.succeeded("ferry-pg-registry-migrate")
        assert len(migrated) == 1, jobs.pods
        assert "up to date" in migrated[0]["log"] or not migrated[0]["log"], migrated
        assert kube.secret(ns, "ferry-pg-registry-tokens")["write"].decode() == tokens["write"]

        # Standalone serving loads fraud@production through the registry Service (with its narrow
        # `serving` token) and answers through its own, to the release's read token, never to
        # the admin one.
        cluster.wait_ready(ns, "app.kubernetes.io/component=serving", count=2, timeout=240)
        serving = f"http://{cluster.service_ip(ns, 'ferry-pg-serving')}:8081"
        assert first_answer(serving, "fraud", tokens["read"])["model_version"] == "1"
        assert infer(serving, "fraud", tokens["admin"])[0] == 401, "no admin token in serving pods"
    finally:
        uninstall_quietly(cluster.helm(ns), "ferry-pg")
        kubectl("delete", "namespace", ns, "--wait=true", check=False, timeout=180)


def test_a_failed_migration_fails_the_install_and_keeps_the_job(cluster, kubectl):
    ns = "ferry-pg-down"
    kubectl("create", "namespace", ns)
    try:
        # Nothing listens on port 9 (discard) inside the pod: the migration cannot connect.
        kubectl("-n", ns, "create", "secret", "generic", "ferry-database",
                "--from-literal=url=postgres://ferry@127.0.0.1:9/ferry?connect_timeout=2")
        values = merged(cluster.image_values(), {"registry": {
            "database": {"type": "external", "external": {"existingSecret": "ferry-database"}},
            "migrations": {"backoffLimit": 0}}})
        helm = cluster.helm(ns)
        with pytest.raises(helm_python.HelmError) as failed:
            helm.install(str(CHART), "down", values, namespace=ns, timeout=120)
        assert "down-ferry-registry-migrate" in str(failed.value)
        # Kept for its logs (hook-delete-policy has no hook-failed); no registry was created.
        job = cluster.kube.find(f"/apis/batch/v1/namespaces/{ns}/jobs/down-ferry-registry-migrate")
        assert job and any(c["type"] == "Failed" and c["status"] == "True" for c in job["status"]["conditions"])
        pod = cluster.pods(ns, "job-name=down-ferry-registry-migrate")[0]["metadata"]["name"]
        log = kubectl("-n", ns, "logs", pod).stdout
        assert "127.0.0.1:9" in log or "onnect" in log, log
        assert cluster.kube.find(f"/apis/apps/v1/namespaces/{ns}/deployments/down-ferry-registry") is None
    finally:
        uninstall_quietly(cluster.helm(ns), "down")
        kubectl("delete", "namespace", ns, "--wait=true", check=False, timeout=180)


def test_operator_only_runs_the_operator_alone(cluster, kubectl):
    ns = "ferry-ops"
    helm = cluster.helm(ns)
    values = merged(load_values("operator-only"), cluster.image_values())
    release = helm.install(str(CHART), "ops", values, namespace=ns, create_namespace=True, timeout=180)
    try:
        assert release["status"] == "deployed"
        pods = cluster.wait_ready(ns, "app.kubernetes.io/component=operator")
        assert len(pods) == 1
        deployments = {d["metadata"]["name"] for d in cluster.kube.items(f"/apis/apps/v1/namespaces/{ns}/deployments")}
        assert deployments == {"ops-ferry-operator"}
        assert cluster.kube.items(f"/api/v1/namespaces/{ns}/persistentvolumeclaims") == []
    finally:
        helm.uninstall("ops", timeout=120)
        kubectl("delete", "namespace", ns, "--wait=true", check=False, timeout=180)
    assert cluster.kube.find("/apis/rbac.authorization.k8s.io/v1/clusterroles/ops-ferry-operator") is None


def test_bad_values_fail_the_install_before_anything_is_created(cluster):
    helm = cluster.helm("ferry-bad")
    with pytest.raises(helm_python.HelmError) as refused:
        helm.install(str(CHART), "bad", load_values("bad-replicas-on-sqlite"), namespace="ferry-bad",
                     create_namespace=True, timeout=60)
    assert "schema" in str(refused.value)
    assert cluster.kube.find("/apis/apps/v1/namespaces/ferry-bad/deployments/bad-ferry-registry") is None


def test_a_service_monitor_without_its_crd_fails_the_install_and_says_why(cluster):
    # The cluster has no Prometheus Operator CRDs; the rendered ServiceMonitor itself is checked
    # by tests/helm/test_chart_render.py.
    helm = cluster.helm("ferry-sm")
    with pytest.raises(helm_python.HelmError) as refused:
        helm.install(str(CHART), "sm", load_values("servicemonitor"), namespace="ferry-sm",
                     create_namespace=True, timeout=60)
    assert "ServiceMonitor" in str(refused.value)
    assert cluster.kube.find("/apis/apps/v1/namespaces/ferry-sm/deployments/sm-ferry-registry") is None

