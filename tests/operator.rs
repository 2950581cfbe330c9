//! The operator's reconcile and rollout logic, quickly, against a real Kubernetes API server
//! alone (1.20, built from Debian's sources; `scripts/kube-apiserver.sh` starts it and
//! `scripts/test.sh` exports `FERRY_TEST_KUBECONFIG`). Without a kubelet the serving pods are
//! not run here: `ferry up` on the host is the registry and the serving replica, and each
//! `ModelDeployment` points at it. Real traffic and feedback go to `ferry up`'s endpoint, the
//! operator judges the registry's analysis of it, and the tests watch the resource, its
//! children, the endpoint and the events. Pods, the image, Services, probes and rollouts on
//! them are tested on a real one-node cluster in `tests/cluster/`.
//!
//! The operator runs with the service account and ClusterRole of `deploy/rbac/operator.yaml`
//! (a TokenRequest token), so the shipped RBAC is exercised too. Each test has its own
//! namespace, registry and operator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_operator::ModelDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "e2e-write-token-0123456789abcdef";
const MODEL: &str = "fraud";

/// The API server's kubeconfig, or `None` (with the reason) to skip outside CI.
fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FERRY_TEST_KUBECONFIG") {
        Some(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
        other => {
            let why = match other {
                Some(p) => format!(
                    "FERRY_TEST_KUBECONFIG={} is not a file",
                    p.to_string_lossy()
                ),
                None => "FERRY_TEST_KUBECONFIG is not set".to_string(),
            };
            assert!(
                !in_ci(),
                "a Kubernetes API server is required when CI=true: {why}"
            );
            skipped(&format!(
                "no Kubernetes API server ({why}); scripts/test.sh starts one, or run \
                 `scripts/kube-apiserver.sh start /tmp/kube` and export \
                 FERRY_TEST_KUBECONFIG=/tmp/kube/kubeconfig"
            ));
            None
        }
    }
}

