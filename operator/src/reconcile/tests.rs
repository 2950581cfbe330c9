//! Reconcile against a mocked Kubernetes API (`tower_test::mock::pair`) and a fake registry:
//! every request's verb, path, content type, field manager and body is checked, in order.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::TimeZone;
use ferry_api::client::ClientError;
use ferry_api::records::{
    CanaryPolicy, DecayMetric, DecayPolicy, EndpointCondition, EndpointRecord, EventPage,
};
use ferry_api::traffic::{EndpointAnalysis, VersionAnalysis};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::crd::TargetRef;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The fake registry

#[derive(Default)]
struct FakeState {
    aliases: HashMap<String, i64>,
    versions: Vec<i64>,
    endpoint: Option<EndpointRecord>,
    analysis: Option<EndpointAnalysis>,
    /// Every call, as `call name[ detail]`, with the token it carried.
    calls: Vec<(String, Option<String>)>,
    steps: Vec<RolloutStep>,
    fail_puts: bool,
    fail_gets: bool,
}

#[derive(Default)]
struct FakeRegistry(Mutex<FakeState>);

impl FakeRegistry {
    fn with_versions(versions: &[i64]) -> Self {
        let fake = FakeRegistry::default();
        fake.state().versions = versions.to_vec();
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn call(&self, what: String, at: &RegistryAt) {
        self.state().calls.push((what, at.token.clone()));
    }

    fn calls(&self) -> Vec<String> {
        self.state().calls.iter().map(|(c, _)| c.clone()).collect()
    }
}

fn not_found(what: &str) -> RegistryError {
    RegistryError::Client(ClientError::Api {
        status: 404,
        detail: format!("{what} does not exist"),
    })
}

impl Registry for FakeRegistry {
    async fn resolve(
        &self,
        at: &RegistryAt,
        model: &str,
        target: &TargetRef,
    ) -> Result<i64, RegistryError> {
        self.call(format!("resolve {model} {target:?}"), at);
        let state = self.state();
        match target {
            TargetRef::Version(v) if state.versions.contains(v) => Ok(*v),
            TargetRef::Alias(a) => state.aliases.get(a).copied().ok_or_else(|| not_found(a)),
            TargetRef::Version(v) => Err(not_found(&format!("version {v}"))),
        }
    }

    async fn get_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
    ) -> Result<Option<EndpointRecord>, RegistryError> {
        self.call(format!("get {name}"), at);
        let state = self.state();
        if state.fail_gets {
            return Err(RegistryError::Timeout(Duration::from_secs(10)));
        }
        Ok(state.endpoint.clone())
    }

