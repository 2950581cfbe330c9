//! Following the registries' event logs, so that the operator reacts at once.
//!
//! A `ModelDeployment` resolves its `@alias` and reads its endpoint's conditions (`Stale`,
//! `PerformanceDegraded`, `Drifted`) from the registry on every reconcile (level-triggered: the
//! registry is the truth, and a missed event costs nothing but time), and is reconciled at
//! least every `alias_resync` (tracking an alias) or `resync`. This module makes the reaction
//! prompt: for each registry (and token) that resources use, one task long-polls the event log,
//! and a reconcile of every resource is triggered by
//! - an `alias.*` or `version.updated` event about a model a resource tracks by alias, or
//! - a judgement of a resource's endpoint (`model.stale`/`model.refreshed`,
//!   `performance.degraded`/`recovered`, `drift.detected`/`recovered`), whose conditions the
//!   status copies.
//!
//! Bulk reconciles are idempotent and cheap (a few calls per resource), and resources may point
//! at different registries with different tokens, so this is simpler than mapping events to
//! resources exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::events::EventKind;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crd::{ModelDeployment, SecretKeyRef, TargetRef};
use crate::reconcile::{Context, read_token};
use crate::registry::{Registry, RegistryAt};

/// How long one long-poll waits for events (below the registry's 60 s limit).
const POLL_WAIT: Duration = Duration::from_secs(25);

/// How often the set of registries to follow is recomputed from the resources.
const RESCAN: Duration = Duration::from_secs(10);

/// A registry and where its token comes from: one follower each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Source {
    url: String,
    namespace: String,
    secret: Option<(String, String)>,
}

fn source_of(md: &ModelDeployment) -> Option<Source> {
    Some(Source {
        url: md.spec.registry.url.trim().to_string(),
        namespace: md.namespace()?,
        secret: md
            .spec
            .registry
            .token_secret
            .as_ref()
            .map(|s| (s.name.clone(), s.key.clone())),
    })
}

/// Whether an event of `kind` about `subject` on `url` concerns a resource: an alias moved or
/// went, or a version was archived or restored, of a model the resource tracks by alias; or the
/// registry judged the resource's endpoint (named after the resource).
fn concerns(
    resources: &[Arc<ModelDeployment>],
    url: &str,
    kind: Option<EventKind>,
    subject: &str,
) -> bool {
    let Some(kind) = kind else {
        return false;
    };
    resources
        .iter()
        .filter(|md| source_of(md).is_some_and(|s| s.url == url))
        .any(|md| match kind {
            EventKind::AliasSet | EventKind::AliasDeleted | EventKind::VersionUpdated => {
                matches!(md.spec.target(), Ok(TargetRef::Alias(_)))
                    && md.spec.model.trim() == subject
            }
            EventKind::ModelStale
            | EventKind::ModelRefreshed
            | EventKind::PerformanceDegraded
            | EventKind::PerformanceRecovered
            | EventKind::DriftDetected
            | EventKind::DriftRecovered => md.name_any() == subject,
            _ => false,
        })
}

