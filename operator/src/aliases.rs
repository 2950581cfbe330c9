//! Following tracked aliases through the registries' event logs.
//!
//! A `ModelDeployment` that tracks `@alias` resolves it through the registry on every reconcile
//! (level-triggered: the registry is the truth, and a missed event costs nothing but time), and
//! is reconciled at least every `alias_resync`. This module makes the reaction prompt: for each
//! registry (and token) that tracking resources use, one task long-polls the event log, and an
//! `alias.*` or `version.updated` event about a tracked model triggers a reconcile of every
//! resource. Bulk reconciles are idempotent and cheap (a few calls per resource), and resources
//! may point at different registries with different tokens, so this is simpler than mapping
//! events to resources exactly.

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
    if !matches!(md.spec.target(), Ok(TargetRef::Alias(_))) {
        return None;
    }
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

/// Whether an event of `kind` about `model` on `url` concerns a resource tracking an alias:
/// an alias moved or went, or a version was archived or restored.
fn concerns(
    resources: &[Arc<ModelDeployment>],
    url: &str,
    kind: Option<EventKind>,
    model: &str,
) -> bool {
    if !matches!(
        kind,
        Some(EventKind::AliasSet | EventKind::AliasDeleted | EventKind::VersionUpdated)
    ) {
        return false;
    }
    resources
        .iter()
        .any(|md| source_of(md).is_some_and(|s| s.url == url) && md.spec.model.trim() == model)
}

/// Runs until the process stops: keeps one follower per registry that tracking resources use,
/// each sending `()` on `trigger` when a tracked alias may have moved. Start it once `store`
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
            tracing::info!(registry = %source.url, namespace = %source.namespace, "following registry events for tracked aliases");
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
                tracing::warn!(registry = %source.url, error = %e, retry_in = ?delay, "cannot follow registry events (tracked aliases are still resolved every reconcile)");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One long-poll: triggers a reconcile when an event may have moved a tracked alias.
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
        // Start at the head: resources resolve their alias on every reconcile, so what came
        // before is already accounted for.
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
        tracing::info!(registry = %source.url, "a tracked alias may have moved: reconciling");
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
    fn only_resources_tracking_an_alias_are_followed_keyed_by_registry_and_secret() {
        let a = source_of(&md("a", "fraud", Some("@production"), "http://r:8080 ")).unwrap();
        assert_eq!(a.url, "http://r:8080");
        assert_eq!(a.secret, Some(("tok".into(), "token".into())));
        assert_eq!(
            a,
            source_of(&md("b", "churn", Some("staging"), "http://r:8080")).unwrap()
        );
        assert!(source_of(&md("c", "fraud", None, "http://r:8080")).is_none());
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