async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Server-side applies every document of a YAML file, typed by kind.
async fn apply_file(client: &Client, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let params = PatchParams::apply("ferry-e2e").force();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let name = value["metadata"]["name"].as_str().unwrap().to_string();
        let namespace = value["metadata"]["namespace"].as_str().map(String::from);
        match value["kind"].as_str().unwrap() {
            "CustomResourceDefinition" => {
                let api: Api<CustomResourceDefinition> = Api::all(client.clone());
                api.patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            "ServiceAccount" => {
                let ns = namespace.unwrap();
                ensure_namespace(client, &ns).await;
                let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
                api.patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            "ClusterRole" => {
                let api: Api<ClusterRole> = Api::all(client.clone());
                api.patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                let api: Api<ClusterRoleBinding> = Api::all(client.clone());
                api.patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            other => panic!(
                "{} has a {other}, which this test does not apply",
                path.display()
            ),
        }
    }
}

async fn ensure_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(name, &PatchParams::apply("ferry-e2e"), &Patch::Apply(&ns))
        .await
        .unwrap();
}

/// Everything one test needs: a namespace, a registry with two versions, the token Secret, and
/// a kubeconfig with the operator's service-account token.
struct Cluster {
    admin: Client,
    namespace: String,
    dir: tempfile::TempDir,
    registry: Server,
    operator_kubeconfig: PathBuf,
    operator: Option<Server>,
}

impl Cluster {
    async fn start(kubeconfig: &Path) -> Cluster {
        let admin = client_from(kubeconfig).await;
        let root = repo_root();
        apply_file(
            &admin,
            &root.join("deploy/crds/modeldeployments.ferry.dev.yaml"),
        )
        .await;
        apply_file(&admin, &root.join("deploy/rbac/operator.yaml")).await;
        wait_for_crd(&admin).await;

        let namespace = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        ensure_namespace(&admin, &namespace).await;
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
        // Labelled for the operator, as the chart labels its tokens Secret.
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "ferry-token", "labels": {"ferry.dev/registry-token": "true"}},
            "stringData": {"token": TOKEN, "tokens": format!("write:{TOKEN}\n")}
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();

        // The operator's identity: the shipped service account, a short-lived token for it.
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "ferry");
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request("ferry-operator", &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let admin_text = std::fs::read_to_string(kubeconfig).unwrap();
        let operator_text: String = admin_text
            .lines()
            .map(|line| match line.split_once("token:") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}token: {token}"),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(
            admin_text,
            operator_text,
            "no token line in {}",
            kubeconfig.display()
        );
        let operator_kubeconfig = dir.path().join("operator-kubeconfig");
        std::fs::write(&operator_kubeconfig, operator_text).unwrap();

        let registry = Server::start(
            dir.path(),
            &["up", "--no-demo", "--token", &format!("write:{TOKEN}")],
        );
        for _ in 0..2 {
            push(dir.path(), &registry.url());
        }
        Cluster {
            admin,
            namespace,
            dir,
            registry,
            operator_kubeconfig,
            operator: None,
        }
    }

    fn start_operator(&mut self) {
        self.start_operator_with(&[]);
    }

    fn start_operator_with(&mut self, extra: &[&str]) {
        let kubeconfig = self.operator_kubeconfig.to_str().unwrap().to_string();
        let mut args = vec![
            "operator",
            "--namespace",
            &self.namespace,
            "--alias-resync",
            "5s",
        ];
        args.extend_from_slice(extra);
        let mut operator = Server::spawn(self.dir.path(), &args, &[("KUBECONFIG", &kubeconfig)]);
        operator.wait_ready();
        self.operator = Some(operator);
    }

    fn operator_logs(&self) -> String {
        self.operator.as_ref().map(Server::logs).unwrap_or_default()
    }

    fn mds(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    async fn create(&self, name: &str, spec: Value) {
        let md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .unwrap();
        self.mds()
            .create(&PostParams::default(), &md)
            .await
            .unwrap();
    }

    /// Polls the resource until `check` holds on its status (as JSON), for up to `limit`.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let md = self.mds().get(name).await.unwrap();
            let status = serde_json::to_value(&md.status).unwrap();
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status:\n{}\noperator log:\n{}",
                serde_json::to_string_pretty(&status).unwrap(),
                tail(&self.operator_logs())
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn registry_get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.registry.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn events(&self, endpoint: &str) -> Vec<Value> {
        let (_, page) = self.registry_get("/api/v1/events?after=0&limit=1000").await;
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["subject"] == endpoint)
            .cloned()
            .collect()
    }

    async fn alias(&self, version: i64) {
        let out = ferry(
            self.dir.path(),
            &[
                "model",
                "alias",
                "set",
                MODEL,
                "production",
                &version.to_string(),
            ],
            &[
                ("FERRY_REGISTRY", &self.registry.url()),
                ("FERRY_TOKEN", TOKEN),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn wait_for_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for _ in 0..100 {
        let crd = api.get("modeldeployments.ferry.dev").await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the CRD was not established");
}

fn push(dir: &Path, registry: &str) -> i64 {
    push_file(dir, registry, &fixture("mlp.onnx"))
}

fn push_file(dir: &Path, registry: &str, path: &Path) -> i64 {
    push_model(dir, registry, MODEL, path, &[], &[("FERRY_TOKEN", TOKEN)])
}

/// A ModelDeployment spec with short steps, against the test's registry.
fn spec(cluster: &Cluster, target: Value, steps: Value, analysis: Value) -> Value {
    let mut spec = json!({
        "model": MODEL,
        "replicas": 2,
        "image": "ferry:e2e",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "registry": {
            "url": cluster.registry.url(),
            "tokenSecret": {"name": "ferry-token", "key": "token"},
            "servingTokenSecret": {"name": "ferry-token", "key": "token"}
        },
        "auth": {"tokensSecret": {"name": "ferry-token", "key": "tokens"}},
        "strategy": {"canary": {"steps": steps, "analysis": analysis}},
    });
    for (k, v) in target.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// Requests with feedback, as a client of the endpoint would send them: every answer gets the
/// reward its version has in `rewards` right away.
struct Traffic {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(base: &str, endpoint: &str, rewards: BTreeMap<String, f64>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let answers: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let body: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("mlp-request.json")).unwrap())
                .unwrap();
        let infer = format!("{base}/v2/models/{endpoint}/infer");
        let feedback = format!("{base}/v2/models/{endpoint}/feedback");
        let task = tokio::spawn({
            let stop = stop.clone();
            let answers = answers.clone();
            async move {
                let client = reqwest::Client::new();
                let request = json!({"inputs": body["inputs"]});
                while !stop.load(Ordering::Relaxed) {
                    let Ok(response) = client
                        .post(&infer)
                        .bearer_auth(TOKEN)
                        .json(&request)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let id = response
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let status = response.status().as_u16();
                    let ok = response.status().is_success();
                    let answer: Value = response.json().await.unwrap_or_default();
                    let version = answer["model_version"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if !ok {
                        *answers
                            .lock()
                            .unwrap()
                            .entry(format!("error {status}"))
                            .or_default() += 1;
                    } else {
                        *answers.lock().unwrap().entry(version.clone()).or_default() += 1;
                        if let Some(reward) = rewards.get(&version) {
                            let _ = client
                                .post(&feedback)
                                .bearer_auth(TOKEN)
                                .json(&json!({"id": id, "reward": reward}))
                                .send()
                                .await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Traffic {
            stop,
            answers,
            task,
        }
    }

    async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.answers.lock().unwrap().clone()
    }
}

fn rewards(pairs: &[(i64, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(v, r)| (v.to_string(), *r)).collect()
}

fn reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "rollout.step")
        .map(|e| e["data"]["reason"].as_str().unwrap().to_string())
        .collect()
}

fn step_and_phase(status: &Value) -> (Value, Value) {
    (status["currentStep"].clone(), status["phase"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_candidate_is_promoted_through_every_step_and_the_children_are_owned() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    if !have_onnxruntime() {
        return;
    }
    let mut cluster = Cluster::start(&kubeconfig).await;
    cluster.alias(1).await;
    cluster.start_operator();
    let name = "good";
    cluster
        .create(
            name,
            spec(
                &cluster,
                json!({"alias": "@production"}),
                json!([{"weight": 20, "pause": "6s"}, {"weight": 50, "pause": "6s"}, {"weight": 100, "pause": "6s"}]),
                json!({"interval": "6s", "minRequests": 10, "minRewards": 5, "minRewardRatio": 0.8, "maxInconclusive": 0}),
            ),
        )
        .await;
    let deployed = cluster
        .wait_for(name, "v1 deployed", Duration::from_secs(60), |s| {
            s["phase"] == "Promoted" && s["stableVersion"] == 1
        })
        .await;
    assert_eq!(deployed["reason"], "Deployed");
    assert_eq!(deployed["observedGeneration"], 1);
    let ready = deployed["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");

    // (c) the children and the endpoint.
    let md = cluster.mds().get(name).await.unwrap();
    let uid = md.uid().unwrap();
    assert!(md.finalizers().contains(&"ferry.dev/endpoint".to_string()));
    let deployment = Api::<Deployment>::namespaced(cluster.admin.clone(), &cluster.namespace)
        .get(name)
        .await
        .unwrap();
    let service = Api::<Service>::namespaced(cluster.admin.clone(), &cluster.namespace)
        .get(name)
        .await
        .unwrap();
    for owners in [
        deployment.metadata.owner_references.clone().unwrap(),
        service.metadata.owner_references.clone().unwrap(),
    ] {
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ModelDeployment");
        assert_eq!(owners[0].api_version, "ferry.dev/v1alpha1");
        assert_eq!(owners[0].name, name);
        assert_eq!(owners[0].uid, uid);
        assert_eq!(owners[0].controller, Some(true));
    }
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"ferry-operator".to_string()),
        "{managers:?}"
    );
    let dspec = deployment.spec.clone();
    assert_eq!(dspec.replicas, Some(2));
    let pod = dspec.template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("ferry:e2e"));
    let args = container.args.clone().unwrap();
    assert_eq!(
        args[..5],
        [
            "serving",
            "--registry",
            cluster.registry.url().as_str(),
            "--endpoint",
            name
        ]
    );
    let token_env = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "FERRY_REGISTRY_TOKEN")
        .unwrap();
    let key_ref = token_env.value_from.unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("ferry-token", "token")
    );
    assert_eq!(
        container
            .readiness_probe
            .clone()
            .unwrap()
            .http_get
            .unwrap()
            .path
            .as_deref(),
        Some("/v2/health/ready")
    );
    assert_eq!(
        container
            .liveness_probe
            .clone()
            .unwrap()
            .http_get
            .unwrap()
            .path
            .as_deref(),
        Some("/v2/health/live")
    );
    let requests = container.resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    assert_eq!(
        container.security_context.clone().unwrap().run_as_non_root,
        Some(true)
    );
    let sspec = service.spec.unwrap();
    assert_eq!(
        sspec.selector.unwrap(),
        dspec.selector.match_labels.unwrap(),
        "the Service selects the Deployment's pods"
    );
    assert_eq!(sspec.ports.unwrap()[0].port, 8080);
    let (status, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(status, 200, "{endpoint}");
    assert_eq!(endpoint["model"], MODEL);
    assert_eq!(endpoint["stable"], 1);
    assert!(endpoint.get("canary").is_none(), "{endpoint}");

    // (a) moving the alias starts a rollout; equal rewards pass every step.
    let traffic = Traffic::start(
        &cluster.registry.url(),
        name,
        rewards(&[(1, 1.0), (2, 1.0)]),
    );
    let started = Instant::now();
    cluster.alias(2).await;
    let promoted = cluster
        .wait_for(name, "v2 promoted", Duration::from_secs(150), |s| {
            s["phase"] == "Promoted" && s["stableVersion"] == 2
        })
        .await;
    let took = started.elapsed();
    let answers = traffic.stop().await;
    assert_eq!(promoted["reason"], "Promoted", "{promoted}");
    assert!(promoted.get("candidateVersion").is_none(), "{promoted}");
    assert_eq!(promoted["lastAnalysis"]["verdict"], "Passed");
    assert_eq!(promoted["lastAnalysis"]["step"], 3);
    assert!(answers.get("2").copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(
        took >= Duration::from_secs(18),
        "three 6 s holds took {took:?}"
    );
    let events = cluster.events(name).await;
    assert_eq!(
        reasons(&events),
        [
            "Deployed",
            "RolloutStarted",
            "StepAdvanced",
            "StepAdvanced",
            "Promoted"
        ],
        "{events:#?}"
    );
    // The policy went through every step's weight, then the candidate became stable.
    let policies: Vec<(i64, Option<f64>)> = events
        .iter()
        .filter(|e| e["type"] == "endpoint.updated")
        .map(|e| {
            let p = &e["data"]["policy"];
            (
                p["stable"].as_i64().unwrap(),
                p["canary"]["weight"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [
            (1, None),
            (1, Some(0.2)),
            (1, Some(0.5)),
            (1, Some(1.0)),
            (2, None)
        ]
    );
    let (_, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(endpoint["stable"], 2);
    assert!(endpoint.get("canary").is_none(), "{endpoint}");

    // Kubernetes Events tell the same story.
    let kube_events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.admin.clone(), &cluster.namespace);
    let listed = kube_events.list(&Default::default()).await.unwrap();
    let kube_reasons: Vec<String> = listed
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in ["Deployed", "RolloutStarted", "StepAdvanced", "Promoted"] {
        assert!(
            kube_reasons.iter().any(|r| r == reason),
            "{reason} missing from {kube_reasons:?}"
        );
    }

    // Deleting the resource deletes the endpoint (finalizer), then the resource goes.
    cluster
        .mds()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.mds().get_opt(name).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the finalizer was not removed:\n{}",
            tail(&cluster.operator_logs())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(status, 404, "the endpoint outlived its ModelDeployment");
    eprintln!("promotion through 3 steps took {took:?}");
}

/// Deploys version 1 as `name`, sends traffic (with `rewards` as feedback), moves the spec to
/// `candidate` with two short canary steps (20%, 50%) judged with `checks` on top of a 6 s
/// interval and 10 requests, and waits for the rollout to end RolledBack. Returns the status then,
/// and the answers per version (`error <status>` for failures) while it ran.
async fn roll_back_a_candidate(
    cluster: &Cluster,
    name: &str,
    candidate: i64,
    checks: Value,
    rewards: BTreeMap<String, f64>,
) -> (Value, BTreeMap<String, u64>) {
    let mut analysis = json!({"interval": "6s", "minRequests": 10, "maxInconclusive": 0});
    for (k, v) in checks.as_object().unwrap() {
        analysis[k] = v.clone();
    }
    cluster
        .create(
            name,
            spec(
                cluster,
                json!({"version": 1}),
                json!([{"weight": 20, "pause": "6s"}, {"weight": 50, "pause": "6s"}]),
                analysis,
            ),
        )
        .await;
    cluster
        .wait_for(name, "v1 deployed", Duration::from_secs(60), |s| {
            s["stableVersion"] == 1
        })
        .await;
    let traffic = Traffic::start(&cluster.registry.url(), name, rewards);
    let patch = json!({"spec": {"version": candidate}});
    cluster
        .mds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let what = format!("v{candidate} rolled back");
    let rolled_back = cluster
        .wait_for(name, &what, Duration::from_secs(120), |s| {
            s["phase"] == "RolledBack"
        })
        .await;
    (rolled_back, traffic.stop().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_a_lower_reward_is_rolled_back_at_its_first_step() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    if !have_onnxruntime() {
        return;
    }
    let mut cluster = Cluster::start(&kubeconfig).await;
    cluster.start_operator();
    let name = "worse";
    let (rolled_back, answers) = roll_back_a_candidate(
        &cluster,
        name,
        2,
        json!({"minRewards": 5, "minRewardRatio": 0.8}),
        rewards(&[(1, 1.0), (2, 0.2)]),
    )
    .await;
    assert_eq!(rolled_back["reason"], "RewardTooLow", "{rolled_back}");
    assert_eq!(rolled_back["stableVersion"], 1);
    assert_eq!(
        rolled_back["candidateVersion"], 2,
        "kept on record as the rejected candidate"
    );
    assert_eq!(rolled_back["currentWeight"], 0.0);
    let analysis = &rolled_back["lastAnalysis"];
    assert_eq!(analysis["step"], 1, "judged at its first step");
    assert_eq!(analysis["verdict"], "Failed");
    assert_eq!(analysis["decidedBy"], "rewardRatio");
    let reward = analysis["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "rewardRatio")
        .unwrap();
    assert!(reward["value"].as_f64().unwrap() < 0.8, "{reward}");
    assert_eq!(reward["threshold"], 0.8);
    let degraded = rolled_back["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("RewardTooLow"))
    );

    let events = cluster.events(name).await;
    assert_eq!(
        reasons(&events),
        ["Deployed", "RolloutStarted", "RewardTooLow"],
        "{events:#?}"
    );
    // The candidate never got more than the first step's 20%.
    let weights: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "endpoint.updated")
        .filter_map(|e| e["data"]["policy"]["canary"]["weight"].as_f64())
        .collect();
    assert_eq!(weights, [0.2]);
    let (_, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(endpoint["stable"], 1);
    assert!(endpoint.get("canary").is_none(), "compensated: {endpoint}");
    let (v1, v2) = (
        answers.get("1").copied().unwrap_or(0),
        answers.get("2").copied().unwrap_or(0),
    );
    // At most the first step's 20% (the split is a hash of request ids: allow four standard
    // deviations of a 20% binomial share), far below the second step's 50%.
    let total = (v1 + v2) as f64;
    let share = v2 as f64 / total;
    let bound = 0.2 + 4.0 * (0.2 * 0.8 / total).sqrt();
    assert!(
        v2 > 0 && share < bound,
        "v2 answered {v2} of {total} requests ({share:.3}, bound {bound:.3})"
    );

    // The rejected version is not retried on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = serde_json::to_value(cluster.mds().get(name).await.unwrap().status).unwrap();
    assert_eq!(step_and_phase(&later), (Value::Null, json!("RolledBack")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_fails_requests_is_rolled_back_on_its_error_rate() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    if !have_onnxruntime() {
        return;
    }
    let mut cluster = Cluster::start(&kubeconfig).await;
    // Loads and warms up fine, then fails inside ONNX Runtime on the requests clients send.
    let fragile = push_file(
        cluster.dir.path(),
        &cluster.registry.url(),
        &fixture("fragile.onnx"),
    );
    cluster.start_operator();
    let name = "failing";
    // No feedback is sent: the reward check has nothing to say and the technical checks decide.
    let (rolled_back, answers) = roll_back_a_candidate(
        &cluster,
        name,
        fragile,
        json!({"maxErrorRate": 0.05}),
        BTreeMap::new(),
    )
    .await;
    assert_eq!(rolled_back["reason"], "ErrorRateTooHigh", "{rolled_back}");
    assert_eq!(rolled_back["stableVersion"], 1);
    assert_eq!(rolled_back["candidateVersion"], fragile);
    assert_eq!(rolled_back["currentWeight"], 0.0);
    let analysis = &rolled_back["lastAnalysis"];
    assert_eq!(analysis["step"], 1, "judged at its first step");
    assert_eq!(analysis["decidedBy"], "errorRate");
    let checks = analysis["checks"].as_array().unwrap();
    let check = |name: &str| checks.iter().find(|c| c["check"] == name).unwrap().clone();
    let errors = check("errorRate");
    assert!(errors["value"].as_f64().unwrap() > 0.05, "{errors}");
    assert_eq!(errors["threshold"], 0.05);
    assert!(
        check("rewardRatio")["passed"].is_null(),
        "no feedback: the reward check is skipped, not failed: {analysis}"
    );
    assert_eq!(
        reasons(&cluster.events(name).await),
        ["Deployed", "RolloutStarted", "ErrorRateTooHigh"]
    );
    let (_, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(endpoint["stable"], 1);
    assert!(endpoint.get("canary").is_none(), "compensated: {endpoint}");
    // The candidate's share of traffic failed with 500 and none of it answered; version 1
    // answered every other request.
    assert_eq!(answers.get(&fragile.to_string()), None, "{answers:?}");
    assert!(
        answers.get("error 500").copied().unwrap_or(0) > 0,
        "{answers:?}"
    );
    assert!(answers.get("1").copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(
        answers.keys().all(|k| k == "1" || k == "error 500"),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_operator_resumes_the_same_step_after_a_restart() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    if !have_onnxruntime() {
        return;
    }
    let mut cluster = Cluster::start(&kubeconfig).await;
    cluster.start_operator();
    let name = "restart";
    cluster
        .create(
            name,
            spec(
                &cluster,
                json!({"version": 1}),
                json!([{"weight": 20, "pause": "20s"}, {"weight": 50, "pause": "6s"}]),
                json!({"interval": "5s", "minRequests": 10, "minRewards": 5, "minRewardRatio": 0.8, "maxInconclusive": 0}),
            ),
        )
        .await;
    cluster
        .wait_for(name, "v1 deployed", Duration::from_secs(60), |s| {
            s["stableVersion"] == 1
        })
        .await;
    let traffic = Traffic::start(
        &cluster.registry.url(),
        name,
        rewards(&[(1, 1.0), (2, 1.0)]),
    );
    let patch = json!({"spec": {"version": 2}});
    cluster
        .mds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // Mid-step: step 1 judged at least once inside its 20 s hold.
    let before = cluster
        .wait_for(
            name,
            "a judgement inside step 1",
            Duration::from_secs(60),
            |s| s["currentStep"] == 1 && s["lastAnalysis"]["step"] == 1,
        )
        .await;
    cluster.operator.as_mut().unwrap().kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let untouched = serde_json::to_value(cluster.mds().get(name).await.unwrap().status).unwrap();
    assert_eq!(untouched["stepStartedAt"], before["stepStartedAt"]);
    cluster.start_operator();
    let down = killed_at.elapsed();
    let resumed = cluster
        .wait_for(name, "step 2", Duration::from_secs(60), |s| {
            s["currentStep"] == 2
        })
        .await;
    assert_eq!(
        resumed["rolloutStartedAt"], before["rolloutStartedAt"],
        "the rollout was not restarted"
    );
    let step1 =
        chrono::DateTime::parse_from_rfc3339(before["stepStartedAt"].as_str().unwrap()).unwrap();
    let step2 =
        chrono::DateTime::parse_from_rfc3339(resumed["stepStartedAt"].as_str().unwrap()).unwrap();
    assert!(
        step2 - step1 >= chrono::Duration::seconds(20),
        "step 1 was held {}s, not its 20 s pause",
        (step2 - step1).num_seconds()
    );
    let promoted = cluster
        .wait_for(name, "v2 promoted", Duration::from_secs(60), |s| {
            s["phase"] == "Promoted" && s["stableVersion"] == 2
        })
        .await;
    traffic.stop().await;
    assert_eq!(promoted["reason"], "Promoted");
    let events = cluster.events(name).await;
    assert_eq!(
        reasons(&events),
        ["Deployed", "RolloutStarted", "StepAdvanced", "Promoted"],
        "each step once, none repeated or skipped: {events:#?}"
    );
    eprintln!("the operator was down {down:?} in the middle of step 1");
}

/// Sets (`Some("true")`) or removes (`None`) an annotation, as `kubectl annotate` does.
async fn annotate(cluster: &Cluster, name: &str, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    cluster
        .mds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_promote_now_and_abort_annotations_steer_a_rollout() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    if !have_onnxruntime() {
        return;
    }
    let mut cluster = Cluster::start(&kubeconfig).await;
    cluster.start_operator();
    let name = "manual";
    // Holds far longer than the test: only the manual controls move this rollout.
    cluster
        .create(
            name,
            spec(
                &cluster,
                json!({"version": 1}),
                json!([{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]),
                json!({"interval": "5s", "minRequests": 10}),
            ),
        )
        .await;
    cluster
        .wait_for(name, "v1 deployed", Duration::from_secs(60), |s| {
            s["stableVersion"] == 1
        })
        .await;
    let patch = json!({"spec": {"version": 2}});
    cluster
        .mds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    cluster
        .wait_for(name, "step 1", Duration::from_secs(30), |s| {
            s["phase"] == "Progressing" && s["currentStep"] == 1
        })
        .await;

    // Paused: the split stays as it is.
    annotate(&cluster, name, "ferry.dev/paused", Some("true")).await;
    let paused = cluster
        .wait_for(name, "paused", Duration::from_secs(30), |s| {
            s["phase"] == "Paused"
        })
        .await;
    assert_eq!(paused["currentStep"], 1);
    assert_eq!(paused["candidateVersion"], 2);
    let (_, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(
        (
            endpoint["stable"].as_i64(),
            endpoint["canary"]["weight"].as_f64()
        ),
        (Some(1), Some(0.2)),
        "{endpoint}"
    );

    // Resumed: the same step, held afresh.
    annotate(&cluster, name, "ferry.dev/paused", None).await;
    let resumed = cluster
        .wait_for(name, "resumed", Duration::from_secs(30), |s| {
            s["phase"] == "Progressing"
        })
        .await;
    assert_eq!(resumed["reason"], "Resumed", "{resumed}");
    assert_eq!(resumed["currentStep"], 1);

    // Promote now: the candidate becomes stable without waiting out its hour.
    annotate(&cluster, name, "ferry.dev/promote-now", Some("true")).await;
    let promoted = cluster
        .wait_for(name, "promoted", Duration::from_secs(30), |s| {
            s["phase"] == "Promoted" && s["stableVersion"] == 2
        })
        .await;
    assert_eq!(promoted["reason"], "PromotedManually", "{promoted}");
    let (_, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(endpoint["stable"], 2);
    assert!(endpoint.get("canary").is_none(), "{endpoint}");
    annotate(&cluster, name, "ferry.dev/promote-now", None).await;

    // Back to v1 (a rollout like any other), then abort: compensated at once.
    let patch = json!({"spec": {"version": 1}});
    cluster
        .mds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    cluster
        .wait_for(name, "v1 at step 1", Duration::from_secs(30), |s| {
            s["phase"] == "Progressing" && s["candidateVersion"] == 1
        })
        .await;
    annotate(&cluster, name, "ferry.dev/abort", Some("true")).await;
    let aborted = cluster
        .wait_for(name, "aborted", Duration::from_secs(30), |s| {
            s["phase"] == "RolledBack"
        })
        .await;
    assert_eq!(aborted["reason"], "Aborted", "{aborted}");
    assert_eq!(aborted["stableVersion"], 2);
    assert_eq!(aborted["currentWeight"], 0.0);
    let (_, endpoint) = cluster
        .registry_get(&format!("/api/v1/endpoints/{name}"))
        .await;
    assert_eq!(endpoint["stable"], 2);
    assert!(endpoint.get("canary").is_none(), "compensated: {endpoint}");

    // Clearing abort rolls the same target out again from its first step.
    annotate(&cluster, name, "ferry.dev/abort", None).await;
    let again = cluster
        .wait_for(name, "v1 again", Duration::from_secs(30), |s| {
            s["phase"] == "Progressing"
        })
        .await;
    assert_eq!(
        (&again["candidateVersion"], &again["currentStep"]),
        (&json!(1), &json!(1))
    );

    let events = cluster.events(name).await;
    assert_eq!(
        reasons(&events),
        [
            "Deployed",
            "RolloutStarted",
            "Paused",
            "Resumed",
            "PromotedManually",
            "RolloutStarted",
            "Aborted",
            "RolloutStarted"
        ],
        "{events:#?}"
    );
}

/// `ferry crdgen --check` (run by CI) passes on current YAML, fails on stale YAML naming the
/// file, and `ferry crdgen` makes it current again. No API server needed.
#[test]
fn crdgen_check_fails_on_stale_yaml_until_crdgen_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let checked_in =
        std::fs::read_to_string(repo_root().join("deploy/crds/modeldeployments.ferry.dev.yaml"))
            .unwrap();
    let crd = root.join("deploy/crds/modeldeployments.ferry.dev.yaml");
    std::fs::create_dir_all(crd.parent().unwrap()).unwrap();
    std::fs::write(&crd, &checked_in).unwrap();
    let root_arg = root.to_str().unwrap();

    let out = ferry(root, &["crdgen", "--check", "--root", root_arg], &[]);
    assert!(out.status.success(), "{}", text(&out));

    std::fs::write(&crd, checked_in.replace("ModelDeployment", "OldDeployment")).unwrap();
    let out = ferry(root, &["crdgen", "--check", "--root", root_arg], &[]);
    assert!(!out.status.success(), "a stale CRD passed the check");
    let said = text(&out);
    assert!(
        said.contains("modeldeployments.ferry.dev.yaml") && said.contains("ferry crdgen"),
        "{said}"
    );

    let out = ferry(root, &["crdgen", "--root", root_arg], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&crd).unwrap(), checked_in);
    let out = ferry(root, &["crdgen", "--check", "--root", root_arg], &[]);
    assert!(out.status.success(), "{}", text(&out));

    let out = ferry(root, &["crdgen", "--stdout"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), checked_in);
}

/// The README's example is accepted by the API server's validation of the generated CRD schema
/// (a server-side dry run: nothing is stored, no operator acts on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_deployment_cannot_make_the_operator_read_an_unmarked_secret_or_call_a_foreign_registry()
 {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let mut cluster = Cluster::start(&kubeconfig).await;
    // A Secret of the namespace the operator was never meant to read.
    let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), &cluster.namespace);
    let other: Secret = serde_json::from_value(json!({
        "metadata": {"name": "database-password"},
        "stringData": {"token": TOKEN}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let registry = cluster.registry.url();
    cluster.start_operator_with(&["--allowed-registry", &registry, "--allowed-image", "ferry:"]);
    let target = json!({"version": 1});
    let steps = json!([{"weight": 100, "pause": "1s"}]);
    let analysis = json!({"interval": "1s"});

    // The token of an unmarked Secret is never read, so never sent.
    let mut unmarked = spec(&cluster, target.clone(), steps.clone(), analysis.clone());
    unmarked["registry"]["tokenSecret"] = json!({"name": "database-password", "key": "token"});
    cluster.create("unmarked", unmarked).await;
    // A registry outside the allow-list, and an image outside the allowed prefixes.
    let mut foreign = spec(&cluster, target.clone(), steps.clone(), analysis.clone());
    foreign["registry"]["url"] = json!("http://127.0.0.1:9/");
    cluster.create("foreign", foreign).await;
    let mut miner = spec(&cluster, target.clone(), steps.clone(), analysis.clone());
    miner["image"] = json!("docker.io/evil/miner:latest");
    cluster.create("miner", miner).await;

    let invalid = |field: &'static str| {
        move |s: &Value| {
            s["reason"] == "InvalidSpec" && s["message"].as_str().is_some_and(|m| m.contains(field))
        }
    };
    cluster
        .wait_for(
            "foreign",
            "InvalidSpec naming registry.url",
            Duration::from_secs(60),
            invalid("registry.url"),
        )
        .await;
    cluster
        .wait_for(
            "miner",
            "InvalidSpec naming image",
            Duration::from_secs(60),
            invalid("image:"),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster
        .operator_logs()
        .contains("is not labelled ferry.dev/registry-token=true")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            tail(&cluster.operator_logs())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // None of the three made anything at the registry or in the namespace.
    for name in ["unmarked", "foreign", "miner"] {
        let (status, _) = cluster
            .registry_get(&format!("/api/v1/endpoints/{name}"))
            .await;
        assert_eq!(status, 404, "{name}");
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(cluster.admin.clone(), &cluster.namespace);
        assert!(deployments.get_opt(name).await.unwrap().is_none(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_modeldeployment_passes_the_api_servers_schema_validation() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let admin = client_from(&kubeconfig).await;
    let root = repo_root();
    apply_file(
        &admin,
        &root.join("deploy/crds/modeldeployments.ferry.dev.yaml"),
    )
    .await;
    wait_for_crd(&admin).await;
    let text = std::fs::read_to_string(root.join("deploy/examples/modeldeployment.yaml")).unwrap();
    let example: ModelDeployment = serde_norway::from_str(&text).unwrap();
    let namespace = example.namespace().unwrap();
    ensure_namespace(&admin, &namespace).await;
    let api: Api<ModelDeployment> = Api::namespaced(admin.clone(), &namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let stored = api.create(&dry_run, &example).await.unwrap();
    assert_eq!(stored.spec.model, "fraud");
    assert_eq!(stored.spec.strategy, example.spec.strategy);
    assert!(
        api.get_opt(&example.name_any()).await.unwrap().is_none(),
        "a dry run stored the example"
    );

    // The schema refuses what the types refuse: a canary weight above 100.
    let mut bad = serde_json::to_value(&example).unwrap();
    bad["spec"]["strategy"]["canary"]["steps"][0]["weight"] = json!(150);
    let bad: ModelDeployment = serde_json::from_value(bad).unwrap();
    match api.create(&dry_run, &bad).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{status:?}"),
        other => panic!("a weight of 150% was accepted: {other:?}"),
    }
}
