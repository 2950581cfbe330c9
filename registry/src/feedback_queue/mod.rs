//! The RabbitMQ feedback consumer: business systems publish outcomes
//! (`{"endpoint", "id", "reward"?, "label"?}`) to a durable queue, and the registry records each
//! one exactly once, joined through the prediction index the serving replicas share.
//!
//! # Reliability
//!
//! - **Manual acks, after the feedback is durably recorded** (a report in the database). A crash
//!   before the ack redelivers the message; recording is idempotent on endpoint + prediction id
//!   ([`record_once`]): the prediction is read without taking it, the report's id derives from
//!   the endpoint and the id (stored once), and the prediction is taken last.
//! - **Prefetch** (`basic.qos`) bounds the messages in flight to this consumer.
//! - **Delayed retries**: a prediction id not (yet) in the index is republished to
//!   `<queue>.retry`, whose message TTL dead-letters it back to `<queue>` after the retry delay;
//!   after the last retry it is dead-lettered. No hot loop.
//! - **Dead letters**: a malformed message, an invalid feedback, an unknown endpoint or an id
//!   still unknown after the retries is published (confirmed) through the dead-letter exchange
//!   `<queue>.dlx` to `<queue>.dead` with the reason in the `x-ferry-reason` header, then acked.
//!   At least once: a crash between the confirm and the ack dead-letters the redelivered message
//!   again (broker-side dead-lettering by `nack` would be exactly once, but cannot carry the
//!   reason).
//!   `<queue>` itself dead-letters into the same exchange, so a message rejected by another
//!   consumer lands there too.
//!   `ferry feedback dead-letters` lists them, `… replay` moves them back ([`dead_letters`]).
//! - A store that is down (Redis, the database) is not the message's fault: the message is
//!   requeued after a pause.
//! - A lost connection reconnects with exponential backoff; consuming resumes where the broker
//!   left it (unacked messages are redelivered).

pub mod dead_letters;

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use prometheus::{IntCounterVec, Opts};
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::endpoints::feedback::{Recorded, record_once};
use crate::error::{Error, Result};
use crate::store::{MetadataStore, redact_url};
use ferry_feedback::log::PredictionLog;
use ferry_feedback::{FeedbackBody, Label, SharedIndex};

/// The header carrying why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-ferry-reason";
/// The header counting a message's retries.
pub const RETRIES_HEADER: &str = "x-ferry-retries";

/// Settings of the consumer.
#[derive(Clone)]
pub struct FeedbackQueueConfig {
    url: String,
    /// The queue consumed; `<queue>.retry`, `<queue>.dead` and the exchange `<queue>.dlx` go
    /// with it.
    pub queue: String,
    /// Messages in flight to this consumer at most.
    pub prefetch: u16,
    /// Retries of a prediction id not in the index before it is dead-lettered.
    pub retries: u32,
    /// How long a retried message waits in `<queue>.retry`.
    pub retry_delay: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// First pause before reconnecting; doubles up to `reconnect_cap`.
    pub reconnect_base: Duration,
    /// Longest pause between reconnections.
    pub reconnect_cap: Duration,
}

impl fmt::Debug for FeedbackQueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedbackQueueConfig")
            .field("url", &redact_url(&self.url))
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .field("retries", &self.retries)
            .field("retry_delay", &self.retry_delay)
            .finish_non_exhaustive()
    }
}

impl FeedbackQueueConfig {
    /// Settings for the broker at `url`, with defaults for the rest.
    ///
    /// # Errors
    /// A message (password redacted) when `url` is not an AMQP URL.
    pub fn new(url: &str) -> std::result::Result<Self, String> {
        let url = url.trim();
        if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
            return Err(format!("invalid AMQP URL `{}`: {e}", redact_url(url)));
        }
        Ok(FeedbackQueueConfig {
            url: url.to_string(),
            queue: "ferry.feedback".into(),
            prefetch: 64,
            retries: 5,
            retry_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect_base: Duration::from_secs(1),
            reconnect_cap: Duration::from_secs(30),
        })
    }

    /// Names the queue consumed (1 to 200 characters; the derived names must stay within AMQP's
    /// 255).
    ///
    /// # Errors
    /// When the name is empty or too long.
    pub fn set_queue(&mut self, name: &str) -> std::result::Result<(), String> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err("a queue name must be 1 to 200 characters".into());
        }
        self.queue = name.to_string();
        Ok(())
    }

    /// The broker URL, password redacted.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    fn retry_queue(&self) -> String {
        format!("{}.retry", self.queue)
    }

    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    fn exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }
}

