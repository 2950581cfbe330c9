"""The chart rendered offline: strict lint, valid manifests for Kubernetes 1.25 and the newest
version kubernetes-validate knows (the API server test covers 1.20), yamllint, the schema refusing
bad values, and what each value set must produce."""

from __future__ import annotations

import re

import helm_python
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml
from yamllint import config as yamllint_config
from yamllint import linter

from conftest import CHART, REPO, VALUES, by_kind, documents, load_values, render
from image import final_instruction

GOOD = ["defaults", "postgres-s3", "operator-only", "servicemonitor", "feedback-redis"]
BAD = {
    "bad-replicas-on-sqlite": "/registry/database/type",
    "bad-misspelt-key": "credentialSecret",
}
KUBE_VERSIONS = [kv_utils.all_versions()[0], kv_utils.latest_version()]
YAMLLINT = yamllint_config.YamlLintConfig(file=str(VALUES.parent / "yamllint.yaml"))
# Kinds from CRDs, which kubernetes-validate has no schema for: checked by their own tests.
CUSTOM_KINDS = {"ServiceMonitor"}


def component(d) -> str:
    return d["metadata"]["labels"]["app.kubernetes.io/component"]


def workloads(docs, include_redis: bool = False):
    """(name, pod spec) of every Deployment and Job running Ferry (and the in-chart Redis when
    asked)."""
    for _, d in docs:
        if d["kind"] in ("Deployment", "Job") and (include_redis or component(d) != "redis"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def test_every_value_set_is_tested():
    files = {p.stem for p in VALUES.glob("*.yaml")}
    assert files == set(GOOD) | set(BAD)


@pytest.mark.parametrize("values", GOOD)
def test_the_chart_lints_cleanly_in_strict_mode(values):
    report = helm_python.lint(CHART, load_values(values), strict=True, kube_version="v1.20.2")
    assert report["errors"] == []
    # Severity 1 is information; the only one allowed is the missing icon (Ferry has no logo).
    findings = [m for m in report["messages"] if m["error"] != "icon is recommended"]
    assert findings == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", GOOD)
def test_every_rendered_manifest_validates_strictly(chart, values, version):
    docs = documents(render(chart, load_values(values)))
    assert docs
    for path, doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path}: {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")


def test_the_crd_and_the_example_validate_strictly():
    crd = yaml.safe_load((CHART / "crds" / "modeldeployments.ferry.dev.yaml").read_text())
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)


@pytest.mark.parametrize("values", GOOD)
def test_every_render_passes_yamllint(chart, values):
    rendered = render(chart, load_values(values))
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        problems = [str(p) for p in linter.run(text, YAMLLINT)]
        assert problems == [], f"{path}:\n" + "\n".join(problems)


def test_the_chart_sources_and_the_example_pass_yamllint():
    files = [CHART / "Chart.yaml", CHART / "values.yaml", REPO / "deploy/examples/modeldeployment.yaml"]
    files += sorted(VALUES.glob("*.yaml"))
    for path in files:
        problems = [str(p) for p in linter.run(path.read_text(), YAMLLINT)]
        assert problems == [], f"{path}:\n" + "\n".join(problems)


@pytest.mark.parametrize("values,names", BAD.items())
def test_bad_values_fail_schema_validation_naming_the_key(chart, values, names):
    with pytest.raises(helm_python.HelmValuesError) as refused:
        chart.validate_schema(load_values(values))
    assert names in str(refused.value)
    # And so does rendering, which is what `helm install` does first.
    with pytest.raises(helm_python.HelmValuesError):
        render(chart, load_values(values))


