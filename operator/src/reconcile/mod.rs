//! The reconcile loop: the thin shell around the rollout engine.
//!
//! Each reconcile of a `ModelDeployment`, inside the finalizer:
//! 1. validates the spec (an invalid one is reported in the status and waits for an edit);
//! 2. reads the registry token from the spec's Secret;
//! 3. applies the serving Deployment and Service (server-side apply, owner references);
//! 4. resolves the target (version or `@alias`) through the registry, every time: an alias that
//!    moved starts a rollout on the next reconcile;
//! 5. fetches the endpoint's analysis when the engine says a judgement is due;
//! 6. asks the engine ([`crate::rollout::advance`]) what happens next;
//! 7. reads the registry endpoint once: its conditions (`Stale`, `PerformanceDegraded`,
//!    `Drifted`) join the status, its policy is what step 9 compares with;
//! 8. writes the status by server-side apply, with the `resourceVersion` it decided from, so a
//!    decision taken on a stale copy is refused (409) and taken again on fresh data;
//! 9. makes the registry's endpoint policy equal to [`crate::rollout::desired_policy`] of the
//!    new state (level-triggered: it also repairs a policy changed behind its back);
//! 10. records the engine's Kubernetes Events and registry `rollout.step` events.
//!
//! The order of 8 and 9 is the saga's crash safety: the status is the log, the policy follows it.
//! On delete, the finalizer deletes the registry endpoint; the Deployment and Service go with
//! their owner (garbage collection).

pub mod children;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_api::records::{
    DriftMetric, EndpointPolicy, EndpointRecord, RolloutStep, StepAnalysis, StepCheck,
};
use ferry_api::traffic::EndpointAnalysis;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{
    ModelDeployment, ModelDeploymentStatus, SecretKeyRef, SpecError, TargetRef, status_for,
};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryAt, RegistryError};
use crate::rollout::{
    self, Action as EngineAction, EventType, Inputs, Observation, RolloutConfig, RolloutEvent,
    Target,
};
use crate::verdict::AnalysisRecord;
use children::ChildError;

/// The field manager of everything the operator applies (children and status).
pub const FIELD_MANAGER: &str = "ferry-operator";

/// The finalizer that deletes the registry endpoint before the resource goes.
pub const FINALIZER: &str = "ferry.dev/endpoint";

/// `status.reason` while the spec cannot be acted on.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Why a reconcile failed. Every variant is retried with backoff ([`error_policy`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A registry call failed.
    #[error("registry ({call}): {source}")]
    Registry {
        /// Which call.
        call: &'static str,
        /// The cause.
        #[source]
        source: RegistryError,
    },
    /// The registry token could not be read.
    #[error("registry token: Secret {namespace}/{name}: {problem}")]
    Secret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A child could not be built.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The resource has no namespace (it is namespaced, so it was never stored).
    #[error("the ModelDeployment has no namespace")]
    NoNamespace,
    /// Adding or removing the finalizer failed, or the reconcile inside it did.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// The innermost reconcile error, through the finalizer's wrapping.
    fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            _ => self,
        }
    }

    /// A write refused because the resource changed since it was read: retried at once on the
    /// fresh copy, not an error worth a warning.
    pub fn is_conflict(&self) -> bool {
        let kube_conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        match self.inner() {
            Error::Kube(e) => kube_conflict(e),
            Error::Finalizer(f) => match f.as_ref() {
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    kube_conflict(e)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// How the reconciler behaves; see `ferry operator --help`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The serving image when a resource names none.
    pub default_image: String,
    /// Reconcile every resource at least this often, even when nothing changed (repairs a
    /// registry policy changed behind the operator's back).
    pub resync: Duration,
    /// Resolve a tracked alias at least this often (registry events usually come sooner).
    pub alias_resync: Duration,
    /// The prediction index the serving pods share (`redis://…`), so that feedback joins at
    /// any replica; none keeps each pod's predictions in its own memory.
    pub feedback_store: Option<String>,
    /// The online feature store the serving pods read features from (`redis://…`).
    pub feature_store: Option<String>,
    /// The registries and images resources may name ([`crate::trust`]).
    pub trust: crate::trust::Trust,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_image: crate::crd::DEFAULT_IMAGE.into(),
            resync: Duration::from_secs(300),
            alias_resync: Duration::from_secs(60),
            feedback_store: None,
            feature_store: None,
            trust: crate::trust::Trust::default(),
        }
    }
}

