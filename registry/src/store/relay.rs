//! The relay's cursor and lease, in SQL. Writes go through [`MetadataStore::begin_write`] like
//! every other write.

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::store::{MetadataStore, timestamp};

impl MetadataStore {
    /// The id of the last event the broker confirmed for `name` (an exchange); 0 when nothing
    /// was relayed yet.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn relay_cursor(&self, name: &str) -> Result<i64> {
        let cursor: Option<i64> =
            sqlx::query_scalar("SELECT last_event FROM relay_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(cursor.unwrap_or(0))
    }

    /// Takes or renews the lease on relaying `name` for `replica` until `until`, and returns the
    /// cursor; `None` while another replica's lease is live.
    pub(crate) async fn lease_relay(
        &self,
        name: &str,
        replica: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let now = timestamp(now);
        let until = timestamp(until);
        let mut tx = self.begin_write().await?;
        let leased = sqlx::query(
            "UPDATE relay_cursors SET leased_by = $1, leased_until = $2 \
             WHERE name = $3 AND (leased_by = $1 OR leased_until IS NULL OR leased_until < $4)",
        )
        .bind(replica)
        .bind(&until)
        .bind(name)
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        if leased == 0 {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT last_event FROM relay_cursors WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx.tx)
                    .await?;
            if exists.is_some() {
                return Ok(None);
            }
            // First relay to this exchange: it starts at the beginning of the log.
            sqlx::query(
                "INSERT INTO relay_cursors (name, last_event, leased_by, leased_until, updated_at) \
                 VALUES ($1, 0, $2, $3, $4)",
            )
            .bind(name)
            .bind(replica)
            .bind(&until)
            .bind(&now)
            .execute(&mut *tx.tx)
            .await?;
        }
        let cursor: i64 =
            sqlx::query_scalar("SELECT last_event FROM relay_cursors WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *tx.tx)
                .await?;
        tx.commit(self).await?;
        Ok(Some(cursor))
    }

    /// Moves the cursor of `name` forward to `confirmed` (never back), if `replica` still holds
    /// the lease. Returns whether it moved.
    pub(crate) async fn advance_relay(
        &self,
        name: &str,
        replica: &str,
        confirmed: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let now = timestamp(tx.now);
        let moved = sqlx::query(
            "UPDATE relay_cursors SET last_event = $1, updated_at = $2 \
             WHERE name = $3 AND leased_by = $4 AND last_event < $1",
        )
        .bind(confirmed)
        .bind(&now)
        .bind(name)
        .bind(replica)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        tx.commit(self).await?;
        Ok(moved == 1)
    }

    /// Gives up the lease of `name`, so another replica can take over at once.
    pub(crate) async fn release_relay(&self, name: &str, replica: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE relay_cursors SET leased_by = NULL, leased_until = NULL \
             WHERE name = $1 AND leased_by = $2",
        )
        .bind(name)
        .bind(replica)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit(self).await?;
        Ok(())
    }
}