    async fn put_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
        policy: &EndpointPolicy,
    ) -> Result<EndpointRecord, RegistryError> {
        self.call(format!("put {name}"), at);
        let mut state = self.state();
        if state.fail_puts {
            return Err(RegistryError::Timeout(Duration::from_secs(10)));
        }
        let record = EndpointRecord {
            name: name.into(),
            revision: state.endpoint.as_ref().map_or(1, |e| e.revision + 1),
            policy: policy.clone(),
            created_at: now(),
            updated_at: now(),
            conditions: Vec::new(),
        };
        state.endpoint = Some(record.clone());
        Ok(record)
    }

    async fn delete_endpoint(&self, at: &RegistryAt, name: &str) -> Result<bool, RegistryError> {
        self.call(format!("delete {name}"), at);
        Ok(self.state().endpoint.take().is_some())
    }

    async fn analysis(
        &self,
        at: &RegistryAt,
        name: &str,
        window: Duration,
    ) -> Result<EndpointAnalysis, RegistryError> {
        self.call(format!("analysis {name} {}s", window.as_secs()), at);
        self.state().analysis.clone().ok_or_else(|| not_found(name))
    }

    async fn record_step(
        &self,
        at: &RegistryAt,
        name: &str,
        step: &RolloutStep,
    ) -> Result<(), RegistryError> {
        self.call(format!("step {name} {}", step.reason), at);
        self.state().steps.push(step.clone());
        Ok(())
    }

    async fn events(
        &self,
        _at: &RegistryAt,
        after: i64,
        _limit: u32,
        _wait: Duration,
    ) -> Result<EventPage, RegistryError> {
        Ok(EventPage {
            events: Vec::new(),
            next_after: after,
            head: after,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The mocked API server

fn context(registry: FakeRegistry) -> (Arc<Context<FakeRegistry>>, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let settings = Settings {
        default_image: "ferry:test".into(),
        ..Settings::default()
    };
    let ctx = Context::new(client, registry, settings, Metrics::new().unwrap()).with_clock(now);
    (Arc::new(ctx), handle)
}

/// One request the reconciler made: method, path with query, content type, body.
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

impl Seen {
    fn query(&self) -> HashMap<String, String> {
        self.path
            .split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// A server-side apply by the operator, forcing conflicts.
    fn assert_apply(&self, path: &str) {
        assert_eq!(self.method, "PATCH", "{}", self.path);
        assert_eq!(self.path_only(), path);
        assert_eq!(self.content_type, "application/apply-patch+yaml");
        let query = self.query();
        assert_eq!(
            query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER)
        );
        assert_eq!(query.get("force").map(String::as_str), Some("true"));
    }
}

/// Waits for the next request and answers it with `status` and `reply(request)`.
async fn serve(
    handle: &mut Handle,
    status: StatusCode,
    reply: impl FnOnce(&Seen) -> Value,
) -> Seen {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the reconciler made no further request")
        .expect("the client is gone");
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
    };
    let answer = reply(&seen);
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    seen
}

/// Answers with the request body itself (what an apply or create returns, near enough).
fn echo(seen: &Seen) -> Value {
    seen.body.clone()
}

/// Asserts the reconciler sends nothing more.
async fn assert_no_more(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    if let Ok(Some((request, _))) = next {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

const MD_PATH: &str = "/apis/ferry.dev/v1alpha1/namespaces/ml/modeldeployments/fraud";

fn md(spec: Value, status: Option<Value>, finalizers: &[&str]) -> Arc<ModelDeployment> {
    let mut value = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": "uid-1234",
            "resourceVersion": "7",
            "generation": 1,
            "finalizers": finalizers,
        },
        "spec": spec,
    });
    if let Some(status) = status {
        value["status"] = status;
    }
    Arc::new(serde_json::from_value(value).unwrap())
}

fn spec() -> Value {
    json!({
        "model": "fraud",
        "version": 1,
        "registry": {"url": "http://registry:8080"},
        "auth": {"tokensSecret": {"name": "ferry-tokens", "key": "serving-tokens"}},
    })
}

async fn expect_children(handle: &mut Handle) {
    let d = serve(handle, StatusCode::OK, echo).await;
    d.assert_apply("/apis/apps/v1/namespaces/ml/deployments/fraud");
    assert_eq!(d.body["kind"], "Deployment");
    assert_eq!(d.body["metadata"]["ownerReferences"][0]["uid"], "uid-1234");
    assert_eq!(d.body["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        d.body["spec"]["template"]["spec"]["containers"][0]["args"][2],
        "http://registry:8080"
    );
    let s = serve(handle, StatusCode::OK, echo).await;
    s.assert_apply("/api/v1/namespaces/ml/services/fraud");
    assert_eq!(s.body["kind"], "Service");
    assert_eq!(s.body["metadata"]["ownerReferences"][0]["name"], "fraud");
}

/// The status apply: answered with the resource carrying that status.
async fn expect_status(handle: &mut Handle, status: StatusCode) -> Seen {
    let seen = serve(handle, status, |seen| {
        if status == StatusCode::CONFLICT {
            json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "the object has been modified", "reason": "Conflict", "code": 409
            })
        } else {
            let mut md = serde_json::to_value(md(spec(), None, &[FINALIZER]).as_ref()).unwrap();
            md["status"] = seen.body["status"].clone();
            md
        }
    })
    .await;
    seen.assert_apply(&format!("{MD_PATH}/status"));
    assert_eq!(seen.body["apiVersion"], "ferry.dev/v1alpha1");
    assert_eq!(seen.body["kind"], "ModelDeployment");
    assert_eq!(
        seen.body["metadata"]["resourceVersion"], "7",
        "the status is written on the version it was decided from"
    );
    seen
}

