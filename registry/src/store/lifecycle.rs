//! The lifecycle monitor's state: per endpoint and kind (`stale`, `decay`), the stable version it
//! is about, the open incident, and the decay reference, written in the same transaction as the
//! event that opens or closes the incident.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{MetadataStore, WriteTx, parse_timestamp, timestamp};
use crate::error::Result;
use crate::lifecycle::{Kind, LifecycleState, LifecycleWrite};
use ferry_api::records::Event;

const COLUMNS: &str = "endpoint, kind, version, incident_event, reference, reference_source, \
                       last_value, last_samples, updated_at";

impl MetadataStore {
    /// The lifecycle monitor's state of `endpoint` (of every endpoint when `None`).
    ///
    /// # Errors
    /// [`Error::Database`](crate::Error::Database).
    pub async fn lifecycle_states(&self, endpoint: Option<&str>) -> Result<Vec<LifecycleState>> {
        let rows = match endpoint {
            Some(name) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM endpoint_lifecycle WHERE endpoint = $1 ORDER BY kind"
                ))
                .bind(name)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM endpoint_lifecycle ORDER BY endpoint, kind"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter()
            .map(state_from_row)
            .filter_map(Result::transpose)
            .collect()
    }

    /// Writes a lifecycle judgment and its event in one transaction, if the row is still
    /// `previous` (the state the judgment was made from: same version, incident and reference).
    /// When another registry replica changed it in between, writes nothing and returns no
    /// event, so an incident is opened (and closed) once however many monitors run. Writes
    /// nothing for an endpoint deleted meanwhile. `write.forget` deletes the row instead.
    ///
    /// # Errors
    /// [`Error::Database`](crate::Error::Database).
    pub(crate) async fn record_lifecycle(
        &self,
        previous: Option<&LifecycleState>,
        write: LifecycleWrite,
    ) -> Result<Vec<Event>> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT revision FROM endpoints WHERE name = $1")
                .bind(&write.endpoint)
                .fetch_optional(&mut *tx.tx)
                .await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let current = read_state(&mut tx, &write.endpoint, write.kind).await?;
        let key = |s: &LifecycleState| {
            (
                s.version,
                s.incident_event,
                s.reference.map(f64::to_bits),
                s.reference_source,
            )
        };
        if current.as_ref().map(key) != previous.map(key) {
            tracing::debug!(endpoint = %write.endpoint, kind = write.kind.as_str(), "lifecycle state changed under this judgment; another monitor judged it");
            return Ok(Vec::new());
        }
        let incident_event = match write.incident {
            crate::lifecycle::Incident::Keep => current.as_ref().and_then(|c| c.incident_event),
            crate::lifecycle::Incident::Open(event) => Some(tx.emit(event).await?),
            crate::lifecycle::Incident::Close(event) => {
                tx.emit(event).await?;
                None
            }
        };
        if write.forget {
            sqlx::query("DELETE FROM endpoint_lifecycle WHERE endpoint = $1 AND kind = $2")
                .bind(&write.endpoint)
                .bind(write.kind.as_str())
                .execute(&mut *tx.tx)
                .await?;
        } else {
            // Not a cached statement: sqlx 0.8's `Any` binds a `None` f64 as a float4 NULL,
            // and a statement prepared with that parameter type then refuses an f64 (22P03).
            sqlx::query(
                "INSERT INTO endpoint_lifecycle \
                 (endpoint, kind, version, incident_event, reference, reference_source, last_value, last_samples, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (endpoint, kind) DO UPDATE SET \
                 version = excluded.version, incident_event = excluded.incident_event, \
                 reference = excluded.reference, reference_source = excluded.reference_source, \
                 last_value = excluded.last_value, last_samples = excluded.last_samples, \
                 updated_at = excluded.updated_at",
            )
            .bind(&write.endpoint)
            .bind(write.kind.as_str())
            .bind(write.version)
            .bind(incident_event)
            .bind(write.reference.filter(|r| r.is_finite()))
            .bind(write.reference_source.map(|s| s.as_str()))
            .bind(write.value.filter(|v| v.is_finite()))
            .bind(write.samples.map(|s| i64::try_from(s).unwrap_or(i64::MAX)))
            .bind(timestamp(tx.now))
            .persistent(false)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit(self).await
    }
}

async fn read_state(
    tx: &mut WriteTx,
    endpoint: &str,
    kind: Kind,
) -> Result<Option<LifecycleState>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM endpoint_lifecycle WHERE endpoint = $1 AND kind = $2"
    ))
    .bind(endpoint)
    .bind(kind.as_str())
    .fetch_optional(&mut *tx.tx)
    .await?;
    Ok(row.as_ref().map(state_from_row).transpose()?.flatten())
}

/// A row, or `None` for a kind this build does not know (written by a newer registry).
fn state_from_row(row: &AnyRow) -> Result<Option<LifecycleState>> {
    let Some(kind) = Kind::parse(&row.try_get::<String, _>("kind")?) else {
        return Ok(None);
    };
    let samples: Option<i64> = row.try_get("last_samples")?;
    let source: Option<String> = row.try_get("reference_source")?;
    Ok(Some(LifecycleState {
        endpoint: row.try_get("endpoint")?,
        kind,
        version: row.try_get("version")?,
        incident_event: row.try_get("incident_event")?,
        reference: row.try_get("reference")?,
        reference_source: source
            .as_deref()
            .and_then(ferry_api::lifecycle::ReferenceSource::parse),
        last_value: row.try_get("last_value")?,
        last_samples: samples.map(|s| u64::try_from(s).unwrap_or(0)),
        updated_at: parse_timestamp(&row.try_get::<String, _>("updated_at")?)?,
    }))
}
