//! Webhooks and deliveries in SQL. Every write goes through [`MetadataStore::begin_write`], like
//! every other write of the registry: the fan-out's cursor moves in the same transaction as the
//! delivery rows it covers, and claims and outcomes are serialized with everything else.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::page::parse_page_token;
use crate::error::{Error, Result};
use crate::store::{MetadataStore, parse_json, parse_timestamp, timestamp};
use crate::webhooks::{Secret, display_url, validate_secret, validate_url};
use ferry_api::events::patterns::{matches, validate_patterns};
use ferry_api::events::{EventData, WebhookChanged};
use ferry_api::records::{Event, Page};
use ferry_api::webhooks::{
    CreatedWebhook, DeliveryRecord, DeliveryStatus, NewWebhook, WebhookRecord,
};

const WEBHOOK_COLUMNS: &str = "id, seq, url, events, cursor, created_at";
const DELIVERY_COLUMNS: &str = "id, webhook, event_id, event_type, status, attempts, \
     next_attempt_at, last_status, last_error, created_at, delivered_at";

/// A delivery whose next attempt is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueDelivery {
    pub(crate) id: String,
    pub(crate) webhook: String,
}

/// A delivery this replica holds the claim of, with everything needed to send it.
pub(crate) struct ClaimedDelivery {
    pub(crate) id: String,
    pub(crate) webhook: String,
    pub(crate) url: String,
    pub(crate) secret: Secret,
    pub(crate) event: Event,
    /// Attempts made before this one.
    pub(crate) attempts: i64,
}

/// How an attempt ended, as recorded.
pub(crate) enum Outcome {
    /// 2xx: done.
    Delivered { status: u16 },
    /// Anything else: retry at `next_attempt_at`, or dead-letter when `dead`.
    Failed {
        status: Option<u16>,
        error: String,
        next_attempt_at: DateTime<Utc>,
        dead: bool,
    },
}

