//! The RabbitMQ relay against the real broker (`FERRY_TEST_AMQP_URL`, by default the local one
//! at 127.0.0.1:5672 with guest/guest), on SQLite and on PostgreSQL. Skips with a message when
//! the broker is unreachable, and fails instead when `CI=true`.
//!
//! Each check uses an exchange of its own (`ferry.test.<uuid>`), so checks run in parallel and
//! see only their own messages; everything declared is deleted at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use ferry_registry::relay::{Relay, RelayConfig};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicRejectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};

on_every_backend!(
    events_are_published_persistently_in_order_with_confirms,
    the_cursor_advances_only_after_the_broker_confirms,
    a_restarted_relay_republishes_only_from_its_cursor,
    the_dead_letter_exchange_and_consumer_queues_are_declared,
);

fn amqp_url() -> String {
    std::env::var("FERRY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// The test's own view of the broker: a connection, a channel, and the exchange under test.
struct Broker {
    connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Broker {
    /// Connects, or skips (returns `None`) when the broker is unreachable outside CI.
    async fn connect() -> Option<Broker> {
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(&amqp_url(), ConnectionProperties::default()),
        )
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let connection = match connected {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !in_ci(),
                    "RabbitMQ is required when CI=true but unreachable: {e}"
                );
                skipped(&format!(
                    "RabbitMQ unreachable at {} ({e}); start it or set FERRY_TEST_AMQP_URL",
                    ferry_registry::store::redact_url(&amqp_url())
                ));
                return None;
            }
        };
        let channel = connection.create_channel().await.unwrap();
        Some(Broker {
            connection,
            channel,
            exchange: format!("ferry.test.{}", uuid::Uuid::new_v4().simple()),
        })
    }

    fn config(&self, replica: &str) -> RelayConfig {
        let mut config = RelayConfig::new(&amqp_url()).unwrap();
        config.exchange = self.exchange.clone();
        config.replica = replica.to_string();
        config.confirm_timeout = Duration::from_secs(10);
        config
    }

    fn relay(&self, app: &TestApp, replica: &str) -> Relay {
        Relay::new(
            app.state.store.clone(),
            self.config(replica),
            &prometheus::Registry::new(),
        )
        .unwrap()
    }

    /// A private queue bound to the exchange with `#` (and `arguments`).
    async fn bind_queue(&self, arguments: FieldTable) -> String {
        let queue = self
            .channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .unwrap();
        let name = queue.name().to_string();
        self.channel
            .queue_bind(
                name.as_str().into(),
                self.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        name
    }

    /// Takes every message waiting in `queue` (acknowledged on receipt).
    async fn drain(&self, queue: &str) -> Vec<BasicGetMessage> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(message);
        }
        out
    }

    async fn cleanup(self) {
        for queue in [self.exchange.clone(), format!("{}.dead", self.exchange)] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [self.exchange.clone(), format!("{}.dlx", self.exchange)] {
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

fn message_id(m: &BasicGetMessage) -> i64 {
    m.delivery
        .properties
        .message_id()
        .as_ref()
        .unwrap()
        .as_str()
        .parse()
        .unwrap()
}

fn ids(messages: &[BasicGetMessage]) -> Vec<i64> {
    messages.iter().map(message_id).collect()
}

async fn push(app: &TestApp, model: &str) {
    let (status, body) = app.upload(model, MLP, None, None).await;
    assert_eq!(status.as_u16(), 201, "{body}");
}

// ---------------------------------------------------------------------------------------------

async fn events_are_published_persistently_in_order_with_confirms(app: &TestApp) {
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let prometheus = prometheus::Registry::new();
    let mut relay = Relay::new(
        app.state.store.clone(),
        broker.config("relay-a"),
        &prometheus,
    )
    .unwrap();
    relay.connect().await.unwrap();
    let queue = broker.bind_queue(FieldTable::default()).await;
    push(app, "fraud").await; // 1 model.created, 2 version.created
    push(app, "fraud").await; // 3 version.created
    let (status, _) = app
        .json_request(
            "PUT",
            "/api/v1/models/fraud/aliases/production",
            json!({"version": 2}),
        )
        .await; // 4 alias.set
    assert_eq!(status.as_u16(), 200);
    assert_eq!(relay.cursor().await.unwrap(), 0);

    assert_eq!(relay.run_once().await.unwrap(), 4);
    assert_eq!(relay.cursor().await.unwrap(), 4);
    assert_eq!(relay.run_once().await.unwrap(), 0, "nothing new");

    // The confirms came back, so the broker holds every message already.
    let messages = broker.drain(&queue).await;
    assert_eq!(ids(&messages), [1, 2, 3, 4]);
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m.delivery.routing_key.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "model.created",
            "version.created",
            "version.created",
            "alias.set"
        ]
    );
    for m in &messages {
        let p = &m.delivery.properties;
        assert_eq!(m.delivery.exchange.as_str(), broker.exchange);
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.kind().as_ref().map(|k| k.as_str()),
            Some(m.delivery.routing_key.as_str())
        );
        let subject = p
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .get("subject")
            .cloned();
        assert!(
            matches!(subject, Some(AMQPValue::LongString(ref s)) if s.as_bytes() == b"fraud"),
            "{subject:?}"
        );
        let event: Value = serde_json::from_slice(&m.delivery.data).unwrap();
        assert_eq!(event["id"].as_i64(), Some(message_id(m)));
        assert_eq!(
            event["type"].as_str(),
            Some(m.delivery.routing_key.as_str())
        );
        assert_eq!(event["subject"], "fraud");
    }
    // The ready-made consumer queue got them too.
    let ready = broker
        .channel
        .queue_declare(
            broker.exchange.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(ready.message_count(), 4);

    let text = {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &prometheus.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(
        text.contains("ferry_relay_events_relayed_total 4"),
        "{text}"
    );
    assert!(text.contains("ferry_relay_lag_events 0"), "{text}");
    assert!(text.contains("ferry_relay_connected 1"), "{text}");
    relay.close().await.unwrap();
    broker.cleanup().await;
}

async fn the_cursor_advances_only_after_the_broker_confirms(app: &TestApp) {
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let mut relay = broker.relay(app, "relay-a");
    relay.connect().await.unwrap();
    // A queue that refuses messages beyond two: the broker then answers with a nack.
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(2));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let full = broker.bind_queue(arguments).await;
    push(app, "fraud").await; // 1, 2
    push(app, "fraud").await; // 3
    push(app, "fraud").await; // 4

    let batch = relay.publish_batch().await.unwrap().unwrap();
    assert_eq!(batch.event_ids(), [1, 2, 3, 4]);
    assert_eq!(
        relay.cursor().await.unwrap(),
        0,
        "publishing alone does not move the cursor"
    );
    let refused = relay.confirm(batch).await.unwrap_err().to_string();
    assert!(refused.contains("refused event 3"), "{refused}");
    assert_eq!(
        relay.cursor().await.unwrap(),
        2,
        "only the confirmed prefix counts"
    );

    // Room again: the refused tail is published again and confirmed.
    broker
        .channel
        .queue_purge(full.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(relay.run_once().await.unwrap(), 2);
    assert_eq!(relay.cursor().await.unwrap(), 4);
    assert_eq!(ids(&broker.drain(&full).await), [3, 4]);
    relay.close().await.unwrap();
    broker.cleanup().await;
}

async fn a_restarted_relay_republishes_only_from_its_cursor(app: &TestApp) {
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let mut first = broker.relay(app, "relay-a");
    first.connect().await.unwrap();
    let queue = broker.bind_queue(FieldTable::default()).await;
    push(app, "fraud").await; // 1, 2
    assert_eq!(first.run_once().await.unwrap(), 2);
    assert_eq!(ids(&broker.drain(&queue).await), [1, 2]);

    // Published, but the process dies before the confirms are awaited and recorded.
    push(app, "fraud").await; // 3
    push(app, "fraud").await; // 4
    let unconfirmed = first.publish_batch().await.unwrap().unwrap();
    assert_eq!(unconfirmed.event_ids(), [3, 4]);
    drop(unconfirmed);
    drop(first);
    assert_eq!(
        app.state
            .store
            .relay_cursor(&broker.exchange)
            .await
            .unwrap(),
        2
    );

    // Another replica waits while the dead one's lease is live…
    let mut other = broker.relay(app, "relay-b");
    assert_eq!(other.run_once().await.unwrap(), 0);
    assert_eq!(
        app.state
            .store
            .relay_cursor(&broker.exchange)
            .await
            .unwrap(),
        2
    );
    other.disconnect().await;

    // …and the restarted process (same replica name) resumes from the cursor.
    let mut restarted = broker.relay(app, "relay-a");
    assert_eq!(restarted.run_once().await.unwrap(), 2);
    assert_eq!(restarted.cursor().await.unwrap(), 4);
    let seen = ids(&broker.drain(&queue).await);
    // At-least-once: the unconfirmed tail may arrive twice (consumers deduplicate by
    // message_id), but nothing before the cursor is published again.
    assert!(seen.ends_with(&[3, 4]), "{seen:?}");
    assert!(seen == [3, 4] || seen == [3, 4, 3, 4], "{seen:?}");

    push(app, "fraud").await; // 5
    assert_eq!(restarted.run_once().await.unwrap(), 1);
    assert_eq!(ids(&broker.drain(&queue).await), [5]);

    // A relay that closes hands its lease over at once.
    restarted.close().await.unwrap();
    push(app, "fraud").await; // 6
    assert_eq!(other.run_once().await.unwrap(), 1);
    assert_eq!(ids(&broker.drain(&queue).await), [6]);
    other.close().await.unwrap();
    broker.cleanup().await;
}

async fn the_dead_letter_exchange_and_consumer_queues_are_declared(app: &TestApp) {
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let mut relay = broker.relay(app, "relay-a");
    relay.connect().await.unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    for exchange in [broker.exchange.clone(), format!("{}.dlx", broker.exchange)] {
        broker
            .channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("exchange {exchange} is missing: {e}"));
    }
    push(app, "fraud").await; // 1, 2
    assert_eq!(relay.run_once().await.unwrap(), 2);

    // A consumer of the ready-made queue rejects a message: it is dead-lettered.
    let ready = broker.exchange.clone();
    let message = broker
        .channel
        .basic_get(ready.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the ready-made queue holds the events");
    assert_eq!(message_id(&message), 1);
    message
        .delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dead_queue = format!("{}.dead", broker.exchange);
    let mut dead = Vec::new();
    for _ in 0..50 {
        dead = broker.drain(&dead_queue).await;
        if !dead.is_empty() {
            break;
        }
        // Dead-lettering happens inside the broker after the reject returns.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids(&dead), [1]);
    let headers = dead[0].delivery.properties.headers().clone().unwrap();
    assert!(headers.contains_key("x-death"), "{headers:?}");
    assert_eq!(dead[0].delivery.routing_key.as_str(), "model.created");
    relay.close().await.unwrap();
    broker.cleanup().await;
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_the_round_without_leaking_the_password() {
    let app = TestApp::new(Db::Sqlite, Blobs::Memory).await.unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config =
        RelayConfig::new(&format!("amqp://ferry:pw-4711-secret@127.0.0.1:{port}/%2f")).unwrap();
    config.connect_timeout = Duration::from_secs(3);
    assert!(!format!("{config:?}").contains("pw-4711-secret"));
    let mut relay = Relay::new(
        app.state.store.clone(),
        config,
        &prometheus::Registry::new(),
    )
    .unwrap();
    push(&app, "fraud").await;
    let err = relay.run_once().await.unwrap_err().to_string();
    assert!(err.contains("connecting"), "{err}");
    assert!(!err.contains("pw-4711-secret"), "{err}");
    assert_eq!(relay.cursor().await.unwrap(), 0);
    // The registry is not held up by the broker.
    push(&app, "fraud").await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawned_relay_publishes_new_events_on_its_own() {
    let Some(broker) = Broker::connect().await else {
        return;
    };
    let app = TestApp::new(Db::Sqlite, Blobs::Memory).await.unwrap();
    // Declare the topology first so the test queue can be bound before anything is published.
    let mut setup = broker.relay(&app, "setup");
    setup.connect().await.unwrap();
    setup.disconnect().await;
    let queue = broker.bind_queue(FieldTable::default()).await;
    let mut config = broker.config("spawned");
    config.poll_interval = Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    let stop = tokio_util::sync::CancellationToken::new();
    ferry_registry::relay::spawn_relay(
        app.state.store.clone(),
        config,
        &prometheus::Registry::new(),
        &mut tasks,
        stop.clone(),
    )
    .unwrap();
    push(&app, "fraud").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "relayed {seen:?}");
        seen.extend(ids(&broker.drain(&queue).await));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Asked to stop, it finishes its round and stops by itself (no abort needed).
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), tasks.join_next())
        .await
        .expect("the relay stops when asked")
        .unwrap()
        .unwrap();
    assert_eq!(seen, [1, 2]);
    app.cleanup().await;
    broker.cleanup().await;
}
