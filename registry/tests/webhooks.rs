//! Webhooks over HTTP on SQLite and on PostgreSQL, against a local receiver: signed, retried,
//! dead-lettered, replayed, delivered once across restarts and replicas, and never leaking their
//! secrets. Time is a clock the tests advance, so no test sleeps through a backoff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use common::{Db, MLP, in_ci, json, multipart, skipped};
use ferry_api::client::RegistryClient;
use ferry_api::http::auth::Tokens;
use ferry_api::http::metrics::HttpMetrics;
use ferry_api::webhooks::{DeliveryStatus, NewWebhook};
use ferry_registry::webhooks::signature::verify;
use ferry_registry::webhooks::{RoundSummary, WebhookConfig, WebhookWorker};
use ferry_registry::{AppState, BlobStore, Config, MetadataStore};
use hmac::Mac;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Generates a SQLite and a PostgreSQL `#[tokio::test]` for an `async fn(Db)` check.
macro_rules! on_both_databases {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Db::Postgres).await;
                }
            )*
        }
    };
}

on_both_databases!(
    a_receiver_that_fails_three_times_then_succeeds_gets_exactly_one_effective_delivery,
    a_receiver_that_always_fails_ends_in_the_dead_letter_list_and_a_replay_delivers_it,
    only_subscribed_event_types_are_delivered_in_event_order,
    a_registry_restarted_mid_retry_still_completes_the_delivery_exactly_once,
    two_replicas_sending_at_once_never_send_one_delivery_twice,
    each_event_is_queued_once_per_webhook_however_often_fan_out_runs,
    deleting_a_webhook_emits_an_event_and_drops_its_pending_deliveries,
);

// ---------------------------------------------------------------------------------------------
// Harness: a registry over a database that can be reopened (a restart), and a receiver.

struct Registry {
    url: String,
    dir: tempfile::TempDir,
    pg: Option<(String, String)>,
    config: Config,
    state: AppState,
    router: Router,
}

fn postgres_admin_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

async fn open_state(url: &str, dir: &std::path::Path, config: Config) -> AppState {
    let store = MetadataStore::connect(url, 8).await.unwrap();
    store.migrate().await.unwrap();
    let blobs = BlobStore::open(dir.join("blobs").to_str().unwrap(), &[]).unwrap();
    let prometheus = Arc::new(prometheus::Registry::new());
    let http = HttpMetrics::register(&prometheus).unwrap();
    AppState::new(store, blobs, config, prometheus, http).unwrap()
}

impl Registry {
    async fn new(db: Db) -> Option<Self> {
        Self::with_config(db, local_config()).await
    }

