//! The event relay: every event of the log, published to a RabbitMQ (AMQP 0.9.1) topic exchange.
//!
//! Publishing is confirmed: the channel is in confirm mode, and an event counts as relayed only
//! when the broker acknowledges it (it is then routed to, and persisted in, every durable queue
//! bound to the exchange). The relay's cursor — the last confirmed event id — is stored in the
//! database and moved only after those confirms, so a crash re-publishes at most the unconfirmed
//! tail: delivery is at-least-once, and consumers deduplicate on `message_id` (the event id).
//!
//! # What a consumer finds
//!
//! - Exchange `ferry.events` (topic, durable): one message per event, routing key = event type
//!   (`version.created`, `drift.detected`…; bind `drift.*` or `#`), body = the event JSON as
//!   `GET /api/v1/events` shows it, `content_type` `application/json`, `delivery_mode` 2
//!   (persistent), `message_id` = event id, `type` = event type, `timestamp` = commit time,
//!   header `subject` = the model or endpoint the event is about.
//! - Exchange `ferry.events.dlx` (topic, durable): the dead-letter exchange.
//! - Queue `ferry.events` (durable, bound with `#`, `x-dead-letter-exchange: ferry.events.dlx`):
//!   a ready-made consumer queue. A consumer that rejects a message without requeueing (or a
//!   message that expires under a TTL policy) dead-letters it into…
//! - Queue `ferry.events.dead` (durable, bound to the DLX with `#`): where failed messages wait
//!   for inspection or a shovel back.
//!
//! Nothing consumes `ferry.events` by default, so it grows until a consumer is attached; set a
//! `max-length` policy (`rabbitmqctl set_policy`) if that is unwanted, or declare your own queues
//! and set `declare_queue: false`.
//!
//! Replicas sharing a database take a lease on the cursor ([`DEFAULT_LEASE`], `--relay-lease`),
//! renewed every round, so one of them relays at a time; a replica that dies is replaced once its
//! lease expires, and the survivor starts at the stored cursor: the dead one's unconfirmed tail
//! is published again (same `message_id`s), nothing is skipped.

mod metrics;

use std::fmt;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use lapin::{ExchangeKind, PublisherConfirm};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use metrics::RelayMetrics;

use crate::error::{Error, Result};
use crate::store::{MetadataStore, redact_url};

/// How long a replica's lease on relaying lasts by default: the longest a dead replica's relay
/// holds up the others. A round renews it; a round that outlasts it (a broker slow to confirm)
/// may be published again by another replica, which consumers deduplicate on `message_id`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The shortest lease: a few idle polls (`poll_interval`, 1 s).
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// Settings of the relay.
#[derive(Clone)]
pub struct RelayConfig {
    /// `amqp://user:password@host:5672/%2f` (or `amqps://`); private so that it is only ever
    /// shown redacted.
    url: String,
    /// The topic exchange events are published to; the dead-letter exchange is `<exchange>.dlx`,
    /// the ready-made queues `<exchange>` and `<exchange>.dead`.
    pub exchange: String,
    /// Whether to declare the ready-made queues (the exchanges are always declared).
    pub declare_queue: bool,
    /// Events published per round before waiting for their confirms.
    pub batch: u32,
    /// Longest wait for the broker to confirm a round.
    pub confirm_timeout: Duration,
    /// Longest wait for a connection to the broker.
    pub connect_timeout: Duration,
    /// First delay before reconnecting after a failure; doubles up to `reconnect_cap`.
    pub reconnect_base: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_cap: Duration,
    /// How often an idle relay looks for events committed by other replicas.
    pub poll_interval: Duration,
    /// How long a replica's lease on relaying lasts without renewal.
    pub lease: Duration,
    /// Identifies this process in the lease.
    pub replica: String,
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("url", &self.redacted_url())
            .field("exchange", &self.exchange)
            .field("declare_queue", &self.declare_queue)
            .field("batch", &self.batch)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl RelayConfig {
    /// Settings for the broker at `url`, with defaults for the rest.
    ///
    /// # Errors
    /// A message (with the password redacted) when `url` is not an `amqp://` or `amqps://` URL.
    pub fn new(url: &str) -> std::result::Result<Self, String> {
        let url = url.trim();
        if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
            return Err(format!("invalid AMQP URL `{}`: {e}", redact_url(url)));
        }
        Ok(RelayConfig {
            url: url.to_string(),
            exchange: "ferry.events".to_string(),
            declare_queue: true,
            batch: 100,
            confirm_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_base: Duration::from_secs(1),
            reconnect_cap: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            lease: DEFAULT_LEASE,
            replica: crate::webhooks::default_replica(),
        })
    }