type Clock = Box<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every reconcile shares.
pub struct Context<R> {
    /// The Kubernetes client.
    pub client: Client,
    /// The registry calls.
    pub registry: R,
    /// Kubernetes Events about resources.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Behaviour.
    pub settings: Settings,
    clock: Clock,
    /// Failures in a row per resource (namespace, name), for the backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl<R: Registry> Context<R> {
    /// A context reporting Events as `ferry-operator` (instance: `$POD_NAME`, else the host
    /// name).
    pub fn new(client: Client, registry: R, settings: Settings, metrics: Metrics) -> Self {
        let instance = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty());
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            registry,
            metrics,
            settings,
            clock: Box::new(Utc::now),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context with a fixed or simulated clock (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn record_failure(&self, key: (String, String)) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear_failures(&self, key: &(String, String)) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    fn registry_error(&self, call: &'static str, source: RegistryError) -> Error {
        self.metrics
            .registry_errors
            .with_label_values(&[call])
            .inc();
        Error::Registry { call, source }
    }
}

/// Reconciles one `ModelDeployment`: see the module docs.
///
/// # Errors
/// [`Error`]; the controller retries with [`error_policy`].
pub async fn reconcile<R: Registry>(
    md: Arc<ModelDeployment>,
    ctx: Arc<Context<R>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = md.namespace().ok_or(Error::NoNamespace)?;
    let key = (namespace.clone(), md.name_any());
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer::finalizer(&api, FINALIZER, md, |event| async {
        match event {
            Finalizer::Apply(md) => apply(&md, &ctx).await,
            Finalizer::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    if result.is_ok() {
        ctx.clear_failures(&key);
    }
    result
}

/// Retries a failed reconcile: at once on a conflict (the fresh copy is on its way), else with
/// exponential backoff from 1 s to 5 min per resource. A Warning Event says why.
pub fn error_policy<R: Registry>(
    md: Arc<ModelDeployment>,
    error: &Error,
    ctx: Arc<Context<R>>,
) -> Action {
    let key = (md.namespace().unwrap_or_default(), md.name_any());
    if error.is_conflict() {
        tracing::debug!(resource = %format!("{}/{}", key.0, key.1), "conflict; retrying on the fresh copy");
        return Action::requeue(Duration::from_millis(500));
    }
    let failures = ctx.record_failure(key.clone());
    let delay = backoff(failures);
    tracing::warn!(
        resource = %format!("{}/{}", key.0, key.1),
        error = %error,
        failures,
        retry_in = ?delay,
        "reconcile failed"
    );
    let reference = md.object_ref(&());
    let event = KubeEvent {
        type_: KubeEventType::Warning,
        reason: "ReconcileError".into(),
        note: Some(truncate(&error.to_string(), 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let dropped = ctx.metrics.events_dropped.clone();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            dropped.inc();
            tracing::debug!(error = %e, "cannot record the ReconcileError event");
        }
    });
    Action::requeue(delay)
}

/// 1 s, 2 s, 4 s, … capped at 5 minutes.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(300))
}

async fn apply<R: Registry>(md: &ModelDeployment, ctx: &Context<R>) -> Result<Action, Error> {
    let now = ctx.now();
    let name = md.name_any();
    let namespace = md.namespace().ok_or(Error::NoNamespace)?;
    let valid = crate::crd::check_name(&name)
        .and_then(|()| md.spec.rollout_config())
        .and_then(|config| {
            let target = md.spec.target()?;
            ctx.settings
                .trust
                .check(&md.spec, &ctx.settings.default_image)?;
            Ok((config, target))
        });
    let (config, target_ref) = match valid {
        Ok(valid) => valid,
        Err(problem) => return invalid_spec(md, ctx, &problem, now).await,
    };
    let at = registry_at(md, ctx).await?;
    apply_children(md, ctx, &namespace).await?;

    let target = resolve(ctx, &at, &config.model, &target_ref).await;

    let mut state = md.rollout_state();
    if state.reason.as_deref() == Some(REASON_INVALID_SPEC) {
        // The spec was fixed: the complaint goes.
        state.reason = None;
        state.message = None;
    }
    let analysis = match rollout::analysis_window(&config, &state, now) {
        Some(window) => match ctx.registry.analysis(&at, &name, window).await {
            Ok(analysis) => Some(analysis),
            Err(e) => {
                // The engine waits and asks again; nothing is judged on missing numbers.
                let e = ctx.registry_error("analysis", e);
                tracing::warn!(resource = %format!("{namespace}/{name}"), error = %e, "no analysis");
                None
            }
        },
        None => None,
    };
    let observation = analysis.as_ref().map(|a| Observation {
        analysis: a,
        candidate_drift: candidate_drift(a, state.candidate_version, &config),
    });
    let decision = rollout::advance(
        &config,
        &state,
        &Inputs {
            now,
            target,
            controls: md.controls(),
            observation,
        },
    );

    // Read once: its conditions go into the status, its policy into `sync_policy`. Unread, the
    // status keeps the registry's conditions it had.
    let endpoint = ctx
        .registry
        .get_endpoint(&at, &name)
        .await
        .map_err(|e| ctx.registry_error("get endpoint", e));
    if let Err(e) = &endpoint {
        tracing::warn!(resource = %format!("{namespace}/{name}"), error = %e, "cannot read the endpoint");
    }
    let registry_conditions = endpoint
        .as_ref()
        .ok()
        .map(|found| found.as_ref().map_or(&[][..], |e| e.conditions.as_slice()));
    let status = status_for(
        decision.state.clone(),
        md.status.as_ref(),
        registry_conditions,
        md.metadata.generation,
        now,
    );
    if md.status.as_ref() != Some(&status) {
        write_status(md, ctx, &status).await?;
    }
    // The policy follows the status; a failure here is repaired by the next reconcile, which
    // finds the same state in the status.
    let policy = sync_policy(
        ctx,
        &at,
        &name,
        rollout::desired_policy(&config, &decision.state),
        endpoint,
    )
    .await;
    record(md, ctx, &at, &decision.actions).await;
    policy?;

    let mut requeue = decision.requeue_after.unwrap_or(ctx.settings.resync);
    if matches!(target_ref, TargetRef::Alias(_)) {
        requeue = requeue.min(ctx.settings.alias_resync);
    }
    Ok(Action::requeue(requeue.min(ctx.settings.resync)))
}

/// Deletes the registry endpoint, if it is still this resource's (same model).
async fn cleanup<R: Registry>(md: &ModelDeployment, ctx: &Context<R>) -> Result<Action, Error> {
    let name = md.name_any();
    // A resource naming a registry (or image) it may not was never acted on: nothing to delete,
    // and its token goes nowhere.
    if ctx
        .settings
        .trust
        .check(&md.spec, &ctx.settings.default_image)
        .is_err()
    {
        return Ok(Action::await_change());
    }
    let at = match registry_at(md, ctx).await {
        Ok(at) => at,
        // The Secret may be gone already (a namespace being deleted): try without a token.
        Err(Error::Secret { .. }) => RegistryAt {
            url: md.spec.registry.url.trim().to_string(),
            token: None,
        },
        Err(e) => return Err(e),
    };
    let current = match ctx.registry.get_endpoint(&at, &name).await {
        Ok(current) => current,
        Err(e) if matches!(e.status(), Some(401 | 403)) => {
            give_up_cleanup(md, ctx, &e).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(ctx.registry_error("get endpoint", e)),
    };
    match current {
        Some(endpoint) if endpoint.policy.model == md.spec.model.trim() => {
            match ctx.registry.delete_endpoint(&at, &name).await {
                Ok(_) => {
                    tracing::info!(endpoint = %name, "endpoint deleted with its ModelDeployment");
                }
                Err(e) if matches!(e.status(), Some(401 | 403)) => {
                    give_up_cleanup(md, ctx, &e).await;
                }
                Err(e) => return Err(ctx.registry_error("delete endpoint", e)),
            }
        }
        Some(endpoint) => tracing::info!(
            endpoint = %name,
            model = %endpoint.policy.model,
            "the endpoint now routes another model: left in place"
        ),
        None => {}
    }
    Ok(Action::await_change())
}

/// Without a token that works the endpoint can never be deleted; blocking the resource's
/// deletion forever would not help, so the endpoint is left behind and a Warning says so.
async fn give_up_cleanup<R: Registry>(
    md: &ModelDeployment,
    ctx: &Context<R>,
    error: &RegistryError,
) {
    let message = format!(
        "the registry refused to delete endpoint {} ({error}); it is left in place: delete it with `ferry endpoint delete {}`",
        md.name_any(),
        md.name_any()
    );
    tracing::warn!(resource = %md.name_any(), "{message}");
    publish(ctx, md, EventType::Warning, "EndpointLeftBehind", &message).await;
}

/// An invalid spec: said in the status (reason `InvalidSpec`) and in a Warning, and nothing
/// else changes until the spec is edited.
async fn invalid_spec<R: Registry>(
    md: &ModelDeployment,
    ctx: &Context<R>,
    problem: &SpecError,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let mut state = md.rollout_state();
    state.reason = Some(REASON_INVALID_SPEC.into());
    state.message = Some(problem.to_string());
    // The registry is not asked (the spec may name one it must not call): its conditions stay.
    let status = status_for(state, md.status.as_ref(), None, md.metadata.generation, now);
    if md.status.as_ref() != Some(&status) {
        write_status(md, ctx, &status).await?;
        publish(
            ctx,
            md,
            EventType::Warning,
            REASON_INVALID_SPEC,
            &problem.to_string(),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// The registry of the resource, with the token from its Secret.
async fn registry_at<R: Registry>(
    md: &ModelDeployment,
    ctx: &Context<R>,
) -> Result<RegistryAt, Error> {
    let url = md.spec.registry.url.trim().to_string();
    let token = match &md.spec.registry.token_secret {
        None => None,
        Some(secret) => {
            let namespace = md.namespace().ok_or(Error::NoNamespace)?;
            Some(read_token(&ctx.client, &namespace, secret).await?)
        }
    };
    Ok(RegistryAt { url, token })
}

/// The token in a Secret's key, trimmed.
///
/// # Errors
/// [`Error::Secret`] when the Secret or the key is missing or empty; [`Error::Kube`] when the
/// API call fails.
pub async fn read_token(
    client: &Client,
    namespace: &str,
    secret: &SecretKeyRef,
) -> Result<String, Error> {
    let problem = |problem: String| Error::Secret {
        namespace: namespace.into(),
        name: secret.name.clone(),
        problem,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_opt(&secret.name)
        .await?
        .ok_or_else(|| problem("not found".into()))?;
    // Only Secrets marked for it: a resource's author must not make the operator read (and
    // send to a URL of their choice) any Secret of the namespace.
    let label = crate::trust::TOKEN_SECRET_LABEL;
    if found
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label))
        .map(String::as_str)
        != Some("true")
    {
        return Err(problem(format!(
            "is not labelled {label}=true; the operator reads only the Secrets marked for it \
             (kubectl label secret {} {label}=true)",
            secret.name
        )));
    }
    let bytes = found
        .data
        .as_ref()
        .and_then(|d| d.get(&secret.key))
        .ok_or_else(|| problem(format!("has no key `{}`", secret.key)))?;
    let token = std::str::from_utf8(&bytes.0)
        .map_err(|_| problem(format!("key `{}` is not UTF-8 text", secret.key)))?
        .trim();
    if token.is_empty() {
        return Err(problem(format!("key `{}` is empty", secret.key)));
    }
    Ok(token.to_string())
}

/// Server-side applies the Deployment and the Service (a no-op when they are as wanted).
async fn apply_children<R: Registry>(
    md: &ModelDeployment,
    ctx: &Context<R>,
    namespace: &str,
) -> Result<(), Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = md.name_any();
    let deployment = children::deployment(
        md,
        &ctx.settings.default_image,
        children::Stores {
            feedback: ctx.settings.feedback_store.as_deref(),
            features: ctx.settings.feature_store.as_deref(),
        },
    )?;
    Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
        .patch(&name, &params, &Patch::Apply(&deployment))
        .await?;
    let service = children::service(md)?;
    Api::<Service>::namespaced(ctx.client.clone(), namespace)
        .patch(&name, &params, &Patch::Apply(&service))
        .await?;
    Ok(())
}

/// The version the spec asks for, as the registry resolves it now.
async fn resolve<R: Registry>(
    ctx: &Context<R>,
    at: &RegistryAt,
    model: &str,
    target: &TargetRef,
) -> Target {
    let what = match target {
        TargetRef::Version(v) => format!("version {v} of model {model}"),
        TargetRef::Alias(a) => format!("alias @{a} of model {model}"),
    };
    match ctx.registry.resolve(at, model, target).await {
        Ok(version) => Target::Version(version),
        Err(e) if e.is_not_found() => Target::Unresolved(format!("{what} not found: {e}")),
        Err(e) => {
            let e = ctx.registry_error("resolve", e);
            Target::Unresolved(format!("cannot resolve {what}: {e}"))
        }
    }
}

/// The candidate's drift score (PSI, the scale `maxDrift` is written in), when the registry
/// scored it on at least `minRequests` live values: fewer say nothing.
fn candidate_drift(
    analysis: &EndpointAnalysis,
    candidate: Option<i64>,
    config: &RolloutConfig,
) -> Option<f64> {
    let candidate = candidate?;
    let drift = analysis
        .versions
        .iter()
        .find(|v| v.version == candidate)?
        .drift
        .as_ref()?;
    if drift.samples < config.thresholds.min_requests {
        return None;
    }
    drift.score(DriftMetric::Psi).filter(|s| s.is_finite())
}

/// Writes the status by server-side apply, conditional on the `resourceVersion` the decision
/// was taken on.
async fn write_status<R: Registry>(
    md: &ModelDeployment,
    ctx: &Context<R>,
    status: &ModelDeploymentStatus,
) -> Result<(), Error> {
    let namespace = md.namespace().ok_or(Error::NoNamespace)?;
    let name = md.name_any();
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut metadata = json!({ "name": name });
    if let Some(version) = &md.metadata.resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    let patch = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Makes the endpoint's policy `desired` (nothing before a version is deployed), given
/// `current`, the endpoint as this reconcile read it (an error when it could not be read: then
/// nothing is written). The operator owns the routing (model, stable, canary, shadows), and the
/// max age when the spec sets `maxAge`; what is set on the endpoint directly (`ferry endpoint
/// set`) is kept: the sticky header, the drift and decay policies, and the max age when the
/// spec has none.
async fn sync_policy<R: Registry>(
    ctx: &Context<R>,
    at: &RegistryAt,
    name: &str,
    desired: Option<EndpointPolicy>,
    current: Result<Option<EndpointRecord>, Error>,
) -> Result<(), Error> {
    let Some(mut desired) = desired else {
        return Ok(());
    };
    if let Some(current) = &current? {
        desired.sticky_header = current.policy.sticky_header.clone();
        desired.drift = current.policy.drift.clone();
        desired.decay = current.policy.decay.clone();
        if desired.max_age_seconds.is_none() {
            desired.max_age_seconds = current.policy.max_age_seconds;
        }
        if current.policy == desired {
            return Ok(());
        }
    }
    let written = ctx
        .registry
        .put_endpoint(at, name, &desired)
        .await
        .map_err(|e| ctx.registry_error("put endpoint", e))?;
    tracing::info!(
        endpoint = %name,
        revision = written.revision,
        stable = desired.stable,
        canary = ?desired.canary.as_ref().map(|c| (c.version, c.weight)),
        shadows = desired.shadows.len(),
        "endpoint policy set"
    );
    Ok(())
}

/// Records the engine's events: Kubernetes Events on the resource and `rollout.step` events in
/// the registry. Best effort: a lost event is counted and logged, never retried (retrying
/// would mean deciding again).
async fn record<R: Registry>(
    md: &ModelDeployment,
    ctx: &Context<R>,
    at: &RegistryAt,
    actions: &[EngineAction],
) {
    let name = md.name_any();
    let source = format!(
        "ModelDeployment {}/{name}",
        md.namespace().unwrap_or_default()
    );
    for action in actions {
        match action {
            // The policy is synced from the state as a whole (see `sync_policy`).
            EngineAction::SetPolicy(_) => {}
            EngineAction::RecordEvent {
                event_type,
                reason,
                message,
            } => {
                ctx.metrics
                    .rollout_steps
                    .with_label_values(&[reason.as_str()])
                    .inc();
                tracing::info!(resource = %source, reason = %reason, "{message}");
                publish(ctx, md, *event_type, reason, message).await;
            }
            EngineAction::RegistryEvent(event) => {
                let step = rollout_step(event, &source);
                if let Err(e) = ctx.registry.record_step(at, &name, &step).await {
                    ctx.metrics.events_dropped.inc();
                    let e = ctx.registry_error("rollout event", e);
                    tracing::warn!(resource = %source, error = %e, reason = %event.reason, "rollout step not recorded in the registry");
                }
            }
        }
    }
}

/// The registry's form of an engine event.
pub fn rollout_step(event: &RolloutEvent, source: &str) -> RolloutStep {
    RolloutStep {
        reason: event.reason.clone(),
        message: truncate(
            &event.message,
            ferry_api::rollout::MAX_ROLLOUT_MESSAGE_CHARS,
        ),
        phase: serde_json::to_value(event.phase)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        stable: event.stable,
        candidate: event.candidate,
        step: event.step,
        weight: event.weight,
        source: Some(source.to_string()),
        analysis: event.analysis.as_ref().map(step_analysis),
    }
}

/// The registry's form of the analysis behind a step.
fn step_analysis(record: &AnalysisRecord) -> StepAnalysis {
    let word = |value: serde_json::Result<serde_json::Value>| {
        value
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    StepAnalysis {
        stage: word(serde_json::to_value(record.stage)),
        verdict: word(serde_json::to_value(record.verdict)),
        decided_by: record
            .decided_by
            .map(|check| word(serde_json::to_value(check))),
        candidate: record.candidate_version,
        stable: record.stable_version,
        window_seconds: record.window_seconds,
        checks: record
            .checks
            .iter()
            .map(|c| StepCheck {
                check: word(serde_json::to_value(c.check)),
                value: c.value.filter(|v| v.is_finite()),
                threshold: c.threshold.filter(|v| v.is_finite()),
                passed: c.passed,
                note: c.note.as_deref().map(|n| truncate(n, 256)),
            })
            .collect(),
    }
}

async fn publish<R: Registry>(
    ctx: &Context<R>,
    md: &ModelDeployment,
    event_type: EventType,
    reason: &str,
    message: &str,
) {
    let event = KubeEvent {
        type_: match event_type {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: reason.into(),
        note: Some(truncate(message, 1000)),
        action: "Rollout".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        ctx.metrics.events_dropped.inc();
        tracing::warn!(resource = %md.name_any(), error = %e, reason, "cannot record the Kubernetes Event");
    }
}

/// At most `max` characters, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
