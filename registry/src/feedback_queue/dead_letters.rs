//! The dead-letter queue of the feedback consumer, for people: list what is in `<queue>.dead`
//! and why (`ferry feedback dead-letters`), and republish it to `<queue>` once the cause is fixed
//! (`ferry feedback dead-letters replay`).
//!
//! Listing does not consume: the messages are fetched unacked and handed back (nacked with
//! requeue) in one go, so they stay where they were. Replaying publishes each message to
//! `<queue>` (persistent, confirmed by the broker) before acking it in `<queue>.dead`: a crash in
//! between leaves the message in both queues, never in neither, and the consumer counts a
//! feedback once whatever number of times it sees it.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde::Serialize;

use super::{FeedbackQueueConfig, REASON_HEADER, RETRIES_HEADER, amqp, connect, publish_body};
use crate::error::{Error, Result};

/// The header counting how often a message was replayed from the dead-letter queue.
pub const REPLAYS_HEADER: &str = "x-ferry-replays";

/// Longest a message body is shown, in characters.
const BODY_SHOWN: usize = 2000;

/// One message of the dead-letter queue.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Why the consumer gave up on it (`x-ferry-reason`); none for a message another consumer
    /// rejected.
    pub reason: Option<String>,
    /// Delayed retries it had (`x-ferry-retries`).
    pub retries: u32,
    /// Times it was replayed before (`x-ferry-replays`).
    pub replays: u32,
    /// The body as text (invalid UTF-8 replaced), cut at 2,000 characters.
    pub body: String,
}

/// What the dead-letter queue holds: the first `limit` messages and how many there are.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetters {
    /// The dead-letter queue.
    pub queue: String,
    /// Messages in it.
    pub total: u32,
    /// The first of them, oldest first.
    pub messages: Vec<DeadLetter>,
}

/// Lists the first `limit` messages of the dead-letter queue without consuming them.
///
/// # Errors
/// [`Error::NotFound`] when the queue does not exist (nothing was declared under that name);
/// [`Error::Unavailable`] when the broker cannot be reached in time.
pub async fn list(config: &FeedbackQueueConfig, limit: usize) -> Result<DeadLetters> {
    let queue = config.dead_queue();
    within(config, async {
        let (connection, channel) = connect(config, "ferry-feedback-dead-letters").await?;
        let total = count(&channel, &queue).await?;
        let mut messages = Vec::new();
        let mut last_tag = None;
        while messages.len() < limit {
            let Some(message) = get(&channel, &queue).await? else {
                break;
            };
            last_tag = Some(message.delivery.delivery_tag);
            messages.push(describe(
                &message.delivery.properties,
                &message.delivery.data,
            ));
        }
        if let Some(tag) = last_tag {
            // Every message fetched goes back, in its place.
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
                .map_err(|e| amqp("handing the messages back", e))?;
        }
        let _ = connection.close(200, "listed".into()).await;
        Ok(DeadLetters {
            queue: queue.clone(),
            total,
            messages,
        })
    })
    .await
}

/// Moves the first `limit` messages of the dead-letter queue (of those there when it starts) back
/// to the consumed queue, without the consumer's headers (their retries start again); returns
/// how many moved.
///
/// # Errors
/// As [`list`], and when the consumed queue does not exist (a replay would be dropped).
pub async fn replay(config: &FeedbackQueueConfig, limit: usize) -> Result<usize> {
    let queue = config.dead_queue();
    within(config, async {
        let (connection, channel) = connect(config, "ferry-feedback-replay").await?;
        // Only what is there now: a replayed message the consumer dead-letters again must not
        // be replayed twice in one go.
        let present = count(&channel, &queue).await?;
        let limit = limit.min(usize::try_from(present).unwrap_or(usize::MAX));
        // Publishing to a queue that does not exist would be confirmed and dropped.
        count(&channel, &config.queue).await?;
        let mut moved = 0;
        while moved < limit {
            let Some(message) = get(&channel, &queue).await? else {
                break;
            };
            let delivery = &message.delivery;
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            let replays = replays_of(&delivery.properties) + 1;
            let mut kept = FieldTable::default();
            for (key, value) in headers.inner() {
                if ![REASON_HEADER, RETRIES_HEADER, REPLAYS_HEADER, "x-death"]
                    .contains(&key.as_str())
                {
                    kept.insert(key.clone(), value.clone());
                }
            }
            kept.insert(REPLAYS_HEADER.into(), AMQPValue::LongUInt(replays));
            headers = kept;
            publish_body(&channel, "", &config.queue, &delivery.data, headers).await?;
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| amqp("acking a replayed message", e))?;
            moved += 1;
        }
        let _ = connection.close(200, "replayed".into()).await;
        tracing::info!(from = %queue, to = %config.queue, moved, "dead-lettered feedback replayed");
        Ok(moved)
    })
    .await
}

/// Runs `work` within the connect timeout (a replay of many messages gets it per message too,
/// through the publish confirm's own deadline).
async fn within<T>(
    config: &FeedbackQueueConfig,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let deadline = config.connect_timeout * 30;
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| amqp("talking to the broker", "no answer within the timeout"))?
}

/// Messages ready in `queue`; a 404 naming it when it does not exist.
async fn count(channel: &Channel, queue: &str) -> Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(q) => Ok(q.message_count()),
        Err(e) if matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 404) => {
            Err(Error::NotFound(format!(
                "queue `{queue}` does not exist on this broker: the consumer declares it when it \
             starts (check --queue-name)"
            )))
        }
        Err(e) => Err(amqp(&format!("reading queue {queue}"), e)),
    }
}

async fn get(channel: &Channel, queue: &str) -> Result<Option<lapin::message::BasicGetMessage>> {
    channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .map_err(|e| amqp(&format!("reading {queue}"), e))
}

fn describe(properties: &BasicProperties, data: &[u8]) -> DeadLetter {
    let header = |name: &str| {
        properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name).cloned())
    };
    let reason = match header(REASON_HEADER) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    DeadLetter {
        reason,
        retries: super::retries_of(properties),
        replays: replays_of(properties),
        body: String::from_utf8_lossy(data)
            .chars()
            .take(BODY_SHOWN)
            .collect(),
    }
}

fn replays_of(properties: &BasicProperties) -> u32 {
    super::count_header(properties, REPLAYS_HEADER)
}