/// Runs until the process stops: keeps one follower per registry that resources use, each
/// sending `()` on `trigger` when an event concerns one ([`concerns`]). Start it once `store`
/// is ready.
pub async fn follow<R: Registry>(
    ctx: Arc<Context<R>>,
    store: Store<ModelDeployment>,
    trigger: mpsc::Sender<()>,
) {
    let mut running: HashMap<Source, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(RESCAN);
    loop {
        tick.tick().await;
        let mut wanted: Vec<Source> = store
            .state()
            .iter()
            // A resource the operator may not act on (trust::Trust) is followed by no one.
            .filter(|md| {
                ctx.settings
                    .trust
                    .check(&md.spec, &ctx.settings.default_image)
                    .is_ok()
            })
            .filter_map(|md| source_of(md))
            .collect();
        wanted.sort_by(|a, b| (&a.url, &a.namespace).cmp(&(&b.url, &b.namespace)));
        wanted.dedup();
        running.retain(|source, task| {
            let keep = wanted.contains(source) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for source in wanted {
            if running.contains_key(&source) {
                continue;
            }
            tracing::info!(registry = %source.url, namespace = %source.namespace, "following registry events");
            let task = tokio::spawn(follow_one(
                ctx.clone(),
                source.clone(),
                store.clone(),
                trigger.clone(),
            ));
            running.insert(source, task);
        }
    }
}

async fn follow_one<R: Registry>(
    ctx: Arc<Context<R>>,
    source: Source,
    store: Store<ModelDeployment>,
    trigger: mpsc::Sender<()>,
) {
    let mut after: Option<i64> = None;
    let mut failures: u32 = 0;
    loop {
        match poll(&ctx, &source, &store, &trigger, &mut after).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_secs(1u64 << failures.min(5));
                tracing::warn!(registry = %source.url, error = %e, retry_in = ?delay, "cannot follow registry events (aliases and conditions are still read at every reconcile)");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One long-poll: triggers a reconcile when an event concerns a resource.
async fn poll<R: Registry>(
    ctx: &Context<R>,
    source: &Source,
    store: &Store<ModelDeployment>,
    trigger: &mpsc::Sender<()>,
    after: &mut Option<i64>,
) -> Result<(), String> {
    let token = match &source.secret {
        Some((name, key)) => {
            let secret = SecretKeyRef {
                name: name.clone(),
                key: key.clone(),
            };
            Some(
                read_token(&ctx.client, &source.namespace, &secret)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };
    let at = RegistryAt {
        url: source.url.clone(),
        token,
    };
    let cursor = match *after {
        Some(cursor) => cursor,
        // Start at the head: resources resolve their alias and read their conditions on every
        // reconcile, so what came before is already accounted for.
        None => {
            ctx.registry
                .events(&at, 0, 1, Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?
                .head
        }
    };
    *after = Some(cursor);
    let page = ctx
        .registry
        .events(&at, cursor, 100, POLL_WAIT)
        .await
        .map_err(|e| e.to_string())?;
    *after = Some(page.next_after);
    let resources = store.state();
    if page
        .events
        .iter()
        .any(|e| concerns(&resources, &source.url, e.event_kind(), &e.subject))
    {
        tracing::info!(registry = %source.url, "a registry event concerns a resource: reconciling");
        // Full means a reconcile of everything is already pending.
        let _ = trigger.try_send(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(name: &str, model: &str, alias: Option<&str>, url: &str) -> ModelDeployment {
        let mut spec = serde_json::json!({
            "model": model,
            "registry": {"url": url, "tokenSecret": {"name": "tok"}},
            "auth": {"tokensSecret": {"name": "tok", "key": "tokens"}}
        });
        match alias {
            Some(a) => spec["alias"] = a.into(),
            None => spec["version"] = 1.into(),
        }
        let mut md = ModelDeployment::new(name, serde_json::from_value(spec).unwrap());
        md.metadata.namespace = Some("ml".into());
        md
    }

    #[test]
    fn every_resource_is_followed_keyed_by_registry_and_secret() {
        let a = source_of(&md("a", "fraud", Some("@production"), "http://r:8080 ")).unwrap();
        assert_eq!(a.url, "http://r:8080");
        assert_eq!(a.secret, Some(("tok".into(), "token".into())));
        assert_eq!(
            a,
            source_of(&md("b", "churn", Some("staging"), "http://r:8080")).unwrap()
        );
        assert_eq!(
            a,
            source_of(&md("c", "fraud", None, "http://r:8080")).unwrap(),
            "a resource on a fixed version is followed for its conditions"
        );
    }

    #[test]
    fn a_judgement_of_a_resources_endpoint_concerns_it_whatever_its_target() {
        let resources = vec![
            Arc::new(md("fraud-eu", "fraud", Some("production"), "http://r:8080")),
            Arc::new(md("churn", "churn", None, "http://r:8080")),
        ];
        let r = "http://r:8080";
        for kind in [
            EventKind::ModelStale,
            EventKind::ModelRefreshed,
            EventKind::PerformanceDegraded,
            EventKind::PerformanceRecovered,
            EventKind::DriftDetected,
            EventKind::DriftRecovered,
        ] {
            assert!(concerns(&resources, r, Some(kind), "fraud-eu"), "{kind:?}");
            assert!(concerns(&resources, r, Some(kind), "churn"), "{kind:?}");
            assert!(
                !concerns(&resources, r, Some(kind), "fraud"),
                "{kind:?}: the subject is the endpoint, not the model"
            );
            assert!(!concerns(
                &resources,
                "http://other:8080",
                Some(kind),
                "churn"
            ));
        }
        assert!(!concerns(
            &resources,
            r,
            Some(EventKind::SkewDetected),
            "fraud-eu"
        ));
    }

    #[test]
    fn alias_events_about_a_tracked_model_on_the_same_registry_concern_it() {
        let resources = vec![
            Arc::new(md("a", "fraud", Some("production"), "http://r:8080")),
            Arc::new(md("b", "churn", None, "http://r:8080")),
        ];
        let r = "http://r:8080";
        assert!(concerns(&resources, r, Some(EventKind::AliasSet), "fraud"));
        assert!(concerns(
            &resources,
            r,
            Some(EventKind::AliasDeleted),
            "fraud"
        ));
        assert!(concerns(
            &resources,
            r,
            Some(EventKind::VersionUpdated),
            "fraud"
        ));
        assert!(!concerns(
            &resources,
            r,
            Some(EventKind::EndpointUpdated),
            "fraud"
        ));
        assert!(
            !concerns(&resources, r, Some(EventKind::AliasSet), "churn"),
            "churn tracks a version"
        );
        assert!(!concerns(
            &resources,
            "http://other:8080",
            Some(EventKind::AliasSet),
            "fraud"
        ));
        assert!(!concerns(&resources, r, None, "fraud"), "unknown kinds");
    }
}