@pytest.mark.parametrize(
    "values,names",
    [
        ({"registry": {"database": {"type": "external"}}}, "existingSecret"),
        ({"registry": {"objectStore": {"type": "s3", "url": "gs://bucket"}}}, "/registry/objectStore/url"),
        ({"registry": {"objectStore": {"type": "gcs"}}}, "/registry/objectStore/url"),
        ({"serving": {"enabled": True}}, "/serving"),
        ({"registry": {"maxUploadSize": "lots"}}, "maxUploadSize"),
        ({"registry": {"resources": {"limits": {"memory": "1 gig"}}}}, "memory"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
    ],
)
def test_the_schema_refuses_inconsistent_settings(chart, values, names):
    with pytest.raises(helm_python.HelmValuesError) as refused:
        chart.validate_schema(values)
    assert names in str(refused.value)


@pytest.mark.parametrize("values", GOOD)
def test_every_pod_runs_as_the_image_user_without_privileges(chart, values):
    uid = int(final_instruction("USER")[0].split(":")[0])
    docs = documents(render(chart, load_values(values)))
    for name, pod in workloads(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (name, c["name"])
            # Every path the binary writes is a volume: /tmp, and the data or cache folder.
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, (name, c["name"])


def routes(source: str) -> set[str]:
    return set(re.findall(r'\.route\(\s*"([^"]+)"', (REPO / source).read_text()))


@pytest.mark.parametrize("values", ["defaults", "postgres-s3"])
def test_probes_ask_routes_the_binary_serves_on_a_declared_port(chart, values):
    registry_routes = routes("registry/src/api/mod.rs")
    serving_routes = routes("serving/src/api/mod.rs") | routes("src/server.rs")
    expected = {
        "registry": ("/healthz", "/readyz", registry_routes),
        "serving": ("/v2/health/live", "/v2/health/ready", serving_routes),
        "operator": ("/healthz", "/readyz", None),
    }
    docs = documents(render(chart, load_values(values)))
    deployments = by_kind(docs, "Deployment")
    assert deployments
    for name, d in deployments.items():
        if component(d) == "redis":
            continue  # not Ferry: its probes ask redis-cli (test_the_in_chart_redis_…)
        live, ready, served = expected[component(d)]
        container = d["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == live
        assert container["readinessProbe"]["httpGet"]["path"] == ready
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, (name, probe)
                if served is not None:
                    assert container[probe]["httpGet"]["path"] in served, (name, probe)


@pytest.mark.parametrize("values", GOOD)
def test_services_select_exactly_their_component_pods_by_named_port(chart, values):
    docs = documents(render(chart, load_values(values)))
    deployments = by_kind(docs, "Deployment")
    for name, svc in by_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        matched = [
            d for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, name
        container = matched[0]["spec"]["template"]["spec"]["containers"][0]
        names = {p["name"] for p in container["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, name
        # Deployment selectors are immutable: they must not carry the version.
        assert "app.kubernetes.io/version" not in matched[0]["spec"]["selector"]["matchLabels"]


def normalized_rules(rules):
    return sorted(
        (tuple(sorted(r.get("apiGroups", []))), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
        for r in rules
    )


def test_the_operator_rbac_is_the_one_deploy_rbac_ships(chart):
    shipped = [d for d in yaml.safe_load_all((REPO / "deploy/rbac/operator.yaml").read_text()) if d]
    shipped_role = next(d for d in shipped if d["kind"] == "ClusterRole")
    docs = documents(render(chart, {}))
    role = next(iter(by_kind(docs, "ClusterRole").values()))
    assert normalized_rules(role["rules"]) == normalized_rules(shipped_role["rules"])
    binding = next(iter(by_kind(docs, "ClusterRoleBinding").values()))
    deployment = by_kind(docs, "Deployment")["ferry-operator"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{
        "kind": "ServiceAccount",
        "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "namespace": "ferry",
    }]


def test_the_chart_crd_is_the_generated_one(chart):
    generated = (REPO / "deploy/crds/modeldeployments.ferry.dev.yaml").read_text()
    assert (CHART / "crds/modeldeployments.ferry.dev.yaml").read_text() == generated
    assert [c["name"] for c in chart.crds] == ["crds/modeldeployments.ferry.dev.yaml"]


def test_sqlite_registry_is_single_and_migrates_in_its_own_pod(chart):
    docs = documents(render(chart, load_values("defaults")))
    registry = by_kind(docs, "Deployment")["ferry-registry"]
    spec = registry["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert [c["args"][:2] for c in pod["initContainers"]] == [["registry", "migrate"]]
    claim = by_kind(docs, "PersistentVolumeClaim")["ferry-registry-data"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "ferry-registry-data"}} in pod["volumes"]
    assert by_kind(docs, "Job") == {}
    # Migration and server open the same database and blob store.
    init_args = pod["initContainers"][0]["args"][2:]
    assert set(init_args) <= set(pod["containers"][0]["args"])


def test_external_stores_run_several_replicas_and_migrate_in_a_hook(chart):
    docs = documents(render(chart, load_values("postgres-s3")))
    registry = by_kind(docs, "Deployment")["ferry-registry"]
    assert registry["spec"]["replicas"] == 2
    assert registry["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = registry["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert by_kind(docs, "PersistentVolumeClaim") == {}
    container = pod["containers"][0]
    assert "--blob-url=s3://ferry-test/helm" in container["args"]
    assert "--s3-allow-http=true" in container["args"]
    assert "--blob-option=aws_virtual_hosted_style_request=false" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "ferry-s3"}}]
    database = {"name": "FERRY_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": "ferry-database", "key": "url"}}}
    assert database in container["env"]
    job = by_kind(docs, "Job")["ferry-registry-migrate"]
    hooks = job["metadata"]["annotations"]
    assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in hooks["helm.sh/hook-delete-policy"]
    migrate = job["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"][:2] == ["registry", "migrate"]
    assert database in migrate["env"]
    # Hooks run before the release's ServiceAccounts exist.
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_several_replicas_get_a_disruption_budget_and_one_replica_none(chart):
    docs = documents(render(chart, load_values("postgres-s3")))
    budgets = by_kind(docs, "PodDisruptionBudget")
    assert set(budgets) == {"ferry-registry", "ferry-serving"}
    deployments = by_kind(docs, "Deployment")
    for name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["maxUnavailable"] == 1
        # It selects exactly the Deployment's pods.
        assert budget["spec"]["selector"] == deployments[name]["spec"]["selector"]
    defaults = documents(render(chart, load_values("defaults")))
    assert by_kind(defaults, "PodDisruptionBudget") == {}


def test_serving_reads_the_release_registry_with_the_narrow_serving_token_and_holds_no_admin(chart):
    docs = documents(render(chart, load_values("postgres-s3")))
    pod = by_kind(docs, "Deployment")["ferry-serving"]["spec"]["template"]["spec"]
    serving = pod["containers"][0]
    assert "--registry=http://ferry-registry.ferry.svc:8080" in serving["args"]
    assert "--model=fraud@production" in serving["args"]
    token = next(e for e in serving["env"] if e["name"] == "FERRY_REGISTRY_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "ferry-registry-tokens", "key": "serving"}
    # Its clients' tokens: the generated file without admin.
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")["secret"]
    assert tokens["items"] == [{"key": "serving-tokens", "path": "tokens"}]
    registry = by_kind(docs, "Deployment")["ferry-registry"]["spec"]["template"]["spec"]
    assert next(v for v in registry["volumes"] if v["name"] == "tokens")["secret"]["items"] == [
        {"key": "tokens", "path": "tokens"}]


def test_operator_only_renders_nothing_of_the_registry(chart):
    docs = documents(render(chart, load_values("operator-only")))
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for _, d in docs}
    assert components == {"operator"}
    assert {d["kind"] for _, d in docs} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}


def test_generated_tokens_are_one_per_role_and_long_enough(chart):
    docs = documents(render(chart, {}))
    secret = by_kind(docs, "Secret")["ferry-registry-tokens"]
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    import hashlib

    def digest(role):
        return "sha256:" + hashlib.sha256(data[role].encode()).hexdigest()

    roles = ["admin", "write", "read", "serving", "feedback"]
    assert all(len(data[r]) >= 16 for r in roles)
    assert len({data[r] for r in roles}) == 5
    # The tokens files hold digests only (`ROLE:sha256:HEX`): no token is in them.
    lines = dict(line.split(":", 1) for line in data["tokens"].splitlines())
    assert lines == {r: digest(r) for r in roles}
    # Serving pods' file: what clients present (business systems' feedback included), never
    # admin (nor the pods' own registry token).
    serving = dict(line.split(":", 1) for line in data["serving-tokens"].splitlines())
    assert serving == {r: digest(r) for r in ["write", "read", "feedback"]}
    for r in roles:
        assert data[r] not in data["tokens"] + data["serving-tokens"]
    # Marked for the operator, which reads tokens from no other Secret.
    assert secret["metadata"]["labels"]["ferry.dev/registry-token"] == "true"


def test_the_operator_gets_its_allow_lists(chart):
    values = {"operator": {"allowedRegistries": ["http://ferry-registry.ferry.svc:8080"],
                           "allowedImages": ["ghcr.io/ferry-ml/", "registry.example/ml/"]}}
    docs = documents(render(chart, values))
    args = by_kind(docs, "Deployment")["ferry-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allowed-registry=http://ferry-registry.ferry.svc:8080" in args
    assert [a for a in args if a.startswith("--allowed-image=")] == [
        "--allowed-image=ghcr.io/ferry-ml/", "--allowed-image=registry.example/ml/"]
    # None by default: every registry and image (the warning at start says so).
    default = by_kind(documents(render(chart, {})), "Deployment")["ferry-operator"]
    assert not [a for a in default["spec"]["template"]["spec"]["containers"][0]["args"] if "--allowed-" in a]


PROMETHEUS_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def test_the_service_monitor_scrapes_every_service_on_its_http_port(chart):
    docs = documents(render(chart, load_values("servicemonitor")))
    monitors = by_kind(docs, "ServiceMonitor")
    assert len(monitors) == 1
    monitor = next(iter(monitors.values()))
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = by_kind(docs, "Service")
    assert {n for n, s in services.items() if selector.items() <= s["metadata"]["labels"].items()} == set(services)
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ferry"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["path"] == "/metrics"
        assert PROMETHEUS_DURATION.match(endpoint["interval"]) and PROMETHEUS_DURATION.match(endpoint["scrapeTimeout"])
        for service in services.values():
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert "/metrics" in routes("registry/src/api/mod.rs") and "/metrics" in routes("src/server.rs")


@pytest.mark.parametrize("values", [{"networkPolicy": {"enabled": True}}, load_values("servicemonitor"),
                                    {"networkPolicy": {"enabled": True}, "serving": {"enabled": True, "allEndpoints": True}}])
def test_network_policies_never_admit_everyone(chart, values):
    docs = documents(render(chart, values))
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) >= {"ferry-registry", "ferry-operator"}
    for name, policy in policies.items():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            # A rule without `from` admits every source.
            assert rule.get("from"), name
    operator_rules = policies["ferry-operator"]["spec"]["ingress"]
    metrics_from = values["networkPolicy"].get("metricsFrom", [])
    assert operator_rules == ([{"ports": [{"port": "http", "protocol": "TCP"}], "from": metrics_from}] if metrics_from else [])


def test_notes_tell_the_next_command(chart):
    notes = render(chart, {})["ferry/templates/NOTES.txt"]
    assert "kubectl -n ferry get secret ferry-registry-tokens -o jsonpath='{.data.write}' | base64 -d" in notes
    assert "kubectl -n ferry port-forward svc/ferry-registry 8080:8080" in notes
    assert "ferry model push model.onnx --name fraud --alias production" in notes
    operator_only = render(chart, load_values("operator-only"))["ferry/templates/NOTES.txt"]
    assert "port-forward" not in operator_only and "get modeldeployments -w" in operator_only


# Maps documented as a whole: their keys are free.
WHOLE = {"resources", "podSecurityContext", "containerSecurityContext", "nodeSelector", "affinity",
         "commonLabels", "options", "annotations", "labels", "podAnnotations"}


def value_leaves(prefix, value):
    if isinstance(value, dict) and value and prefix.rsplit(".", 2)[-2:][0] not in WHOLE:
        for k, v in value.items():
            yield from value_leaves(f"{prefix}{k}.", v)
    else:
        yield prefix[:-1], value


def test_the_readme_documents_every_value_with_its_default(chart):
    readme = (CHART / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", readme, re.M)
    documented = {key: default for key, default in rows}
    values = dict(value_leaves("", chart.values))
    assert set(documented) == set(values)
    for key, value in values.items():
        assert yaml.safe_load(documented[key]) == value, key


def test_a_watched_namespace_gets_a_role_there_instead_of_a_cluster_role(chart):
    docs = documents(render(chart, {"operator": {"watchNamespace": "ml"}}))
    assert by_kind(docs, "ClusterRole") == {} and by_kind(docs, "ClusterRoleBinding") == {}
    role = by_kind(docs, "Role")["ferry-operator"]
    binding = by_kind(docs, "RoleBinding")["ferry-operator"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ml"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-operator"}
    assert binding["subjects"][0]["namespace"] == "ferry"
    shipped = next(d for d in yaml.safe_load_all((REPO / "deploy/rbac/operator.yaml").read_text())
                   if d and d["kind"] == "ClusterRole")
    assert normalized_rules(role["rules"]) == normalized_rules(shipped["rules"])
    args = by_kind(docs, "Deployment")["ferry-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args


@pytest.mark.parametrize("image", [{}, {"image": {"repository": "registry.example/ferry", "tag": "0.2.0"}},
                                   {"image": {"digest": "sha256:" + "a" * 64}}])
def test_the_operator_runs_model_deployments_on_the_chart_image(chart, image):
    docs = documents(render(chart, image))
    deployments = by_kind(docs, "Deployment")
    images = {c["image"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1
    args = deployments["ferry-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--serving-image={images.pop()}" in args


def test_a_feedback_store_reaches_every_ferry_process_and_the_operators_pods(chart):
    values = load_values("postgres-s3")
    values["feedback"] = {"redisUrl": "redis://redis.ferry.svc:6379/0"}
    docs = documents(render(chart, values))
    for name, pod in workloads(docs):
        for c in pod["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("FERRY_FEEDBACK_STORE") == "redis://redis.ferry.svc:6379/0", name
    # Without one, no process is told of any.
    docs = documents(render(chart, load_values("postgres-s3")))
    for name, pod in workloads(docs):
        for c in pod["containers"]:
            assert all(e["name"] != "FERRY_FEEDBACK_STORE" for e in c.get("env", [])), name


def test_a_feature_store_reaches_every_ferry_process_and_the_operators_pods(chart):
    values = load_values("postgres-s3")
    values["features"] = {"redisUrl": "redis://features.ferry.svc:6379/2"}
    docs = documents(render(chart, values))
    for name, pod in workloads(docs):
        for c in pod["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("FERRY_FEATURE_STORE") == "redis://features.ferry.svc:6379/2", name
    docs = documents(render(chart, load_values("postgres-s3")))
    for name, pod in workloads(docs):
        for c in pod["containers"]:
            assert all(e["name"] != "FERRY_FEATURE_STORE" for e in c.get("env", [])), name


def test_the_in_chart_redis_is_shared_by_every_ferry_process_bounded_and_unprivileged(chart):
    values = load_values("feedback-redis")
    docs = documents(render(chart, values))
    redis = by_kind(docs, "Deployment")["ferry-redis"]
    pod = redis["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 999
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["image"] == "docker.io/library/redis:7.4-bookworm"
    args = c["args"]
    # No persistence, bounded memory, evicting the predictions nearest their expiry.
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert args[args.index("--maxmemory") + 1] == "256mb"
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-ttl"
    assert c["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert c["resources"]["limits"]["memory"] == "384Mi"
    service = by_kind(docs, "Service")["ferry-redis"]
    assert service["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]
    # Every Ferry process (and so the operator's pods) joins feedback through it.
    url = "redis://ferry-redis.ferry.svc:6379"
    for name, spec in workloads(docs):
        for container in spec["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("FERRY_FEEDBACK_STORE") == url, name
    # A Redis of one's own wins; a fixed ClusterIP is kept.
    values["feedback"]["redisUrl"] = "redis://elsewhere:6379/1"
    values["feedback"]["redis"]["service"] = {"clusterIP": "10.96.0.200"}
    docs = documents(render(chart, values))
    assert by_kind(docs, "Service")["ferry-redis"]["spec"]["clusterIP"] == "10.96.0.200"
    for name, spec in workloads(docs):
        env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
        assert env.get("FERRY_FEEDBACK_STORE") == "redis://elsewhere:6379/1", name