    /// Names the topic exchange (1 to 200 characters, so that the derived names stay within
    /// AMQP's 255): one per relay, e.g. per environment sharing a broker.
    ///
    /// # Errors
    /// When the name is empty, too long, or starts with `amq.` (reserved by the broker).
    pub fn set_exchange(&mut self, name: &str) -> std::result::Result<(), String> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err("an exchange name must be 1 to 200 characters".into());
        }
        if name.starts_with("amq.") {
            return Err(format!(
                "exchange names starting with `amq.` are the broker's: `{name}`"
            ));
        }
        self.exchange = name.to_string();
        Ok(())
    }

    /// Sets how long a replica's lease on relaying lasts without renewal: how long the other
    /// replicas wait before taking over from one that died (at least [`MIN_LEASE`]).
    ///
    /// # Errors
    /// When `lease` is shorter than [`MIN_LEASE`].
    pub fn set_lease(&mut self, lease: Duration) -> std::result::Result<(), String> {
        if lease < MIN_LEASE {
            return Err(format!(
                "a relay lease must be at least {} s",
                MIN_LEASE.as_secs()
            ));
        }
        self.lease = lease;
        Ok(())
    }

    /// The broker URL with its password replaced by `***`, for messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The dead-letter exchange's name.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }

    /// The ready-made queue's name (the same as the exchange's).
    pub fn queue(&self) -> String {
        self.exchange.clone()
    }

    /// The dead-letter queue's name.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.exchange)
    }
}

/// An open connection and its confirm-mode channel.
struct Link {
    connection: Connection,
    channel: Channel,
}

/// Events published in one round, whose confirms are still to be awaited.
pub struct PublishedBatch {
    confirms: Vec<(i64, PublisherConfirm)>,
    cursor: i64,
}

impl fmt::Debug for PublishedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedBatch")
            .field("after", &self.cursor)
            .field("events", &self.confirms.len())
            .finish()
    }
}

impl PublishedBatch {
    /// The ids of the events published.
    pub fn event_ids(&self) -> Vec<i64> {
        self.confirms.iter().map(|(id, _)| *id).collect()
    }
}

/// Relays the event log to the broker. Hold one per process; [`spawn_relay`] runs it.
pub struct Relay {
    store: MetadataStore,
    config: RelayConfig,
    metrics: RelayMetrics,
    link: Option<Link>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("connected", &self.link.is_some())
            .finish()
    }
}