async fn expect_event(handle: &mut Handle, type_: &str, reason: &str) {
    let e = serve(handle, StatusCode::CREATED, echo).await;
    assert_eq!(e.method, "POST");
    assert_eq!(e.path_only(), "/apis/events.k8s.io/v1/namespaces/ml/events");
    assert_eq!(e.body["type"], type_);
    assert_eq!(e.body["reason"], reason);
    assert_eq!(e.body["regarding"]["kind"], "ModelDeployment");
    assert_eq!(e.body["regarding"]["uid"], "uid-1234");
    assert_eq!(e.body["reportingController"], FIELD_MANAGER);
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn a_new_resource_first_gets_the_finalizer_and_nothing_else() {
    let (ctx, mut handle) = context(FakeRegistry::with_versions(&[1]));
    let task = tokio::spawn(reconcile(md(spec(), None, &[]), ctx.clone()));
    let seen = serve(&mut handle, StatusCode::OK, |_| {
        serde_json::to_value(md(spec(), None, &[FINALIZER]).as_ref()).unwrap()
    })
    .await;
    assert_eq!((seen.method.as_str(), seen.path_only()), ("PATCH", MD_PATH));
    assert_eq!(seen.content_type, "application/json-patch+json");
    assert_eq!(
        seen.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ])
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_no_more(&mut handle).await;
    assert!(
        ctx.registry.calls().is_empty(),
        "{:?}",
        ctx.registry.calls()
    );
}

#[tokio::test]
async fn the_first_reconcile_applies_the_children_deploys_the_version_and_writes_the_status() {
    let (ctx, mut handle) = context(FakeRegistry::with_versions(&[1]));
    let mut with_secret = spec();
    with_secret["registry"]["tokenSecret"] = json!({"name": "ferry-token"});
    let task = tokio::spawn(reconcile(md(with_secret, None, &[FINALIZER]), ctx.clone()));

    let secret = serve(&mut handle, StatusCode::OK, |_| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "ferry-token", "namespace": "ml",
                         "labels": {"ferry.dev/registry-token": "true"}},
            // base64 of "s3cret\n": the token is trimmed.
            "data": {"token": "czNjcmV0Cg=="}
        })
    })
    .await;
    assert_eq!(
        (secret.method.as_str(), secret.path_only()),
        ("GET", "/api/v1/namespaces/ml/secrets/ferry-token")
    );
    expect_children(&mut handle).await;
    let status = expect_status(&mut handle, StatusCode::OK).await;
    let s = &status.body["status"];
    assert_eq!(s["phase"], "Promoted");
    assert_eq!(s["stableVersion"], 1);
    assert_eq!(s["reason"], "Deployed");
    assert_eq!(s["observedGeneration"], 1);
    let types: Vec<&str> = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "Progressing", "Degraded"]);
    assert!(
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["message"].as_str().unwrap().is_empty()),
        "Kubernetes 1.20's apply turns empty strings into null: {s}"
    );
    expect_event(&mut handle, "Normal", "Deployed").await;

    let action = task.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(Settings::default().resync));
    assert_no_more(&mut handle).await;
    let registry = &ctx.registry;
    assert_eq!(
        registry.calls(),
        [
            "resolve fraud Version(1)",
            "get fraud",
            "put fraud",
            "step fraud Deployed"
        ]
    );
    assert!(
        registry
            .state()
            .calls
            .iter()
            .all(|(_, token)| token.as_deref() == Some("s3cret")),
        "every registry call carries the Secret's token"
    );
    let endpoint = registry.state().endpoint.clone().unwrap();
    assert_eq!(
        endpoint.policy,
        EndpointPolicy {
            model: "fraud".into(),
            stable: 1,
            canary: None,
            shadows: Vec::new(),
            sticky_header: None,
            drift: None,
            max_age_seconds: None,
            decay: None,
        }
    );
    let step = registry.state().steps[0].clone();
    assert_eq!((step.phase.as_str(), step.stable), ("Promoted", Some(1)));
    assert_eq!(step.source.as_deref(), Some("ModelDeployment ml/fraud"));
}

/// Step 1 of 4 at 1%, started 70 s ago (judged every 60 s by default).
fn progressing_status() -> Value {
    json!({
        "phase": "Progressing",
        "stableVersion": 1,
        "candidateVersion": 2,
        "currentStep": 1,
        "currentWeight": 1.0,
        "rolloutStartedAt": (now() - chrono::Duration::seconds(70)).to_rfc3339(),
        "stepStartedAt": (now() - chrono::Duration::seconds(70)).to_rfc3339(),
        "reason": "RolloutStarted",
    })
}

