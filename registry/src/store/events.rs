//! Reading the event outbox, and waiting for it to grow.

use std::time::Duration;

use sqlx::Row;

use super::{MetadataStore, parse_json, parse_timestamp};
use crate::error::Result;
use ferry_api::records::{Event, EventPage};

/// How often a waiting reader re-reads the table even without a local wake-up: another registry
/// replica sharing the database may have written.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

impl MetadataStore {
    /// Events with `id > after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, type, subject, data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Event {
                    id: row.try_get("id")?,
                    kind: row.try_get("type")?,
                    subject: row.try_get("subject")?,
                    data: parse_json("event data", &row.try_get::<String, _>("data")?)?,
                    created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect()
    }

    /// Like [`MetadataStore::events_after`], but when there is nothing yet, waits up to `wait`
    /// for the first new event (a long-poll).
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn wait_for_events(
        &self,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<EventPage> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut local = self.subscribe();
        loop {
            local.borrow_and_update();
            let events = self.events_after(after, limit).await?;
            let now = tokio::time::Instant::now();
            if !events.is_empty() || now >= deadline {
                let next_after = events.last().map_or(after, |e| e.id);
                let newest_read = events.last().map_or(0, |e| e.id);
                let head = self.last_event_id().await?.max(newest_read);
                return Ok(EventPage {
                    events,
                    next_after,
                    head,
                });
            }
            let nap = POLL_INTERVAL.min(deadline - now);
            // Either this process commits an event, or the poll interval passes.
            let _ = tokio::time::timeout(nap, local.changed()).await;
        }
    }

    /// The id of the newest event in the database.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn last_event_id(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM counters WHERE name = 'events'")
                .fetch_one(self.pool())
                .await?,
        )
    }
}