impl Relay {
    /// A relay over `store` (not yet connected), registering its metrics in `prometheus`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the metrics are already registered.
    pub fn new(
        store: MetadataStore,
        config: RelayConfig,
        prometheus: &prometheus::Registry,
    ) -> Result<Self> {
        let metrics = RelayMetrics::register(prometheus)
            .map_err(|e| Error::Internal(format!("registering relay metrics: {e}")))?;
        Ok(Relay {
            store,
            config,
            metrics,
            link: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Connects (when not connected), enables publisher confirms and declares the topology.
    ///
    /// # Errors
    /// [`Error::Internal`] saying what failed; the URL's password never appears in it.
    pub async fn connect(&mut self) -> Result<()> {
        if self
            .link
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
        {
            return Ok(());
        }
        self.disconnect().await;
        match open_link(&self.config).await {
            Ok(link) => {
                tracing::info!(
                    broker = %self.config.redacted_url(),
                    exchange = %self.config.exchange,
                    "event relay connected"
                );
                self.metrics.connected.set(1);
                self.link = Some(link);
                Ok(())
            }
            Err(e) => {
                self.metrics.failures.with_label_values(&["connect"]).inc();
                Err(e)
            }
        }
    }

    /// Closes the connection (if any); the next round reconnects.
    pub async fn disconnect(&mut self) {
        if let Some(link) = self.link.take() {
            // A broker that is gone will not answer the close; do not wait for it long.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.connection.close(200, "ferry relay closing".into()),
            )
            .await;
        }
        self.metrics.connected.set(0);
    }

    /// Stops relaying: closes the connection and releases the lease so that another replica
    /// can take over at once.
    ///
    /// # Errors
    /// [`Error::Database`] when the lease cannot be released (it then simply expires).
    pub async fn close(&mut self) -> Result<()> {
        self.disconnect().await;
        self.store
            .release_relay(&self.config.exchange, &self.config.replica)
            .await
    }

    /// The id of the last event the broker confirmed.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn cursor(&self) -> Result<i64> {
        self.store.relay_cursor(&self.config.exchange).await
    }

    /// Publishes the events after the cursor (up to `batch`), connecting first if needed.
    /// `None` when there is nothing to relay or another replica holds the lease. The cursor
    /// does not move until [`Relay::confirm`].
    ///
    /// # Errors
    /// [`Error::Internal`] for broker failures (the connection is then dropped), database
    /// errors.
    pub async fn publish_batch(&mut self) -> Result<Option<PublishedBatch>> {
        let head = self.store.last_event_id().await?;
        let cursor = self.cursor().await?;
        self.metrics.lag.set(head.saturating_sub(cursor).max(0));
        if cursor >= head {
            return Ok(None);
        }
        self.connect().await?;
        let now = Utc::now();
        let until = now + bounded(self.config.lease);
        let Some(cursor) = self
            .store
            .lease_relay(&self.config.exchange, &self.config.replica, now, until)
            .await?
        else {
            tracing::debug!(exchange = %self.config.exchange, "another replica relays events");
            return Ok(None);
        };
        let events = self.store.events_after(cursor, self.config.batch).await?;
        let Some(link) = &self.link else {
            return Err(amqp_failure("publishing", "not connected"));
        };
        let mut confirms = Vec::with_capacity(events.len());
        let deadline = tokio::time::Instant::now() + self.config.confirm_timeout;
        for event in &events {
            let body = serde_json::to_vec(event)
                .map_err(|e| Error::Internal(format!("serializing event {}: {e}", event.id)))?;
            let routing_key = ShortString::try_new(event.kind.clone()).map_err(|e| {
                Error::Internal(format!(
                    "event type of event {} as routing key: {e}",
                    event.id
                ))
            })?;
            let mut headers = FieldTable::default();
            headers.insert(
                "subject".into(),
                AMQPValue::LongString(event.subject.as_str().into()),
            );
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(event.id.to_string().into())
                .with_type(routing_key.clone())
                .with_timestamp(u64::try_from(event.created_at.timestamp()).unwrap_or(0))
                .with_app_id("ferry-registry".into())
                .with_headers(headers);
            // A broker that blocks publishers (a memory or disk alarm) must not stall the relay
            // forever: the publishing phase shares the confirm deadline.
            let published = match tokio::time::timeout_at(
                deadline,
                link.channel.basic_publish(
                    self.config.exchange.as_str().into(),
                    routing_key,
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                ),
            )
            .await
            {
                Ok(result) => result.map_err(|e| amqp_failure("publishing", e)),
                Err(_) => Err(amqp_failure(
                    "publishing",
                    format!(
                        "the broker did not take event {} within {} s (is it blocking publishers?)",
                        event.id,
                        self.config.confirm_timeout.as_secs_f64()
                    ),
                )),
            };
            match published {
                Ok(confirm) => confirms.push((event.id, confirm)),
                Err(e) => {
                    self.metrics.failures.with_label_values(&["publish"]).inc();
                    self.disconnect().await;
                    return Err(e);
                }
            }
        }
        Ok(Some(PublishedBatch { confirms, cursor }))
    }

    /// Waits for the broker's confirms of `batch`, in order, and moves the cursor to the last
    /// event of the confirmed prefix. Returns how many events were confirmed.
    ///
    /// # Errors
    /// [`Error::Internal`] when the broker refuses an event (the confirmed prefix is still
    /// recorded; the rest is published again next round) or the confirms do not come in time.
    pub async fn confirm(&mut self, batch: PublishedBatch) -> Result<usize> {
        let mut confirmed_upto = batch.cursor;
        let mut confirmed = 0usize;
        let mut failure: Option<Error> = None;
        let deadline = tokio::time::Instant::now() + self.config.confirm_timeout;
        for (id, confirm) in batch.confirms {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => {
                    confirmed_upto = id;
                    confirmed += 1;
                }
                Ok(Ok(Confirmation::Nack(_))) => {
                    self.metrics.nacked.inc();
                    failure = Some(amqp_failure(
                        "confirming",
                        format!("the broker refused event {id} (nack); it is published again"),
                    ));
                    break;
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    failure = Some(amqp_failure(
                        "confirming",
                        "the channel is not in confirm mode",
                    ));
                    break;
                }
                Ok(Err(e)) => {
                    failure = Some(amqp_failure("confirming", e));
                    break;
                }
                Err(_) => {
                    failure = Some(amqp_failure(
                        "confirming",
                        format!(
                            "no confirm for event {id} within {} s",
                            self.config.confirm_timeout.as_secs_f64()
                        ),
                    ));
                    break;
                }
            }
        }
        if confirmed_upto > batch.cursor {
            let moved = self
                .store
                .advance_relay(&self.config.exchange, &self.config.replica, confirmed_upto)
                .await;
            if let Err(e) = moved {
                self.metrics.failures.with_label_values(&["store"]).inc();
                return Err(e);
            }
            self.metrics.relayed.inc_by(confirmed as u64);
        }
        let head = self.store.last_event_id().await?;
        self.metrics
            .lag
            .set(head.saturating_sub(confirmed_upto).max(0));
        match failure {
            Some(e) => {
                self.metrics.failures.with_label_values(&["confirm"]).inc();
                Err(e)
            }
            None => Ok(confirmed),
        }
    }