/// A message: an endpoint and the feedback body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    endpoint: String,
    id: String,
    #[serde(default)]
    reward: Option<f64>,
    #[serde(default)]
    label: Option<Label>,
}

/// What becomes of one delivery.
enum Fate {
    Ack,
    Retry(u32),
    Dead(String),
    Requeue(String),
}

#[derive(Clone)]
struct Metrics {
    messages: IntCounterVec,
}

impl Metrics {
    fn register(prometheus: &prometheus::Registry) -> prometheus::Result<Self> {
        let messages = IntCounterVec::new(
            Opts::new(
                "ferry_feedback_queue_messages_total",
                "Feedback messages by outcome: consumed, recorded (counted now or already), retried, dead_lettered, requeued (a store was down), acked.",
            ),
            &["outcome"],
        )?;
        prometheus.register(Box::new(messages.clone()))?;
        Ok(Metrics { messages })
    }

    fn inc(&self, outcome: &str) {
        self.messages.with_label_values(&[outcome]).inc();
    }
}

/// Starts the consumer on `tasks`; it stops between messages when `stop` is cancelled.
///
/// # Errors
/// [`Error::Internal`] when its metrics are already registered.
pub fn spawn_feedback_consumer(
    store: MetadataStore,
    index: SharedIndex,
    log: Option<PredictionLog>,
    config: FeedbackQueueConfig,
    prometheus: &prometheus::Registry,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
) -> Result<()> {
    let metrics = Metrics::register(prometheus)
        .map_err(|e| Error::Internal(format!("registering feedback queue metrics: {e}")))?;
    let joins = Joins { index, log };
    tasks.spawn(async move {
        let mut pause = config.reconnect_base;
        loop {
            match consume(&store, &joins, &config, &metrics, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(broker = %config.redacted_url(), queue = %config.queue, error = %e, retry_in_s = pause.as_secs_f64(), "the feedback consumer lost its broker; reconnecting");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
            pause = (pause * 2).min(config.reconnect_cap);
        }
    });
    Ok(())
}

/// What a consumed feedback joins through, and where it is logged.
struct Joins {
    index: SharedIndex,
    log: Option<PredictionLog>,
}

/// A connection and a channel with publisher confirms.
async fn connect(config: &FeedbackQueueConfig, name: &str) -> Result<(Connection, Channel)> {
    crate::amqp::connect_confirmed(&config.url, name)
        .await
        .map_err(|(stage, e)| amqp(stage, e))
}

fn amqp(what: &str, e: impl fmt::Display) -> Error {
    Error::Unavailable(format!("RabbitMQ: {what}: {e}"))
}

/// Connects, declares the topology and consumes until `stop` (Ok) or a broker failure (Err).
async fn consume(
    store: &MetadataStore,
    joins: &Joins,
    config: &FeedbackQueueConfig,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<()> {
    let (connection, channel) = tokio::time::timeout(config.connect_timeout, async {
        let (connection, channel) = connect(config, "ferry-feedback").await?;
        declare(&channel, config).await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp("setting the prefetch", e))?;
        Ok::<_, Error>((connection, channel))
    })
    .await
    .map_err(|_| amqp("connecting", "no connection within the timeout"))??;
    let mut deliveries = channel
        .basic_consume(
            config.queue.as_str().into(),
            "ferry-feedback".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp("consuming", e))?;
    tracing::info!(broker = %config.redacted_url(), queue = %config.queue, prefetch = config.prefetch, "consuming business feedback");
    loop {
        let delivery = tokio::select! {
            next = deliveries.next() => next,
            () = stop.cancelled() => {
                // Unacked deliveries go back to the queue when the connection closes.
                let _ = connection.close(200, "stopping".into()).await;
                return Ok(());
            }
        };
        let Some(delivery) = delivery else {
            return Err(amqp("consuming", "the broker ended the consumer"));
        };
        let delivery = delivery.map_err(|e| amqp("receiving", e))?;
        metrics.inc("consumed");
        let retries = retries_of(&delivery.properties);
        match fate(store, joins, config, &delivery.data, retries).await {
            Fate::Ack => metrics.inc("recorded"),
            Fate::Retry(n) => {
                publish(&channel, "", &config.retry_queue(), &delivery, n, None).await?;
                metrics.inc("retried");
            }
            Fate::Dead(reason) => {
                tracing::info!(queue = %config.queue, %reason, "feedback message dead-lettered");
                publish(
                    &channel,
                    &config.exchange(),
                    &config.queue,
                    &delivery,
                    retries,
                    Some(&reason),
                )
                .await?;
                metrics.inc("dead_lettered");
            }
            Fate::Requeue(why) => {
                metrics.inc("requeued");
                tracing::warn!(%why, "feedback cannot be recorded now; the message goes back to the queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
                    .map_err(|e| amqp("requeueing", e))?;
                continue;
            }
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| amqp("acking", e))?;
        metrics.inc("acked");
    }
}

/// What to do with one message.
async fn fate(
    store: &MetadataStore,
    joins: &Joins,
    config: &FeedbackQueueConfig,
    data: &[u8],
    retries: u32,
) -> Fate {
    let message: Message = match serde_json::from_slice(data) {
        Ok(m) => m,
        Err(e) => {
            return Fate::Dead(format!(
                "malformed: expected {{\"endpoint\", \"id\", \"reward\"?, \"label\"?}}: {e}"
            ));
        }
    };
    if let Err(e) = ferry_api::names::validate("endpoint", &message.endpoint) {
        return Fate::Dead(e.to_string());
    }
    match store.get_endpoint(&message.endpoint).await {
        Ok(_) => {}
        Err(Error::NotFound(_)) => {
            return Fate::Dead(format!("unknown endpoint `{}`", message.endpoint));
        }
        Err(e) => return Fate::Requeue(e.to_string()),
    }
    let body = FeedbackBody {
        id: message.id,
        reward: message.reward,
        label: message.label,
    };
    match record_once(
        store,
        &joins.index,
        joins.log.as_ref(),
        &message.endpoint,
        body,
    )
    .await
    {
        Ok(Recorded::Joined(_) | Recorded::AlreadyCounted) => Fate::Ack,
        Err(Error::BadRequest(why)) => Fate::Dead(why),
        Err(Error::NotFound(_)) if retries < config.retries => Fate::Retry(retries + 1),
        Err(Error::NotFound(why)) => Fate::Dead(format!(
            "{why} after {} retries {} s apart",
            config.retries,
            config.retry_delay.as_secs_f64()
        )),
        Err(e) => Fate::Requeue(e.to_string()),
    }
}

fn retries_of(properties: &BasicProperties) -> u32 {
    count_header(properties, RETRIES_HEADER)
}

/// A counter header of a message (0 when absent).
fn count_header(properties: &BasicProperties, name: &str) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// Republishes `delivery`'s body (persistent, confirmed) with the retry count and a reason.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &lapin::message::Delivery,
    retries: u32,
    reason: Option<&str>,
) -> Result<()> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(RETRIES_HEADER.into(), AMQPValue::LongUInt(retries));
    if let Some(reason) = reason {
        let reason: String = reason.chars().take(1000).collect();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
    }
    publish_body(channel, exchange, routing_key, &delivery.data, headers).await
}