fn analysis(candidate_errors: u64) -> EndpointAnalysis {
    let version = |version: i64, role: &str, requests: u64, errors: u64| VersionAnalysis {
        version,
        role: role.into(),
        requests,
        errors,
        error_rate: Some(errors as f64 / (requests + errors) as f64),
        latency_p50_ms: Some(2.0),
        latency_p99_ms: Some(5.0),
        ..VersionAnalysis::default()
    };
    EndpointAnalysis {
        endpoint: "fraud".into(),
        window_seconds: 60.0,
        replicas: vec!["pod-a".into()],
        versions: vec![
            version(1, "stable", 5000, 0),
            version(2, "canary", 100 - candidate_errors, candidate_errors),
        ],
        load_error: None,
    }
}

fn canary_endpoint(weight: f64) -> EndpointRecord {
    EndpointRecord {
        name: "fraud".into(),
        revision: 4,
        policy: EndpointPolicy {
            model: "fraud".into(),
            stable: 1,
            canary: Some(CanaryPolicy { version: 2, weight }),
            shadows: Vec::new(),
            sticky_header: Some("x-user".into()),
            drift: None,
            max_age_seconds: None,
            decay: None,
        },
        created_at: now(),
        updated_at: now(),
        conditions: Vec::new(),
    }
}

#[tokio::test]
async fn a_failed_analysis_rolls_back_and_the_policy_follows_the_status() {
    let registry = FakeRegistry::with_versions(&[1, 2]);
    registry.state().analysis = Some(analysis(30));
    registry.state().endpoint = Some(canary_endpoint(0.01));
    let (ctx, mut handle) = context(registry);
    let mut target = spec();
    target["version"] = json!(2);
    let task = tokio::spawn(reconcile(
        md(target, Some(progressing_status()), &[FINALIZER]),
        ctx.clone(),
    ));
    expect_children(&mut handle).await;
    let status = expect_status(&mut handle, StatusCode::OK).await;
    let s = &status.body["status"];
    assert_eq!(s["phase"], "RolledBack");
    assert_eq!(s["reason"], "ErrorRateTooHigh");
    assert_eq!(s["currentWeight"], 0.0);
    assert_eq!(s["lastAnalysis"]["decidedBy"], "errorRate");
    assert_eq!(s["lastAnalysis"]["step"], 1);
    expect_event(&mut handle, "Warning", "ErrorRateTooHigh").await;
    task.await.unwrap().unwrap();
    assert_no_more(&mut handle).await;

    assert_eq!(
        ctx.registry.calls(),
        [
            "resolve fraud Version(2)",
            "analysis fraud 60s",
            "get fraud",
            "put fraud",
            "step fraud ErrorRateTooHigh"
        ]
    );
    // The registry's rollout.step carries the analysis in the contract's words, valid as sent.
    let step = ctx.registry.state().steps[0].clone();
    ferry_api::rollout::validate_rollout_step(&step).unwrap();
    let judged = step.analysis.expect("the step carries its analysis");
    assert_eq!(
        (judged.stage.as_str(), judged.verdict.as_str()),
        ("Canary", "Failed")
    );
    assert_eq!(judged.decided_by.as_deref(), Some("errorRate"));
    assert_eq!((judged.stable, judged.candidate), (1, 2));
    let error_rate = judged
        .checks
        .iter()
        .find(|c| c.check == "errorRate")
        .expect("the errorRate check");
    assert_eq!(error_rate.passed, Some(false));
    assert_eq!(
        Some(error_rate.value),
        s["lastAnalysis"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "errorRate")
            .map(|c| c["value"].as_f64())
    );
    let policy = ctx.registry.state().endpoint.clone().unwrap().policy;
    assert_eq!(policy.stable, 1);
    assert_eq!(policy.canary, None, "compensated: the candidate is out");
    assert_eq!(
        policy.sticky_header.as_deref(),
        Some("x-user"),
        "a sticky header set on the endpoint is kept"
    );
}