    /// One round: publish the next batch and wait for its confirms. Returns how many events
    /// the broker confirmed (0 when there was nothing to do).
    ///
    /// # Errors
    /// As [`Relay::publish_batch`] and [`Relay::confirm`].
    pub async fn run_once(&mut self) -> Result<usize> {
        match self.publish_batch().await? {
            Some(batch) => self.confirm(batch).await,
            None => Ok(0),
        }
    }

    /// Relays until `stop` is cancelled: at once while events are waiting, otherwise when this
    /// process commits one or after `poll_interval`. Failures reconnect after a growing, jittered
    /// delay; the registry itself never waits for the broker. It stops between rounds, after the
    /// round in flight has its confirmations (the cursor moves only past confirmed events), and
    /// closes its connection.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(
            broker = %self.config.redacted_url(),
            exchange = %self.config.exchange,
            replica = %self.config.replica,
            "event relay started"
        );
        let mut wake = self.store.subscribe();
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            match self.run_once().await {
                Ok(relayed) => {
                    failures = 0;
                    if relayed > 0 {
                        continue;
                    }
                    wake.borrow_and_update();
                    tokio::select! {
                        () = stop.cancelled() => {}
                        changed = tokio::time::timeout(self.config.poll_interval, wake.changed()) => {
                            if changed.is_ok_and(|changed| changed.is_err()) {
                                tokio::time::sleep(self.config.poll_interval).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let connected = self.link.as_ref().is_some_and(|l| {
                        l.connection.status().connected() && l.channel.status().connected()
                    });
                    if !connected {
                        self.disconnect().await;
                    }
                    let delay = crate::webhooks::backoff::random_retry_delay(
                        self.config.reconnect_base,
                        self.config.reconnect_cap,
                        failures,
                    )
                    // Never a busy loop, even when the jitter draws zero.
                    .max(Duration::from_millis(100));
                    tracing::warn!(
                        error = %e,
                        broker = %self.config.redacted_url(),
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "event relay round failed"
                    );
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // Another replica may take over at once instead of waiting for the lease to expire.
        if let Err(e) = self.close().await {
            tracing::debug!(error = %e, "releasing the relay lease failed; it expires");
        }
        tracing::info!("event relay stopped");
    }
}

/// Builds a [`Relay`] (registering its metrics in `prometheus`) and runs it on `tasks` until
/// `stop` is cancelled. Even an abort would be safe: unconfirmed events are published again by
/// the next relay (consumers deduplicate on `message_id`).
///
/// # Errors
/// [`Error::Internal`] when the metrics are already registered.
pub fn spawn_relay(
    store: MetadataStore,
    config: RelayConfig,
    prometheus: &prometheus::Registry,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
) -> Result<()> {
    let relay = Relay::new(store, config, prometheus)?;
    tasks.spawn(relay.run(stop));
    Ok(())
}

/// Connects, opens a channel in confirm mode and declares the topology, all within
/// `connect_timeout`: a broker that accepts the socket and then stalls must not stall the relay.
async fn open_link(config: &RelayConfig) -> Result<Link> {
    tokio::time::timeout(config.connect_timeout, async {
        let (connection, channel) = crate::amqp::connect_confirmed(&config.url, "ferry-registry")
            .await
            .map_err(|(stage, e)| amqp_failure(stage, e))?;
        declare_topology(&channel, config).await?;
        Ok(Link {
            connection,
            channel,
        })
    })
    .await
    .map_err(|_| {
        amqp_failure(
            "connecting",
            format!(
                "no connection within {} s",
                config.connect_timeout.as_secs_f64()
            ),
        )
    })?
}

async fn declare_topology(channel: &Channel, config: &RelayConfig) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let dlx = config.dead_letter_exchange();
    for exchange in [config.exchange.as_str(), dlx.as_str()] {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_failure(&format!("declaring exchange {exchange}"), e))?;
    }
    if !config.declare_queue {
        return Ok(());
    }
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    let queues = [
        (config.queue(), config.exchange.clone(), arguments),
        (
            config.dead_letter_queue(),
            dlx.clone(),
            FieldTable::default(),
        ),
    ];
    for (queue, exchange, arguments) in queues {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .map_err(|e| amqp_failure(&format!("declaring queue {queue}"), e))?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_failure(&format!("binding queue {queue}"), e))?;
    }
    Ok(())
}

/// A duration as a [`TimeDelta`], at most a year: nothing here waits longer, and the cap keeps
/// `DateTime + TimeDelta` from overflowing.
fn bounded(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d.min(Duration::from_secs(365 * 24 * 3600))).unwrap_or(TimeDelta::zero())
}

fn amqp_failure(stage: &str, cause: impl fmt::Display) -> Error {
    Error::Internal(format!("AMQP relay, {stage}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_urls_are_validated_and_shown_without_their_password() {
        let config = RelayConfig::new("amqp://ferry:hunter2hunter2@broker:5672/%2f").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.redacted_url().contains("hunter2"));
        let err = RelayConfig::new("http://ferry:hunter2hunter2@broker/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("invalid AMQP URL"), "{err}");
    }

    #[test]
    fn the_topology_is_named_after_the_exchange() {
        let config = RelayConfig::new("amqp://127.0.0.1:5672/%2f").unwrap();
        assert_eq!(config.exchange, "ferry.events");
        assert_eq!(config.dead_letter_exchange(), "ferry.events.dlx");
        assert_eq!(config.queue(), "ferry.events");
        assert_eq!(config.dead_letter_queue(), "ferry.events.dead");
    }
}