impl MetadataStore {
    /// Creates a webhook that receives the events committed after it, and emits
    /// `webhook.created` (without the secret).
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an unusable URL, pattern or secret (the message never repeats
    /// the secret).
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<CreatedWebhook> {
        let url = validate_url(&new.url)?;
        let events = validate_patterns(&new.events)?;
        let secret = match new.secret {
            Some(given) => validate_secret(given)?,
            None => Secret::generate(),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        let now = timestamp(tx.now);
        let seq = tx
            .emit(EventData::WebhookCreated(WebhookChanged {
                id: id.clone(),
                url: display_url(&url),
                events: events.clone(),
            }))
            .await?;
        sqlx::query(
            "INSERT INTO webhooks (id, seq, url, events, secret, cursor, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(seq)
        .bind(&url)
        .bind(to_json(&events)?)
        .bind(secret.expose())
        .bind(seq)
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit(self).await?;
        Ok(CreatedWebhook {
            webhook: WebhookRecord {
                id,
                url,
                events,
                cursor: seq,
                created_at: parse_timestamp(&now)?,
            },
            secret: secret.expose().to_string(),
        })
    }

    /// One webhook, without its secret.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an id that is not a UUID, [`Error::NotFound`].
    pub async fn get_webhook(&self, id: &str) -> Result<WebhookRecord> {
        check_id("webhook", id)?;
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| webhook_not_found(id))?;
        webhook_from_row(&row)
    }

    /// Webhooks, newest first. `page_token` is the `next_page_token` of the previous page.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed page token.
    pub async fn list_webhooks(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<WebhookRecord>> {
        let before = parse_page_token(page_token)?;
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            items.push(webhook_from_row(row)?);
            last = Some(row.try_get::<i64, _>("seq")?);
        }
        Ok(Page {
            items,
            next_page_token: if rows.len() > limit as usize {
                last.map(|s| s.to_string())
            } else {
                None
            },
        })
    }

    /// Deletes a webhook and its deliveries (pending ones are never sent), emits
    /// `webhook.deleted`, and returns the webhook as it was.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an id that is not a UUID, [`Error::NotFound`].
    pub async fn delete_webhook(&self, id: &str) -> Result<WebhookRecord> {
        check_id("webhook", id)?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| webhook_not_found(id))?;
        let record = webhook_from_row(&row)?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        tx.emit(EventData::WebhookDeleted(WebhookChanged {
            id: id.to_string(),
            url: display_url(&record.url),
            events: record.events.clone(),
        }))
        .await?;
        tx.commit(self).await?;
        Ok(record)
    }

    /// A webhook's deliveries, newest event first, optionally only those in `status`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed id or page token, [`Error::NotFound`] for an unknown
    /// webhook.
    pub async fn list_deliveries(
        &self,
        webhook: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<DeliveryRecord>> {
        self.get_webhook(webhook).await?;
        let before = parse_page_token(page_token)?;
        let filter = if status.is_some() {
            "AND status = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE webhook = $1 AND event_id < $2 {filter} ORDER BY event_id DESC LIMIT $3"
        );
        let mut query = sqlx::query(&sql)
            .bind(webhook)
            .bind(before)
            .bind(i64::from(limit) + 1);
        // PostgreSQL refuses more bound values than placeholders.
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            items.push(delivery_from_row(row)?);
        }
        Ok(Page {
            next_page_token: if rows.len() > limit as usize {
                items.last().map(|d| d.event_id.to_string())
            } else {
                None
            },
            items,
        })
    }

    /// One delivery of a webhook.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for malformed ids, [`Error::NotFound`].
    pub async fn get_delivery(&self, webhook: &str, delivery: &str) -> Result<DeliveryRecord> {
        check_id("webhook", webhook)?;
        check_id("delivery", delivery)?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook = $2"
        ))
        .bind(delivery)
        .bind(webhook)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| delivery_not_found(webhook, delivery))?;
        delivery_from_row(&row)
    }

    /// Puts a dead delivery back in the queue: pending, due now, attempts reset. It keeps its id,
    /// so a receiver that did process an earlier attempt (and answered too late) can deduplicate.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown webhook or delivery, [`Error::Conflict`] when the
    /// delivery is not dead.
    pub async fn replay_dead_letter(
        &self,
        webhook: &str,
        delivery: &str,
    ) -> Result<DeliveryRecord> {
        check_id("webhook", webhook)?;
        check_id("delivery", delivery)?;
        let mut tx = self.begin_write().await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM webhook_deliveries WHERE id = $1 AND webhook = $2",
        )
        .bind(delivery)
        .bind(webhook)
        .fetch_optional(&mut *tx.tx)
        .await?;
        let status = status.ok_or_else(|| delivery_not_found(webhook, delivery))?;
        if status != DeliveryStatus::Dead.as_str() {
            return Err(Error::Conflict(format!(
                "delivery {delivery} is {status}; only dead letters can be replayed"
            )));
        }
        let now = timestamp(tx.now);
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             claimed_by = NULL, claimed_until = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(&now)
        .bind(delivery)
        .execute(&mut *tx.tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        ))
        .bind(delivery)
        .fetch_one(&mut *tx.tx)
        .await?;
        let record = delivery_from_row(&row)?;
        tx.commit(self).await?;
        Ok(record)
    }

    /// Matches up to `batch` new events against every webhook behind the log's head and queues
    /// one delivery per match, advancing each webhook's cursor in the same transaction. Returns
    /// the number of deliveries queued.
    pub(crate) async fn fan_out_webhooks(&self, batch: u32) -> Result<u64> {
        // A read first, so an idle registry does not take the writer lock every poll.
        let head = self.last_event_id().await?;
        let behind: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE cursor < $1")
            .bind(head)
            .fetch_one(self.pool())
            .await?;
        if behind == 0 {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        // Read again under the lock: another replica may have fanned out meanwhile.
        let hooks = sqlx::query("SELECT id, events, cursor FROM webhooks ORDER BY seq")
            .fetch_all(&mut *tx.tx)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("id")?,
                    parse_json::<Vec<String>>(
                        "webhook events",
                        &row.try_get::<String, _>("events")?,
                    )?,
                    row.try_get::<i64, _>("cursor")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(from) = hooks.iter().map(|(_, _, cursor)| *cursor).min() else {
            return Ok(0);
        };
        let events: Vec<(i64, String)> =
            sqlx::query("SELECT id, type FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(from)
                .bind(i64::from(batch.max(1)))
                .fetch_all(&mut *tx.tx)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("id")?, row.try_get("type")?)))
                .collect::<Result<_>>()?;
        let Some(upto) = events.last().map(|(id, _)| *id) else {
            return Ok(0);
        };
        let now = timestamp(tx.now);
        let mut queued = 0;
        for (hook, patterns, cursor) in &hooks {
            if *cursor >= upto {
                continue;
            }
            for (event_id, kind) in events.iter().filter(|(id, _)| id > cursor) {
                if !matches(patterns, kind) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, webhook, event_id, event_type, status, \
                     attempts, next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(hook)
                .bind(*event_id)
                .bind(kind)
                .bind(&now)
                .execute(&mut *tx.tx)
                .await?;
                queued += 1;
            }
            sqlx::query("UPDATE webhooks SET cursor = $1 WHERE id = $2")
                .bind(upto)
                .bind(hook)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit(self).await?;
        Ok(queued)
    }

    /// Pending deliveries due at `now` and not claimed by a live replica, oldest event first: at
    /// most `per_webhook` of each webhook (so one backlog cannot starve the others) and `limit`
    /// in all.
    pub(crate) async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        per_webhook: u32,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        let now = timestamp(now);
        let rows = sqlx::query(
            "SELECT id, webhook FROM ( \
                 SELECT id, webhook, event_id, \
                        ROW_NUMBER() OVER (PARTITION BY webhook ORDER BY event_id) AS rank \
                 FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $1 \
                   AND (claimed_until IS NULL OR claimed_until < $1) \
             ) due WHERE rank <= $2 ORDER BY event_id LIMIT $3",
        )
        .bind(&now)
        .bind(i64::from(per_webhook.max(1)))
        .bind(i64::from(limit.max(1)))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    id: row.try_get("id")?,
                    webhook: row.try_get("webhook")?,
                })
            })
            .collect()
    }

    /// Claims a due delivery for `replica` until `until`. `None` when it is no longer due or
    /// another replica holds it: the conditional update decides, so two replicas never both win.
    pub(crate) async fn claim_delivery(
        &self,
        id: &str,
        replica: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<ClaimedDelivery>> {
        let now = timestamp(now);
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 \
             WHERE id = $3 AND status = 'pending' AND next_attempt_at <= $4 \
               AND (claimed_until IS NULL OR claimed_until < $4)",
        )
        .bind(replica)
        .bind(timestamp(until))
        .bind(id)
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT d.webhook, d.attempts, w.url, w.secret, \
                    e.id AS event_id, e.type, e.subject, e.data, e.created_at \
             FROM webhook_deliveries d \
             JOIN webhooks w ON w.id = d.webhook \
             JOIN events e ON e.id = d.event_id \
             WHERE d.id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx.tx)
        .await?;
        let claimed = ClaimedDelivery {
            id: id.to_string(),
            webhook: row.try_get("webhook")?,
            url: row.try_get("url")?,
            secret: Secret::from_stored(row.try_get("secret")?),
            attempts: row.try_get("attempts")?,
            event: Event {
                id: row.try_get("event_id")?,
                kind: row.try_get("type")?,
                subject: row.try_get("subject")?,
                data: parse_json("event data", &row.try_get::<String, _>("data")?)?,
                created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
            },
        };
        tx.commit(self).await?;
        Ok(Some(claimed))
    }

    /// Records the outcome of an attempt and releases the claim. `false` when this replica no
    /// longer held the claim (it expired and another replica took over, or the webhook was
    /// deleted): the other replica's outcome stands.
    pub(crate) async fn finish_delivery(
        &self,
        claimed: &ClaimedDelivery,
        replica: &str,
        now: DateTime<Utc>,
        outcome: &Outcome,
    ) -> Result<bool> {
        let now = timestamp(now);
        let attempts = claimed.attempts + 1;
        let mut tx = self.begin_write().await?;
        let query = match outcome {
            Outcome::Delivered { status } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $1, \
                 last_status = $2, last_error = NULL, delivered_at = $3, updated_at = $3, \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $4 AND claimed_by = $5 AND status = 'pending'",
            )
            .bind(attempts)
            .bind(i64::from(*status))
            .bind(&now)
            .bind(&claimed.id)
            .bind(replica),
            Outcome::Failed {
                status,
                error,
                next_attempt_at,
                dead,
            } => sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_status = $3, \
                 last_error = $4, next_attempt_at = $5, updated_at = $6, \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $7 AND claimed_by = $8 AND status = 'pending'",
            )
            .bind(if *dead {
                DeliveryStatus::Dead.as_str()
            } else {
                DeliveryStatus::Pending.as_str()
            })
            .bind(attempts)
            .bind(status.map(i64::from))
            .bind(error.as_str())
            .bind(timestamp(*next_attempt_at))
            .bind(&now)
            .bind(&claimed.id)
            .bind(replica),
        };
        let updated = query.execute(&mut *tx.tx).await?.rows_affected() == 1;
        tx.commit(self).await?;
        Ok(updated)
    }

    /// How many deliveries are pending and dead, across webhooks, for the gauges.
    pub(crate) async fn delivery_counts(&self) -> Result<(i64, i64)> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries \
             WHERE status IN ('pending', 'dead') GROUP BY status",
        )
        .fetch_all(self.pool())
        .await?;
        let mut pending = 0;
        let mut dead = 0;
        for row in &rows {
            let n: i64 = row.try_get("n")?;
            match row.try_get::<String, _>("status")?.as_str() {
                "pending" => pending = n,
                _ => dead = n,
            }
        }
        Ok((pending, dead))
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("serializing: {e}")))
}