    async fn with_config(db: Db, config: Config) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("ferry.db").display()),
                None,
            ),
            Db::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
                let created = async {
                    sqlx::any::install_default_drivers();
                    let mut conn =
                        <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await?;
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                }
                .await;
                if let Err(e) = created {
                    assert!(!in_ci(), "PostgreSQL is required when CI=true: {e}");
                    skipped(&format!(
                        "PostgreSQL unavailable ({e}); scripts/test.sh starts it"
                    ));
                    return None;
                }
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                (url.to_string(), Some((admin, name)))
            }
        };
        let state = open_state(&url, dir.path(), config.clone()).await;
        let router = common::client_router(state.clone());
        Some(Registry {
            url,
            dir,
            pg,
            config,
            state,
            router,
        })
    }

    /// Closes the database pool and opens a new store on the same database: what a restarted
    /// process sees.
    async fn restart(&mut self) {
        self.state.store.close().await;
        self.state = open_state(&self.url, self.dir.path(), self.config.clone()).await;
        self.router = common::client_router(self.state.clone());
    }

    /// Another store on the same database: a second registry replica.
    async fn replica(&self) -> MetadataStore {
        let store = MetadataStore::connect(&self.url, 4).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    async fn cleanup(self) {
        self.state.store.close().await;
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, json(&bytes))
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call("GET", uri, None, None).await;
        (status, body)
    }

    /// Creates a webhook; returns its id and secret.
    async fn subscribe(&self, url: &str, events: &[&str]) -> (String, String) {
        let (status, _, body) = self
            .call(
                "POST",
                "/api/v1/webhooks",
                Some(json!({ "url": url, "events": events })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Pushes a version of `model` (a `model.created` event first time, then `version.created`).
    async fn push(&self, model: &str) {
        let (content_type, body) = multipart(&[("model", MLP.to_vec())]);
        let response = self
            .router
            .clone()
            .oneshot(
                Request::post(format!("/api/v1/models/{model}/versions"))
                    .header("content-type", content_type)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    async fn set_alias(&self, model: &str, alias: &str, version: i64) {
        let (status, _, body) = self
            .call(
                "PUT",
                &format!("/api/v1/models/{model}/aliases/{alias}"),
                Some(json!({ "version": version })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn deliveries(&self, webhook: &str, status: Option<&str>) -> Vec<Value> {
        let uri = match status {
            Some(s) => format!("/api/v1/webhooks/{webhook}/deliveries?status={s}"),
            None => format!("/api/v1/webhooks/{webhook}/deliveries"),
        };
        let (code, body) = self.get(&uri).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    fn worker(&self, config: WebhookConfig) -> WebhookWorker {
        WebhookWorker::new(
            self.state.store.clone(),
            config,
            &prometheus::Registry::new(),
        )
        .unwrap()
    }
}

fn config() -> WebhookConfig {
    WebhookConfig {
        max_attempts: 8,
        request_timeout: Duration::from_secs(5),
        // The receivers of these tests listen on loopback.
        allow_private: true,
        ..WebhookConfig::default()
    }
}

/// The registry's settings with webhooks to loopback allowed (the receivers of these tests).
fn local_config() -> Config {
    let mut config = Config::default();
    config.webhooks.allow_private = true;
    config
}

/// A clock the tests move by hand: each round happens well after every retry has come due
/// (the backoff cap is 5 minutes).
struct Clock(DateTime<Utc>);

impl Clock {
    fn new() -> Self {
        Clock(Utc::now())
    }
    fn tick(&mut self) -> DateTime<Utc> {
        self.0 += TimeDelta::minutes(10);
        self.0
    }
}

/// What a receiver saw of one request.
#[derive(Clone)]
struct Call {
    headers: HeaderMap,
    body: Bytes,
    answered: StatusCode,
}

impl Call {
    fn delivery(&self) -> String {
        header(&self.headers, "x-ferry-delivery")
    }
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// A webhook receiver on 127.0.0.1: answers 500 to its first `fail_first` requests (forever
/// with `usize::MAX`), 200 after, each after `delay`.
struct Receiver {
    url: String,
    fail_remaining: AtomicUsize,
    delay_ms: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Arc::new(Receiver {
            url: format!("http://{addr}/hooks/ferry?token=query-token-abc"),
            fail_remaining: AtomicUsize::new(fail_first),
            delay_ms: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hooks/ferry", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        receiver
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn successes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.answered.is_success())
            .collect()
    }

    fn heal(&self) {
        self.fail_remaining.store(0, Ordering::SeqCst);
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let fail = r
        .fail_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    let answered = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    // Recorded before any delay: a request the sender gave up on still counts as received.
    r.calls.lock().unwrap().push(Call {
        headers,
        body,
        answered,
    });
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    answered
}

/// Checks the signature the way a receiver would, and once more with an HMAC computed here.
fn assert_signed(call: &Call, secret: &str) {
    let signature = header(&call.headers, "x-ferry-signature");
    verify(secret, &signature, &call.body, Utc::now().timestamp(), 300)
        .unwrap_or_else(|e| panic!("signature {signature} does not verify: {e}"));
    let (t, v1) = signature.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&call.body);
    assert_eq!(
        v1.strip_prefix("v1=").unwrap(),
        hex::encode(mac.finalize().into_bytes())
    );
    let age = Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "signed {age} s ago");
    assert!(
        verify(
            secret,
            &signature,
            &call.body,
            Utc::now().timestamp() + 301,
            300
        )
        .is_err(),
        "a stale signature must be refused"
    );
}

// ---------------------------------------------------------------------------------------------
// Checks on both databases

async fn a_receiver_that_fails_three_times_then_succeeds_gets_exactly_one_effective_delivery(
    db: Db,
) {
    let Some(registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(3).await;
    let (hook, secret) = registry
        .subscribe(&receiver.url, &["version.created"])
        .await;
    registry.push("fraud").await;
    let worker = registry.worker(config());
    let mut clock = Clock::new();

    let mut rounds = Vec::new();
    for _ in 0..6 {
        rounds.push(worker.run_once(clock.tick()).await.unwrap());
    }
    assert_eq!(rounds[0].queued, 1);
    let attempted: Vec<usize> = rounds.iter().map(|r| r.attempted).collect();
    assert_eq!(attempted, [1, 1, 1, 1, 0, 0]);
    assert_eq!(
        rounds.iter().map(|r| r.delivered).sum::<usize>(),
        1,
        "{rounds:?}"
    );

    let calls = receiver.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(receiver.successes().len(), 1);
    let id = calls[0].delivery();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    for call in &calls {
        assert_eq!(call.delivery(), id, "one delivery id across attempts");
        assert_eq!(header(&call.headers, "x-ferry-event"), "version.created");
        assert_eq!(header(&call.headers, "content-type"), "application/json");
        assert_eq!(call.event()["type"], "version.created");
        assert_eq!(call.event()["data"]["version"], 1);
        assert_signed(call, &secret);
    }

    let delivered = registry.deliveries(&hook, Some("delivered")).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["id"], id);
    assert_eq!(delivered[0]["attempts"], 4);
    assert_eq!(delivered[0]["last_status"], 200);
    assert!(delivered[0].get("last_error").is_none());
    assert!(registry.deliveries(&hook, Some("pending")).await.is_empty());
    registry.cleanup().await;
}

async fn a_receiver_that_always_fails_ends_in_the_dead_letter_list_and_a_replay_delivers_it(
    db: Db,
) {
    let Some(registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(usize::MAX).await;
    let (hook, secret) = registry
        .subscribe(&receiver.url, &["version.created"])
        .await;
    registry.push("fraud").await;
    // Metrics on the registry's own Prometheus registry, as the binary wires it.
    let worker = WebhookWorker::new(
        registry.state.store.clone(),
        WebhookConfig {
            max_attempts: 3,
            ..config()
        },
        &registry.state.prometheus,
    )
    .unwrap();
    let mut clock = Clock::new();
    let summaries: Vec<RoundSummary> = {
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(worker.run_once(clock.tick()).await.unwrap());
        }
        out
    };
    assert_eq!(
        summaries.iter().map(|s| s.retrying).collect::<Vec<_>>(),
        [1, 1, 0, 0, 0]
    );
    assert_eq!(
        summaries.iter().map(|s| s.dead).collect::<Vec<_>>(),
        [0, 0, 1, 0, 0]
    );
    assert_eq!(receiver.calls().len(), 3, "no attempt after the last one");

    let (status, dead) = registry
        .get(&format!("/api/v1/webhooks/{hook}/dead-letters"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let dead = dead["items"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["status"], "dead");
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["last_status"], 500);
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("500"),
        "{}",
        dead[0]
    );
    let delivery = dead[0]["id"].as_str().unwrap().to_string();
    let (_, metrics) = registry.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("ferry_webhook_dead_letters 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhook_deliveries_total{outcome=\"dead\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhook_delivery_attempts_total{outcome=\"http_error\"} 3"),
        "{metrics}"
    );

    receiver.heal();
    let replay = format!("/api/v1/webhooks/{hook}/dead-letters/{delivery}/replay");
    let (status, _, replayed) = registry.call("POST", &replay, None, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed["status"], "pending");
    assert_eq!(replayed["attempts"], 0);
    let (status, _, again) = registry.call("POST", &replay, None, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "only dead letters: {again}");

    let round = worker.run_once(clock.tick()).await.unwrap();
    assert_eq!(round.delivered, 1);
    let successes = receiver.successes();
    assert_eq!(successes.len(), 1);
    assert_eq!(
        successes[0].delivery(),
        delivery,
        "a replay keeps the delivery id"
    );
    assert_signed(&successes[0], &secret);
    let (_, dead) = registry
        .get(&format!("/api/v1/webhooks/{hook}/dead-letters"))
        .await;
    assert!(dead["items"].as_array().unwrap().is_empty());
    let (_, metrics) = registry.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ferry_webhook_dead_letters 0")
    );
    registry.cleanup().await;
}

async fn only_subscribed_event_types_are_delivered_in_event_order(db: Db) {
    let Some(registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(0).await;
    let (hook, _) = registry
        .subscribe(&receiver.url, &["version.created", "alias.*"])
        .await;
    let everything = Receiver::start(0).await;
    let (_, _) = registry.subscribe(&everything.url, &["*"]).await;
    registry.push("fraud").await; // model.created, version.created
    registry.set_alias("fraud", "production", 1).await; // alias.set
    registry.push("fraud").await; // version.created
    registry.push("churn").await; // model.created, version.created
    registry.set_alias("fraud", "production", 2).await; // alias.set

    let worker = registry.worker(config());
    let mut clock = Clock::new();
    while worker.run_once(clock.tick()).await.unwrap().attempted > 0 {}

    let seen: Vec<(String, i64)> = receiver
        .calls()
        .iter()
        .map(|c| {
            let e = c.event();
            (
                e["type"].as_str().unwrap().to_string(),
                e["id"].as_i64().unwrap(),
            )
        })
        .collect();
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "version.created",
            "alias.set",
            "version.created",
            "version.created",
            "alias.set"
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "in event order: {seen:?}"
    );
    assert_eq!(registry.deliveries(&hook, None).await.len(), 5);
    // The catch-all hook, created after the first one, sees every later event: the 7 model,
    // version and alias events.
    let all: Vec<String> = everything
        .calls()
        .iter()
        .map(|c| c.event()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(all.iter().filter(|t| *t == "model.created").count(), 2);
    registry.cleanup().await;
}

async fn a_registry_restarted_mid_retry_still_completes_the_delivery_exactly_once(db: Db) {
    let Some(mut registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(2).await;
    let (hook, secret) = registry
        .subscribe(&receiver.url, &["version.created"])
        .await;
    registry.push("fraud").await;
    let mut clock = Clock::new();

    // First life: the first attempt fails, then the process dies.
    let worker = registry.worker(config());
    assert_eq!(worker.run_once(clock.tick()).await.unwrap().retrying, 1);
    drop(worker);
    registry.restart().await;

    // Second life: the stored delivery is retried (and fails again); no second delivery is
    // queued for the same event.
    let worker = registry.worker(config());
    let round = worker.run_once(clock.tick()).await.unwrap();
    assert_eq!((round.queued, round.retrying), (0, 1));
    drop(worker);
    registry.restart().await;

    // Third life: it succeeds.
    let worker = registry.worker(config());
    assert_eq!(worker.run_once(clock.tick()).await.unwrap().delivered, 1);
    drop(worker);
    registry.restart().await;

    // Fourth life: nothing left to send.
    let worker = registry.worker(config());
    for _ in 0..3 {
        assert_eq!(worker.run_once(clock.tick()).await.unwrap().attempted, 0);
    }
    let calls = receiver.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        receiver.successes().len(),
        1,
        "exactly one effective delivery"
    );
    assert!(calls.iter().all(|c| c.delivery() == calls[0].delivery()));
    assert_signed(&calls[2], &secret);
    let deliveries = registry.deliveries(&hook, None).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], "delivered");
    assert_eq!(deliveries[0]["attempts"], 3);
    registry.cleanup().await;
}

async fn two_replicas_sending_at_once_never_send_one_delivery_twice(db: Db) {
    let Some(registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(0).await;
    // Slow answers keep both replicas busy at the same time.
    receiver.delay_ms.store(200, Ordering::SeqCst);
    registry
        .subscribe(&receiver.url, &["version.created"])
        .await;
    for _ in 0..4 {
        registry.push("fraud").await;
    }
    let other_store = registry.replica().await;
    let a = registry.worker(WebhookConfig {
        replica: "replica-a".into(),
        ..config()
    });
    let b = WebhookWorker::new(
        other_store.clone(),
        WebhookConfig {
            replica: "replica-b".into(),
            ..config()
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    let (fa, fb) = tokio::join!(a.fan_out_once(), b.fan_out_once());
    assert_eq!(fa.unwrap() + fb.unwrap(), 4, "each event queued once");
    let now = Utc::now() + TimeDelta::seconds(1);
    let (ra, rb) = tokio::join!(a.send_due_once(now), b.send_due_once(now));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.delivered + rb.delivered, 4, "{ra:?} {rb:?}");
    let mut ids: Vec<String> = receiver.calls().iter().map(Call::delivery).collect();
    assert_eq!(ids.len(), 4, "no delivery sent twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    other_store.close().await;
    registry.cleanup().await;
}

async fn each_event_is_queued_once_per_webhook_however_often_fan_out_runs(db: Db) {
    let Some(registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(usize::MAX).await;
    let (first, _) = registry.subscribe(&receiver.url, &["*"]).await;
    registry.push("fraud").await;
    let (second, _) = registry
        .subscribe(&receiver.url, &["version.*", "model.created"])
        .await;
    registry.push("fraud").await;
    let worker = registry.worker(WebhookConfig {
        batch: 1,
        ..config()
    });
    // One event per fan-out transaction: the cursors advance step by step.
    let mut queued = Vec::new();
    for _ in 0..8 {
        queued.push(worker.fan_out_once().await.unwrap());
    }
    // first: model.created, version.created, webhook.created (second's), version.created;
    // second: version.created only.
    assert_eq!(queued.iter().sum::<u64>(), 5, "{queued:?}");
    assert_eq!(registry.deliveries(&first, None).await.len(), 4);
    assert_eq!(registry.deliveries(&second, None).await.len(), 1);
    let (_, hook) = registry.get(&format!("/api/v1/webhooks/{first}")).await;
    let (_, head) = registry.get("/api/v1/events?after=0&limit=1").await;
    assert_eq!(hook["cursor"], head["head"]);
    registry.cleanup().await;
}

async fn deleting_a_webhook_emits_an_event_and_drops_its_pending_deliveries(db: Db) {
    let Some(registry) = Registry::new(db).await else {
        return;
    };
    let receiver = Receiver::start(0).await;
    let (hook, secret) = registry.subscribe(&receiver.url, &["*"]).await;
    registry.push("fraud").await;
    let worker = registry.worker(config());
    assert_eq!(worker.fan_out_once().await.unwrap(), 2);

    let (status, _, _) = registry
        .call("DELETE", &format!("/api/v1/webhooks/{hook}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = registry.get(&format!("/api/v1/webhooks/{hook}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = registry
        .call("DELETE", &format!("/api/v1/webhooks/{hook}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        worker
            .run_once(Clock::new().tick())
            .await
            .unwrap()
            .attempted,
        0
    );
    assert!(receiver.calls().is_empty());

    let (_, page) = registry.get("/api/v1/events?after=0&limit=100").await;
    let events = page["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "webhook.created",
            "model.created",
            "version.created",
            "webhook.deleted"
        ]
    );
    for e in [&events[0], &events[3]] {
        assert_eq!(e["subject"], hook);
        assert_eq!(e["data"]["id"], hook);
        assert_eq!(e["data"]["events"], json!(["*"]));
        assert!(!e.to_string().contains(&secret));
        assert!(
            !e.to_string().contains("query-token-abc"),
            "query strings stay out of events: {e}"
        );
    }
    registry.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Checks that do not depend on the database

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_after_the_timeout_counts_as_a_failure() {
    let registry = Registry::new(Db::Sqlite).await.unwrap();
    let receiver = Receiver::start(0).await;
    receiver.delay_ms.store(3_000, Ordering::SeqCst);
    let (hook, _) = registry
        .subscribe(&receiver.url, &["version.created"])
        .await;
    registry.push("fraud").await;
    let worker = registry.worker(WebhookConfig {
        request_timeout: Duration::from_millis(300),
        ..config()
    });
    let round = worker.run_once(Clock::new().tick()).await.unwrap();
    assert_eq!(
        (round.attempted, round.delivered, round.retrying),
        (1, 0, 1)
    );
    assert_eq!(
        receiver.calls().len(),
        1,
        "the receiver did get the request"
    );
    let pending = registry.deliveries(&hook, Some("pending")).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["attempts"], 1);
    assert!(pending[0].get("last_status").is_none());
    let error = pending[0]["last_error"].as_str().unwrap();
    assert!(error.contains("no answer within 0.3 s"), "{error}");
    assert!(pending[0]["next_attempt_at"].is_string());
    registry.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_a_transport_failure_without_the_url_in_the_error() {
    let registry = Registry::new(Db::Sqlite).await.unwrap();
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (hook, _) = registry
        .subscribe(
            &format!("http://127.0.0.1:{port}/hook?token=query-token-abc"),
            &["version.created"],
        )
        .await;
    registry.push("fraud").await;
    let worker = registry.worker(config());
    assert_eq!(
        worker.run_once(Clock::new().tick()).await.unwrap().retrying,
        1
    );
    let pending = registry.deliveries(&hook, Some("pending")).await;
    let error = pending[0]["last_error"].as_str().unwrap();
    assert!(!error.contains("query-token-abc"), "{error}");
    assert!(error.to_lowercase().contains("connect"), "{error}");
    registry.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_requests_are_validated_with_clear_messages() {
    let registry = Registry::new(Db::Sqlite).await.unwrap();
    let cases = [
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            "http or https",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "absolute URL"),
        (
            json!({"url": "https://u:p@example.com/", "events": ["*"]}),
            "user name or password",
        ),
        (
            json!({"url": "https://example.com/", "events": ["version.craeted"]}),
            "not a known event type",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            "at least one",
        ),
        (
            json!({"url": "https://example.com/", "events": ["*"], "secret": "too-short"}),
            "16 to 256",
        ),
        (
            json!({"url": "https://example.com/", "events": ["*"], "colour": "red"}),
            "unknown field",
        ),
    ];
    for (body, says) in cases {
        let (status, headers, problem) = registry
            .call("POST", "/api/v1/webhooks", Some(body.clone()), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(header(&headers, "content-type"), "application/problem+json");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
        assert!(!detail.contains("too-short"), "secrets are never echoed");
    }
    let (status, problem) = registry.get("/api/v1/webhooks/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = registry.get(&format!("/api/v1/webhooks/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = registry
        .get(&format!("/api/v1/webhooks/{unknown}/deliveries"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (hook, _) = registry
        .subscribe("https://example.com/hook", &["drift.*"])
        .await;
    let (status, problem) = registry
        .get(&format!("/api/v1/webhooks/{hook}/deliveries?status=lost"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _, _) = registry
        .call(
            "POST",
            &format!("/api/v1/webhooks/{hook}/dead-letters/{unknown}/replay"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    registry.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_secret_is_shown_once_and_listings_page_newest_first() {
    let registry = Registry::new(Db::Sqlite).await.unwrap();
    let (status, headers, created) = registry
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": "https://example.com/a", "events": ["version.created"]})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(header(&headers, "cache-control"), "no-store");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        header(&headers, "location"),
        format!("/api/v1/webhooks/{id}")
    );
    let secret = created["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 64,
        "{secret}"
    );
    let (_, read) = registry.get(&format!("/api/v1/webhooks/{id}")).await;
    assert!(read.get("secret").is_none(), "{read}");
    assert_eq!(read["url"], "https://example.com/a");
    assert_eq!(read["events"], json!(["version.created"]));

    registry.subscribe("https://example.com/b", &["*"]).await;
    registry.subscribe("https://example.com/c", &["*"]).await;
    let (_, page) = registry.get("/api/v1/webhooks?limit=2").await;
    let urls: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, ["https://example.com/c", "https://example.com/b"]);
    let token = page["next_page_token"].as_str().unwrap();
    let (_, rest) = registry
        .get(&format!("/api/v1/webhooks?limit=2&page_token={token}"))
        .await;
    assert_eq!(rest["items"][0]["url"], "https://example.com/a");
    assert!(rest.get("next_page_token").is_none());
    assert!(!page.to_string().contains("whsec_"));
    registry.cleanup().await;
}

/// Collects everything logged while the test runs.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// One thread, so every task logs through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_appear_in_reads_events_errors_metrics_or_logs() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let registry = Registry::new(Db::Sqlite).await.unwrap();
    let secret = "my-very-own-webhook-secret-4711";
    let receiver = Receiver::start(1).await;
    let (status, _, created) = registry
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": receiver.url, "events": ["*"], "secret": secret})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["secret"], secret, "shown once, at creation");
    let hook = created["id"].as_str().unwrap().to_string();
    registry.push("fraud").await;
    let worker = WebhookWorker::new(
        registry.state.store.clone(),
        config(),
        &registry.state.prometheus,
    )
    .unwrap();
    let mut clock = Clock::new();
    for _ in 0..3 {
        worker.run_once(clock.tick()).await.unwrap();
    }
    assert_eq!(receiver.successes().len(), 2, "both events delivered");
    // An error that might have echoed a secret.
    let (status, _, refused) = registry
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(
                json!({"url": "gopher://x", "events": ["*"], "secret": "second-secret-0815-0815"}),
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut seen = vec![refused.to_string(), format!("{worker:?}")];
    for uri in [
        "/api/v1/webhooks".to_string(),
        format!("/api/v1/webhooks/{hook}"),
        format!("/api/v1/webhooks/{hook}/deliveries"),
        format!("/api/v1/webhooks/{hook}/dead-letters"),
        "/api/v1/events?after=0&limit=1000".to_string(),
        "/metrics".to_string(),
    ] {
        let (status, body) = registry.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        seen.push(body.to_string());
    }
    // The creation request itself carried the secret; parse it back to be sure the Debug form
    // a handler might log hides it.
    let parsed: NewWebhook =
        serde_json::from_value(json!({"url": receiver.url, "events": ["*"], "secret": secret}))
            .unwrap();
    seen.push(format!("{parsed:?}"));
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("webhook delivered"), "logs were captured");
    assert!(logged.contains("webhook delivery failed"), "{logged}");
    seen.push(logged);
    for text in &seen {
        assert!(!text.contains(secret), "secret leaked into: {text}");
        assert!(
            !text.contains("second-secret-0815"),
            "secret leaked into: {text}"
        );
    }
    let events = &seen[6];
    assert!(events.contains("webhook.created"), "{events}");
    registry.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_tokens_may_use_the_webhook_routes() {
    let tokens = Tokens::parse([
        "read:read-token-0123456789",
        "write:write-token-0123456789",
        "admin:admin-token-0123456789",
    ])
    .unwrap();
    let registry = Registry::with_config(
        Db::Sqlite,
        Config {
            tokens,
            ..local_config()
        },
    )
    .await
    .unwrap();
    let admin = Some("admin-token-0123456789");
    let (status, _, created) = registry
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": "https://example.com/hook", "events": ["*"]})),
            admin,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let hook = created["id"].as_str().unwrap().to_string();
    let delivery = uuid::Uuid::new_v4();
    let new = Some(json!({"url": "https://example.com/other", "events": ["*"]}));
    let routes: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
        ("GET", "/api/v1/webhooks".into(), None, StatusCode::OK),
        ("POST", "/api/v1/webhooks".into(), new, StatusCode::CREATED),
        (
            "GET",
            format!("/api/v1/webhooks/{hook}"),
            None,
            StatusCode::OK,
        ),
        (
            "GET",
            format!("/api/v1/webhooks/{hook}/deliveries?status=pending"),
            None,
            StatusCode::OK,
        ),
        (
            "GET",
            format!("/api/v1/webhooks/{hook}/dead-letters"),
            None,
            StatusCode::OK,
        ),
        (
            "POST",
            format!("/api/v1/webhooks/{hook}/dead-letters/{delivery}/replay"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "DELETE",
            format!("/api/v1/webhooks/{hook}"),
            None,
            StatusCode::NO_CONTENT,
        ),
    ];
    for (method, uri, body, admin_status) in routes {
        let (status, _, _) = registry.call(method, &uri, body.clone(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous {method} {uri}");
        for token in ["read-token-0123456789", "write-token-0123456789"] {
            let (status, _, problem) = registry.call(method, &uri, body.clone(), Some(token)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{token} {method} {uri}");
            // Reads are refused for lacking `admin`; writes by the middleware already, for
            // lacking `write` (the read token) — a 403 either way.
            assert!(
                problem["detail"].as_str().unwrap().contains("role"),
                "{problem}"
            );
            if method == "GET" {
                assert!(problem["detail"].as_str().unwrap().contains("`admin`"));
            }
        }
        let (status, _, answer) = registry.call(method, &uri, body, admin).await;
        assert_eq!(status, admin_status, "admin {method} {uri}: {answer}");
    }
    registry.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawned_worker_delivers_new_events_on_its_own() {
    let registry = Registry::new(Db::Sqlite).await.unwrap();
    let receiver = Receiver::start(0).await;
    let (_, secret) = registry
        .subscribe(&receiver.url, &["version.created"])
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    let stop = tokio_util::sync::CancellationToken::new();
    ferry_registry::webhooks::spawn_webhooks(
        registry.state.store.clone(),
        WebhookConfig {
            poll_interval: Duration::from_millis(50),
            ..config()
        },
        &registry.state.prometheus,
        &mut tasks,
        stop.clone(),
    )
    .unwrap();
    registry.push("fraud").await;
    // Generous: the worker is woken by the commit; this only bounds a hung test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.successes().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Asked to stop, the worker finishes its round and stops by itself.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), tasks.join_next())
        .await
        .expect("the webhook worker stops when asked")
        .unwrap()
        .unwrap();
    assert_signed(&receiver.successes()[0], &secret);
    registry.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_drives_every_webhook_route() {
    let registry = Registry::new(Db::Sqlite).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, registry.router.clone()).into_future());
    let client = RegistryClient::new(&format!("http://{addr}"), None).unwrap();
    let receiver = Receiver::start(usize::MAX).await;

    let created = client
        .create_webhook(&NewWebhook {
            url: receiver.url.clone(),
            events: vec!["version.created".into()],
            secret: None,
        })
        .await
        .unwrap();
    assert!(!format!("{created:?}").contains(&created.secret));
    let id = created.webhook.id.clone();
    assert_eq!(client.get_webhook(&id).await.unwrap(), created.webhook);
    assert_eq!(
        client.list_webhooks(10, None).await.unwrap().items,
        vec![created.webhook.clone()]
    );
    registry.push("fraud").await;
    let worker = registry.worker(WebhookConfig {
        max_attempts: 1,
        ..config()
    });
    assert_eq!(worker.run_once(Clock::new().tick()).await.unwrap().dead, 1);
    let dead = client.webhook_dead_letters(&id, 10, None).await.unwrap();
    assert_eq!(dead.items.len(), 1);
    assert_eq!(dead.items[0].status, DeliveryStatus::Dead);
    let all = client
        .webhook_deliveries(&id, Some(DeliveryStatus::Dead), 10, None)
        .await
        .unwrap();
    assert_eq!(all.items, dead.items);
    let replayed = client
        .replay_dead_letter(&id, &dead.items[0].id)
        .await
        .unwrap();
    assert_eq!(replayed.status, DeliveryStatus::Pending);
    let again = client
        .replay_dead_letter(&id, &dead.items[0].id)
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(409));
    client.delete_webhook(&id).await.unwrap();
    assert_eq!(
        client.get_webhook(&id).await.unwrap_err().status(),
        Some(404)
    );
    server.abort();
    registry.cleanup().await;
}
