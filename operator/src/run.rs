//! `ferry operator`: connects to Kubernetes, starts the probe listener, the alias followers and
//! the controller, and runs until SIGTERM or Ctrl+C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource};
use tokio_stream::wrappers::ReceiverStream;

use crate::crd::ModelDeployment;
use crate::metrics::Metrics;
use crate::probes::{self, ProbeState};
use crate::reconcile::{self, Context, Settings, children};
use crate::registry::HttpRegistry;

/// Settings of `ferry operator`.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace; every namespace when `None`.
    pub namespace: Option<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub listen: SocketAddr,
    /// The serving image for resources that name none.
    pub serving_image: String,
    /// Deadline of each registry call.
    pub registry_timeout: Duration,
    /// Reconcile every resource at least this often.
    pub resync: Duration,
    /// Resolve tracked aliases at least this often.
    pub alias_resync: Duration,
    /// The prediction index serving pods share (`redis://…`).
    pub feedback_store: Option<String>,
    /// The online feature store serving pods read (`redis://…`).
    pub feature_store: Option<String>,
    /// The registries and images resources may name.
    pub trust: crate::trust::Trust,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        let settings = Settings::default();
        OperatorConfig {
            namespace: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            serving_image: settings.default_image,
            registry_timeout: Duration::from_secs(10),
            resync: settings.resync,
            alias_resync: settings.alias_resync,
            feedback_store: None,
            feature_store: None,
            trust: crate::trust::Trust::default(),
        }
    }
}

/// Runs the operator until SIGTERM or Ctrl+C; reconciles in flight finish first.
///
/// The Kubernetes client comes from `KUBECONFIG` (or `~/.kube/config`), else the in-cluster
/// service account.
///
/// # Errors
/// When Kubernetes cannot be reached, the CRD is not installed, or the listener cannot bind.
pub async fn run(config: OperatorConfig) -> anyhow::Result<()> {
    let client = Client::try_default().await.context(
        "cannot configure the Kubernetes client (set KUBECONFIG, or run in a pod with a service account)",
    )?;
    let mds: Api<ModelDeployment> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    check_crd(&mds).await?;

    let metrics = Metrics::new().context("cannot register the metrics")?;
    let registry =
        HttpRegistry::new(config.registry_timeout).context("cannot build the HTTP client")?;
    let settings = Settings {
        default_image: config.serving_image.clone(),
        resync: config.resync,
        alias_resync: config.alias_resync,
        feedback_store: config.feedback_store.clone(),
        feature_store: config.feature_store.clone(),
        trust: config.trust.clone(),
    };
    for warning in config.trust.warnings() {
        tracing::warn!("{warning} (see docs/security.md)");
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        registry,
        settings,
        metrics.clone(),
    ));

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %config.listen, "probes and metrics on /healthz, /readyz, /metrics");
    let probe_router = probes::router(ProbeState {
        ready: ready.clone(),
        metrics,
    });
    let probe_server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, probe_router).await {
            tracing::error!(error = %e, "the probe listener stopped");
        }
    });

    let children_config = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        children::MANAGED_BY
    ));
    let (deployments, services): (Api<Deployment>, Api<Service>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let controller = Controller::new(mds, watcher::Config::default())
        .owns(deployments, children_config.clone())
        .owns(services, children_config);
    let store = controller.store();
    let (trigger, triggered) = tokio::sync::mpsc::channel(1);
    let followers = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            // The store's readiness wakes only one waiter (the controller itself also waits),
            // so ask again until it answers.
            loop {
                match tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
            ready.store(true, Ordering::Release);
            tracing::info!(resources = store.state().len(), "ready");
            crate::follow::follow(ctx, store, trigger).await;
        }
    });

    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        serving_image = %config.serving_image,
        "operator started"
    );
    controller
        .reconcile_all_on(ReceiverStream::new(triggered))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(resource = %object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {
                    // Logged with its cause by the error policy.
                }
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
    followers.abort();
    probe_server.abort();
    tracing::info!("operator stopped");
    Ok(())
}

/// Fails early, with the fix, when the CRD is missing or the operator may not list resources.
async fn check_crd(api: &Api<ModelDeployment>) -> anyhow::Result<()> {
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "the {} CRD is not installed: kubectl apply -f deploy/crds/ (or `ferry crdgen` to write it)",
            <ModelDeployment as kube::CustomResourceExt>::crd_name()
        ),
        Err(e) => Err(e).context(format!(
            "cannot list {}: check the API server and the operator's RBAC (deploy/rbac/operator.yaml)",
            ModelDeployment::plural(&())
        )),
    }
}