#[tokio::test]
async fn a_stale_status_write_is_a_conflict_and_the_policy_is_left_alone() {
    let registry = FakeRegistry::with_versions(&[1, 2]);
    registry.state().analysis = Some(analysis(30));
    registry.state().endpoint = Some(canary_endpoint(0.01));
    let (ctx, mut handle) = context(registry);
    let mut target = spec();
    target["version"] = json!(2);
    let resource = md(target, Some(progressing_status()), &[FINALIZER]);
    let task = tokio::spawn(reconcile(resource.clone(), ctx.clone()));
    expect_children(&mut handle).await;
    expect_status(&mut handle, StatusCode::CONFLICT).await;
    let error = task.await.unwrap().unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_no_more(&mut handle).await;
    // The status is the saga's log: no decision reaches the registry before it is recorded.
    assert!(
        !ctx.registry
            .calls()
            .iter()
            .any(|c| c.starts_with("put") || c.starts_with("step"))
    );
    assert_eq!(
        ctx.registry.state().endpoint.clone().unwrap().policy.canary,
        Some(CanaryPolicy {
            version: 2,
            weight: 0.01
        })
    );
    let action = error_policy(resource, &error, ctx);
    assert_eq!(action, Action::requeue(Duration::from_millis(500)));
}

#[tokio::test]
async fn an_unchanged_state_writes_no_status_and_no_policy() {
    let registry = FakeRegistry::with_versions(&[1]);
    let (ctx, mut handle) = context(registry);
    // The state a previous reconcile left: v1 deployed, its endpoint in place.
    let state = crate::rollout::RolloutState {
        phase: crate::rollout::Phase::Promoted,
        stable_version: Some(1),
        reason: Some("Deployed".into()),
        message: Some("v1 serves all traffic (first version deployed)".into()),
        ..Default::default()
    };
    let status = serde_json::to_value(status_for(state, None, Some(&[]), Some(1), now())).unwrap();
    ctx.registry.state().endpoint = Some(EndpointRecord {
        name: "fraud".into(),
        revision: 1,
        policy: EndpointPolicy {
            model: "fraud".into(),
            stable: 1,
            canary: None,
            shadows: Vec::new(),
            sticky_header: None,
            drift: None,
            max_age_seconds: None,
            decay: None,
        },
        created_at: now(),
        updated_at: now(),
        conditions: Vec::new(),
    });
    let task = tokio::spawn(reconcile(
        md(spec(), Some(status), &[FINALIZER]),
        ctx.clone(),
    ));
    expect_children(&mut handle).await;
    task.await.unwrap().unwrap();
    assert_no_more(&mut handle).await;
    assert_eq!(
        ctx.registry.calls(),
        ["resolve fraud Version(1)", "get fraud"]
    );
}

fn stale_condition() -> EndpointCondition {
    EndpointCondition {
        kind: "Stale".into(),
        status: "True".into(),
        version: 1,
        event: Some(17),
        message: "version 1 is 31d old (counted from its training data), maximum 30d".into(),
    }
}

fn stable_endpoint() -> EndpointRecord {
    EndpointRecord {
        name: "fraud".into(),
        revision: 1,
        policy: EndpointPolicy {
            model: "fraud".into(),
            stable: 1,
            canary: None,
            shadows: Vec::new(),
            sticky_header: None,
            drift: None,
            max_age_seconds: None,
            decay: None,
        },
        created_at: now(),
        updated_at: now(),
        conditions: Vec::new(),
    }
}

#[tokio::test]
async fn a_stale_endpoint_shows_a_stale_condition_and_max_age_reaches_the_policy() {
    let registry = FakeRegistry::with_versions(&[1]);
    let mut endpoint = stable_endpoint();
    endpoint.conditions = vec![stale_condition()];
    registry.state().endpoint = Some(endpoint);
    let (ctx, mut handle) = context(registry);
    let mut perishable = spec();
    perishable["maxAge"] = json!("30d");
    let task = tokio::spawn(reconcile(md(perishable, None, &[FINALIZER]), ctx.clone()));
    expect_children(&mut handle).await;
    let status = expect_status(&mut handle, StatusCode::OK).await;
    let conditions = status.body["status"]["conditions"].as_array().unwrap();
    let types: Vec<&str> = conditions
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "Progressing", "Degraded", "Stale"]);
    let stale = &conditions[3];
    assert_eq!(stale["status"], "True");
    assert_eq!(stale["reason"], "MaxAgeExceeded");
    assert_eq!(stale["message"], stale_condition().message.as_str());
    expect_event(&mut handle, "Normal", "Deployed").await;
    task.await.unwrap().unwrap();
    assert_no_more(&mut handle).await;
    assert_eq!(
        ctx.registry.calls(),
        [
            "resolve fraud Version(1)",
            "get fraud",
            "put fraud",
            "step fraud Deployed"
        ],
        "the endpoint is read once per reconcile"
    );
    let policy = ctx.registry.state().endpoint.clone().unwrap().policy;
    assert_eq!(policy.max_age_seconds, Some(2_592_000));
}