fn check_id(what: &str, id: &str) -> Result<()> {
    uuid::Uuid::parse_str(id).map(|_| ()).map_err(|_| {
        Error::BadRequest(format!(
            "{what} id {} is not a UUID",
            ferry_api::names::printable(id)
        ))
    })
}

fn webhook_not_found(id: &str) -> Error {
    Error::NotFound(format!("webhook {id} does not exist"))
}

fn delivery_not_found(webhook: &str, delivery: &str) -> Error {
    Error::NotFound(format!("webhook {webhook} has no delivery {delivery}"))
}

fn webhook_from_row(row: &AnyRow) -> Result<WebhookRecord> {
    Ok(WebhookRecord {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: parse_json("webhook events", &row.try_get::<String, _>("events")?)?,
        cursor: row.try_get("cursor")?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRecord> {
    let status_text: String = row.try_get("status")?;
    let status = DeliveryStatus::from_db(&status_text).ok_or_else(|| {
        Error::Internal(format!("stored delivery status `{status_text}` is unknown"))
    })?;
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>> {
        row.try_get::<Option<String>, _>(column)?
            .as_deref()
            .map(parse_timestamp)
            .transpose()
    };
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        webhook: row.try_get("webhook")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        status,
        attempts: row.try_get("attempts")?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            optional_time("next_attempt_at")?
        } else {
            None
        },
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        delivered_at: optional_time("delivered_at")?,
    })
}