/// Publishes `data` (persistent, JSON) and waits for the broker's confirm.
async fn publish_body(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    data: &[u8],
    headers: FieldTable,
) -> Result<()> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(headers);
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            data,
            properties,
        )
        .await
        .map_err(|e| amqp("republishing", e))?;
    let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm)
        .await
        .map_err(|_| amqp("republishing", "no confirm within 30 s"))?
        .map_err(|e| amqp("republishing", e))?;
    if confirmation.is_nack() {
        return Err(amqp("republishing", "the broker refused the message"));
    }
    Ok(())
}

async fn declare(channel: &Channel, config: &FeedbackQueueConfig) -> Result<()> {
    let exchange = config.exchange();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp(&format!("declaring exchange {exchange}"), e))?;
    let mut main = FieldTable::default();
    main.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.as_str().into()),
    );
    let mut retry = FieldTable::default();
    retry.insert(
        "x-message-ttl".into(),
        AMQPValue::LongUInt(u32::try_from(config.retry_delay.as_millis()).unwrap_or(u32::MAX)),
    );
    retry.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    retry.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(config.queue.as_str().into()),
    );
    for (queue, arguments) in [
        (config.queue.clone(), main),
        (config.retry_queue(), retry),
        (config.dead_queue(), FieldTable::default()),
    ] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .map_err(|e| amqp(&format!("declaring queue {queue}"), e))?;
    }
    channel
        .queue_bind(
            config.dead_queue().as_str().into(),
            exchange.as_str().into(),
            config.queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp("binding the dead-letter queue", e))?;
    Ok(())
}