#[tokio::test]
async fn a_max_age_and_decay_set_on_the_endpoint_are_kept_when_the_spec_has_no_max_age() {
    let registry = FakeRegistry::with_versions(&[1]);
    // A leftover canary makes the operator write the policy: what it writes keeps the rest.
    let mut endpoint = canary_endpoint(0.1);
    endpoint.policy.canary = Some(CanaryPolicy {
        version: 9,
        weight: 0.1,
    });
    endpoint.policy.max_age_seconds = Some(86_400);
    endpoint.policy.decay = Some(DecayPolicy {
        metric: DecayMetric::Accuracy,
        max_drop: 0.05,
        window: 200,
        reference: Some(0.93),
    });
    registry.state().endpoint = Some(endpoint.clone());
    let (ctx, mut handle) = context(registry);
    let state = crate::rollout::RolloutState {
        phase: crate::rollout::Phase::Promoted,
        stable_version: Some(1),
        reason: Some("Deployed".into()),
        message: Some("v1 serves all traffic (first version deployed)".into()),
        ..Default::default()
    };
    let status = serde_json::to_value(status_for(state, None, Some(&[]), Some(1), now())).unwrap();
    let task = tokio::spawn(reconcile(
        md(spec(), Some(status), &[FINALIZER]),
        ctx.clone(),
    ));
    expect_children(&mut handle).await;
    task.await.unwrap().unwrap();
    assert_no_more(&mut handle).await;
    assert_eq!(
        ctx.registry.calls(),
        ["resolve fraud Version(1)", "get fraud", "put fraud"]
    );
    let policy = ctx.registry.state().endpoint.clone().unwrap().policy;
    assert_eq!(
        policy,
        EndpointPolicy {
            canary: None,
            ..endpoint.policy
        }
    );
    assert_eq!(policy.max_age_seconds, Some(86_400));
    assert!(policy.decay.is_some());
}

#[tokio::test]
async fn an_unreadable_endpoint_keeps_the_status_conditions_and_writes_no_policy() {
    let registry = FakeRegistry::with_versions(&[1]);
    registry.state().fail_gets = true;
    let (ctx, mut handle) = context(registry);
    let state = crate::rollout::RolloutState {
        phase: crate::rollout::Phase::Promoted,
        stable_version: Some(1),
        reason: Some("Deployed".into()),
        message: Some("v1 serves all traffic (first version deployed)".into()),
        ..Default::default()
    };
    let before = now() - chrono::Duration::hours(1);
    let status = status_for(state, None, Some(&[stale_condition()]), Some(1), before);
    let task = tokio::spawn(reconcile(
        md(
            spec(),
            Some(serde_json::to_value(&status).unwrap()),
            &[FINALIZER],
        ),
        ctx.clone(),
    ));
    expect_children(&mut handle).await;
    // No status write: the Stale condition is kept as it was, not dropped.
    assert_no_more(&mut handle).await;
    let error = task.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("get endpoint"), "{error}");
    assert_eq!(
        ctx.registry.calls(),
        ["resolve fraud Version(1)", "get fraud"]
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_in_the_status_and_nothing_is_deployed() {
    let (ctx, mut handle) = context(FakeRegistry::with_versions(&[1]));
    let mut both = spec();
    both["alias"] = json!("production");
    let task = tokio::spawn(reconcile(md(both, None, &[FINALIZER]), ctx.clone()));
    let status = expect_status(&mut handle, StatusCode::OK).await;
    assert_eq!(status.body["status"]["reason"], REASON_INVALID_SPEC);
    assert!(
        status.body["status"]["message"]
            .as_str()
            .unwrap()
            .contains("set either version or alias"),
        "{}",
        status.body
    );
    expect_event(&mut handle, "Warning", REASON_INVALID_SPEC).await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_no_more(&mut handle).await;
    assert!(ctx.registry.calls().is_empty());
}

#[tokio::test]
async fn a_registry_failure_after_the_status_write_is_retried_with_backoff() {
    let registry = FakeRegistry::with_versions(&[1]);
    registry.state().fail_puts = true;
    let (ctx, mut handle) = context(registry);
    let resource = md(spec(), None, &[FINALIZER]);
    let task = tokio::spawn(reconcile(resource.clone(), ctx.clone()));
    expect_children(&mut handle).await;
    expect_status(&mut handle, StatusCode::OK).await;
    // The decision's events still go out: the next reconcile finds it already taken.
    expect_event(&mut handle, "Normal", "Deployed").await;
    let error = task.await.unwrap().unwrap_err();
    assert!(!error.is_conflict());
    assert!(error.to_string().contains("put endpoint"), "{error}");
    let first = error_policy(resource.clone(), &error, ctx.clone());
    let second = error_policy(resource, &error, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(Duration::from_secs(2)));
    // The error policy's Warning Events.
    expect_event(&mut handle, "Warning", "ReconcileError").await;
    let again = serve(&mut handle, StatusCode::OK, echo).await;
    assert_eq!(again.body["reason"], "ReconcileError");
    assert_eq!(
        ctx.metrics
            .registry_errors
            .with_label_values(&["put endpoint"])
            .get(),
        1
    );
}

#[tokio::test]
async fn deleting_removes_the_endpoint_then_the_finalizer() {
    let registry = FakeRegistry::with_versions(&[1, 2]);
    registry.state().endpoint = Some(canary_endpoint(0.1));
    let (ctx, mut handle) = context(registry);
    let mut deleting =
        serde_json::to_value(md(spec(), None, &["other/finalizer", FINALIZER]).as_ref()).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!(now().to_rfc3339());
    let deleting: ModelDeployment = serde_json::from_value(deleting).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(deleting), ctx.clone()));
    let seen = serve(&mut handle, StatusCode::OK, |_| {
        serde_json::to_value(md(spec(), None, &["other/finalizer"]).as_ref()).unwrap()
    })
    .await;
    assert_eq!((seen.method.as_str(), seen.path_only()), ("PATCH", MD_PATH));
    assert_eq!(seen.content_type, "application/json-patch+json");
    assert_eq!(
        seen.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/1"}
        ]),
        "only its own finalizer goes"
    );
    task.await.unwrap().unwrap();
    assert_no_more(&mut handle).await;
    assert_eq!(ctx.registry.calls(), ["get fraud", "delete fraud"]);
    assert!(ctx.registry.state().endpoint.is_none());
}

