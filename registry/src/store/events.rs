//! Reading the event outbox, and waiting for it to grow.
//!
//! Waiters (long-polls, SSE streams, the webhook worker, the relay) do not poll the database
//! each: this process's commits wake them directly, and one poller per store reads the event
//! counter every [`POLL_INTERVAL`] while anyone waits, waking them all when another replica
//! sharing the database has committed. A thousand waiting clients cost one small query every
//! half second, plus one read each per new event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row;

use super::{MetadataStore, parse_json, parse_timestamp};
use crate::error::Result;
use ferry_api::records::{Event, EventPage};

/// How often a waiting reader re-reads the table even without a local wake-up: another registry
/// replica sharing the database may have written.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The state of a store's event poller.
#[derive(Debug, Default)]
pub(crate) struct Poller {
    running: AtomicBool,
    reads: AtomicU64,
}

impl MetadataStore {
    /// How many times this store's event poller has read the event counter (for tests and
    /// diagnostics: it grows with time, not with the number of waiters).
    pub fn event_polls(&self) -> u64 {
        self.event_poller.reads.load(Ordering::Relaxed)
    }

    /// Starts the event poller unless it runs. It stops when nobody is subscribed any more (so a
    /// dropped store's pool is not kept alive by it); the next waiter starts it again.
    fn ensure_event_poller(&self) {
        if self.event_poller.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if store.last_event.receiver_count() == 0 || store.pool().is_closed() {
                    store.event_poller.running.store(false, Ordering::Release);
                    // A waiter that subscribed just now saw `running` still set: keep going
                    // for it, unless another poller has started meanwhile.
                    if store.last_event.receiver_count() == 0
                        || store.pool().is_closed()
                        || store.event_poller.running.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                }
                store.event_poller.reads.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = store.refresh_last_event().await {
                    tracing::debug!(error = %e, "reading the event counter failed; retrying");
                }
            }
        });
    }

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
        if !wait.is_zero() {
            self.ensure_event_poller();
        }
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
            // Woken by this process's commit or by the poller (another replica's); the
            // deadline ends the wait otherwise.
            if tokio::time::timeout(deadline - now, local.changed())
                .await
                .is_ok_and(|changed| changed.is_err())
            {
                // The store is gone (cannot happen while `self` lives); do not spin.
                tokio::time::sleep_until(deadline).await;
            }
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
