"""The README's "Run it on Kubernetes: progressive rollouts" commands, typed as written, on the real
cluster: next to the quickstart's registry (the chart, its own operator scaled to zero since the
user runs one by hand instead), `kubectl apply` of the CRD and the RBAC, `ferry operator` on the
user's machine, the example ModelDeployment, an alias move, and `kubectl get md -w` showing the
rollout start. The operator on the host creates real pods that run the image."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

import pytest

from conftest import REPO, ferry, uninstall_quietly, wait_for
from test_quickstart import EXAMPLE, INSTALL, MD, watch_lines
from traffic import first_answer

NS = "ferry"
# The README's operator block, in order (test_the_readme_operator_block_is_the_tested_one).
CRDS = "kubectl apply -f deploy/crds/ -f deploy/rbac/operator.yaml"
OPERATOR = "ferry operator --namespace ferry"
APPLY = "kubectl apply -f deploy/examples/modeldeployment.yaml"
ALIAS = "ferry model alias set fraud production 2"
WATCH = "kubectl -n ferry get md -w"
BLOCK = [CRDS, OPERATOR, APPLY, ALIAS, WATCH]


def test_the_readme_operator_block_is_the_tested_one():
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^### Run it on Kubernetes: progressive rollouts\n(.*?)(?=^##)", readme, re.M | re.S)
    assert section, "README.md has no '### Run it on Kubernetes: progressive rollouts' section"
    block = re.search(r"^```sh\n(.*?)^```", section.group(1), re.M | re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == BLOCK


@pytest.fixture
def release(cluster, kubectl):
    volume = cluster.provide_volume(NS, "ferry-registry-data")
    words = shlex.split(INSTALL)
    cluster.helm(NS).install(str(REPO / words[3]), "ferry", {}, namespace=NS, create_namespace=True, timeout=180)
    yield
    kubectl("delete", "md", "--all", "-n", NS, "--wait=true", check=False, timeout=120)
    uninstall_quietly(cluster.helm(NS), "ferry")
    kubectl("delete", "namespace", NS, "--wait=true", check=False, timeout=180)
    cluster.remove_volume(volume)


def test_the_operator_run_by_hand_rolls_out_an_alias_move_on_real_pods(cluster, kubectl, ferry_bin, release, tmp_path):
    cluster.wait_ready(NS, "app.kubernetes.io/component=registry")
    # The user runs the operator by hand instead of the chart's.
    kubectl("-n", NS, "scale", "deployment", "ferry-operator", "--replicas=0")
    tokens = {k: v.decode() for k, v in cluster.kube.secret(NS, "ferry-registry-tokens").items()}
    registry_ip = cluster.service_ip(NS, "ferry-registry")
    env = {"FERRY_REGISTRY": f"http://{registry_ip}:8080", "FERRY_TOKEN": tokens["write"]}
    model = str(REPO / "tests/fixtures/mlp.onnx")
    for args in (["--alias", "production"], ["--param", "lr=0.02"]):
        pushed = ferry(ferry_bin, "model", "push", model, "--name", "fraud", *args, env=env)
        assert pushed.returncode == 0, pushed.stderr

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ferry").symlink_to(ferry_bin)
    shell_env = {k: v for k, v in kubectl.env.items() if not k.startswith("FERRY_")}
    shell_env.update(env, PATH=f"{bin_dir}{os.pathsep}{kubectl.binary.parent}{os.pathsep}{os.environ['PATH']}")

    def sh(command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=shell_env, input=stdin,
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done

    applied = sh(CRDS)
    assert "customresourcedefinition.apiextensions.k8s.io/modeldeployments.ferry.dev" in applied.stdout
    log = open(tmp_path / "operator.log", "wb")
    operator = subprocess.Popen(["bash", "-c", f"exec {OPERATOR}"], env=shell_env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        # The example as written, but for the registry's address (no cluster DNS here).
        example = EXAMPLE.read_text().replace("http://ferry-registry.ferry.svc:8080", f"http://{registry_ip}:8080")
        assert shlex.split(APPLY)[:3] == ["kubectl", "apply", "-f"]
        sh("kubectl apply -f -", stdin=example)
        wait_for("version 1 deployed", lambda: cluster.kube.get(f"{MD}/fraud").get("status", {}).get("stableVersion") == 1,
                 timeout=120)
        pods = cluster.wait_ready(NS, "ferry.dev/model-deployment=fraud", count=2, timeout=240)
        assert all(p["spec"]["containers"][0]["image"] == cluster.default_image for p in pods), \
            "the operator's default image: this version's ferry image"
        serving = f"http://{cluster.service_ip(NS, 'fraud')}:8080"
        assert first_answer(serving, "fraud", tokens["read"])["model_version"] == "1"

        moved = sh(ALIAS)
        assert "moved alias fraud@production: 1 -> 2" in moved.stdout, moved.stdout
        started = time.monotonic()
        lines = watch_lines(kubectl, shlex.split(WATCH)[1:], want=2)
        status = wait_for("the rollout of version 2", lambda: (s := cluster.kube.get(f"{MD}/fraud")["status"])
                          .get("candidateVersion") == 2 and s, timeout=90)
        print(f"the operator run by hand started the rollout {time.monotonic() - started:.1f} s after the alias move")
        assert status["phase"] == "Shadowing", status
        watched = watch_lines(kubectl, shlex.split(WATCH)[1:], want=2)
        assert watched[1].split()[:4] == ["fraud", "Shadowing", "1", "2"], (lines, watched)
        assert operator.poll() is None, "the operator is still running"
    finally:
        kubectl("delete", "md", "fraud", "-n", NS, "--wait=true", check=False, timeout=120)
        operator.terminate()
        operator.wait(timeout=30)
        log.close()
    text = (tmp_path / "operator.log").read_text()
    assert operator.returncode == 0, text[-3000:]