#[tokio::test]
async fn an_endpoint_now_routing_another_model_is_not_deleted() {
    let registry = FakeRegistry::with_versions(&[1]);
    let mut foreign = canary_endpoint(0.1);
    foreign.policy.model = "churn".into();
    registry.state().endpoint = Some(foreign);
    let (ctx, mut handle) = context(registry);
    let mut deleting = serde_json::to_value(md(spec(), None, &[FINALIZER]).as_ref()).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!(now().to_rfc3339());
    let task = tokio::spawn(reconcile(
        Arc::new(serde_json::from_value(deleting).unwrap()),
        ctx.clone(),
    ));
    serve(&mut handle, StatusCode::OK, |_| {
        serde_json::to_value(md(spec(), None, &[]).as_ref()).unwrap()
    })
    .await;
    task.await.unwrap().unwrap();
    assert_eq!(ctx.registry.calls(), ["get fraud"]);
    assert!(ctx.registry.state().endpoint.is_some());
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let delays: Vec<u64> = [1, 2, 3, 9, 10, 30]
        .iter()
        .map(|n| backoff(*n).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 256, 300, 300]);
}

#[test]
fn candidate_drift_needs_enough_samples_and_reads_psi() {
    use ferry_api::drift::DriftAnalysis;
    let config = md(spec(), None, &[]).spec.rollout_config().unwrap();
    let mut a = analysis(0);
    let drift: DriftAnalysis = serde_json::from_value(json!({
        "samples": 40,
        "scores": {"psi": 0.4, "kl": 0.1, "js": 0.2},
        "features": {}
    }))
    .unwrap();
    a.versions[1].drift = Some(drift);
    assert_eq!(
        candidate_drift(&a, Some(2), &config),
        None,
        "40 < minRequests 50"
    );
    a.versions[1].drift.as_mut().unwrap().samples = 50;
    assert_eq!(candidate_drift(&a, Some(2), &config), Some(0.4));
    assert_eq!(
        candidate_drift(&a, Some(1), &config),
        None,
        "the stable has no score"
    );
    assert_eq!(candidate_drift(&a, None, &config), None);
}
