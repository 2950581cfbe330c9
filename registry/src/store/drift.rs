//! Drift monitoring state: per endpoint and judged version, the count of breaching windows and
//! the open incident, written in the same transaction as the event that opens or closes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{MetadataStore, WriteTx, parse_json, parse_timestamp, timestamp};
use crate::drift::monitor::{DriftJudgment, DriftStateRecord, parse_profiles};
use crate::error::{Error, Result};
use ferry_api::drift::Profile;
use ferry_api::events::EventData;
use ferry_api::records::{EndpointPolicy, Event};
use ferry_api::traffic::ReceivedReport;

const STATE_COLUMNS: &str = "endpoint, version, consecutive, incident_event, window_end, \
                             last_score, last_samples, updated_at";

impl MetadataStore {
    /// Every endpoint with its policy, by name.
    ///
    /// # Errors
    /// [`Error::Database`], or [`Error::Internal`] for a stored policy that does not parse.
    pub(crate) async fn endpoint_policies(&self) -> Result<Vec<(String, EndpointPolicy)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, policy FROM endpoints ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.into_iter()
            .map(|(name, policy)| Ok((name, parse_json("endpoint policy", &policy)?)))
            .collect()
    }

    /// The drift monitor's state for every judged version of `endpoint` (of every endpoint when
    /// `None`), by endpoint and version.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn drift_states(&self, endpoint: Option<&str>) -> Result<Vec<DriftStateRecord>> {
        let rows = match endpoint {
            Some(name) => sqlx::query(&format!(
                "SELECT {STATE_COLUMNS} FROM endpoint_drift WHERE endpoint = $1 ORDER BY version"
            ))
            .bind(name)
            .fetch_all(self.pool())
            .await?,
            None => {
                sqlx::query(&format!(
                    "SELECT {STATE_COLUMNS} FROM endpoint_drift ORDER BY endpoint, version"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(state_from_row).collect()
    }

    /// Forgets the drift state of versions the monitor no longer watches, without an event: an
    /// incident of a version that stopped serving has nobody left to recover.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub(crate) async fn forget_drift_states(&self, endpoint: &str, versions: &[i64]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for version in versions {
            sqlx::query("DELETE FROM endpoint_drift WHERE endpoint = $1 AND version = $2")
                .bind(endpoint)
                .bind(*version)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit(self).await?;
        Ok(())
    }

    /// The training profiles of these versions of `model` that have one in the current format.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub(crate) async fn version_profiles(
        &self,
        model: &str,
        versions: &[i64],
    ) -> Result<BTreeMap<i64, Profile>> {
        let mut texts = Vec::with_capacity(versions.len());
        for version in versions {
            let profile: Option<Option<String>> = sqlx::query_scalar(
                "SELECT profile FROM model_versions WHERE model = $1 AND version = $2",
            )
            .bind(model)
            .bind(*version)
            .fetch_optional(self.pool())
            .await?;
            if let Some(Some(text)) = profile {
                texts.push((*version, text));
            }
        }
        if texts.is_empty() {
            return Ok(BTreeMap::new());
        }
        // A profile of thousands of features is a few megabytes of JSON.
        tokio::task::spawn_blocking(move || parse_profiles(texts))
            .await
            .map_err(|e| Error::Internal(format!("profile parsing task failed: {e}")))
    }

    /// The reports endpoint `name` received in `[since, until)`, oldest first.
    ///
    /// # Errors
    /// [`Error::Database`], or [`Error::Internal`] for a stored report that does not parse.
    pub(crate) async fn received_reports(
        &self,
        name: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ReceivedReport>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT received_at, report FROM endpoint_reports \
             WHERE endpoint = $1 AND received_at >= $2 AND received_at < $3 \
             ORDER BY received_at, id",
        )
        .bind(name)
        .bind(timestamp(since))
        .bind(timestamp(until))
        .fetch_all(self.pool())
        .await?;
        tokio::task::spawn_blocking(move || {
            rows.iter()
                .map(|(at, body)| {
                    Ok(ReceivedReport {
                        received_at: parse_timestamp(at)?,
                        report: parse_json("endpoint report", body)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("report parsing task failed: {e}")))?
    }

    /// Writes a drift judgment and its event in one transaction, if the version's state is still
    /// `previous` (what the judgment was made from). When another registry replica (or an
    /// earlier pass) changed it in between, writes nothing and returns no event: writers are
    /// serialized, so of two monitors judging the same window only the first one's judgment
    /// lands, and an incident is raised once. Also writes nothing for an endpoint that was
    /// deleted meanwhile.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub(crate) async fn record_drift_judgment(
        &self,
        previous: Option<&DriftStateRecord>,
        judgment: DriftJudgment,
    ) -> Result<Vec<Event>> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT revision FROM endpoints WHERE name = $1")
                .bind(&judgment.endpoint)
                .fetch_optional(&mut *tx.tx)
                .await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let current = read_state(&mut tx, &judgment.endpoint, judgment.version).await?;
        let key = |s: &DriftStateRecord| (s.consecutive, s.incident_event, s.window_end);
        if current.as_ref().map(key) != previous.map(key) {
            tracing::debug!(endpoint = %judgment.endpoint, version = judgment.version, "drift state changed under this judgment; another monitor judged the window");
            return Ok(Vec::new());
        }
        let open_incident = current.as_ref().and_then(|c| c.incident_event);
        let incident_event = match &judgment.event {
            Some(event @ EventData::DriftDetected(_)) => Some(tx.emit(event.clone()).await?),
            Some(event) => {
                tx.emit(event.clone()).await?;
                None
            }
            None if judgment.state.incident => open_incident,
            None => None,
        };
        sqlx::query(
            "INSERT INTO endpoint_drift \
             (endpoint, version, consecutive, incident_event, window_end, last_score, last_samples, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (endpoint, version) DO UPDATE SET \
             consecutive = excluded.consecutive, incident_event = excluded.incident_event, \
             window_end = excluded.window_end, last_score = excluded.last_score, \
             last_samples = excluded.last_samples, updated_at = excluded.updated_at",
        )
        .bind(&judgment.endpoint)
        .bind(judgment.version)
        .bind(i64::from(judgment.state.consecutive))
        .bind(incident_event)
        .bind(timestamp(judgment.window_end))
        .bind(judgment.score.filter(|s| s.is_finite()))
        .bind(i64::try_from(judgment.samples).unwrap_or(i64::MAX))
        .bind(timestamp(tx.now))
        // Not a cached statement: sqlx 0.8's `Any` binds a `None` f64 as a float4 NULL, and a
        // statement prepared with that parameter type then refuses an f64 (22P03).
        .persistent(false)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit(self).await
    }
}

async fn read_state(
    tx: &mut WriteTx,
    endpoint: &str,
    version: i64,
) -> Result<Option<DriftStateRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {STATE_COLUMNS} FROM endpoint_drift WHERE endpoint = $1 AND version = $2"
    ))
    .bind(endpoint)
    .bind(version)
    .fetch_optional(&mut *tx.tx)
    .await?;
    row.as_ref().map(state_from_row).transpose()
}

fn state_from_row(row: &AnyRow) -> Result<DriftStateRecord> {
    let consecutive: i64 = row.try_get("consecutive")?;
    let window_end: Option<String> = row.try_get("window_end")?;
    let samples: Option<i64> = row.try_get("last_samples")?;
    Ok(DriftStateRecord {
        endpoint: row.try_get("endpoint")?,
        version: row.try_get("version")?,
        consecutive: u32::try_from(consecutive.max(0)).unwrap_or(u32::MAX),
        incident_event: row.try_get("incident_event")?,
        window_end: window_end.as_deref().map(parse_timestamp).transpose()?,
        last_score: row.try_get("last_score")?,
        last_samples: samples.map(|s| u64::try_from(s).unwrap_or(0)),
        updated_at: parse_timestamp(&row.try_get::<String, _>("updated_at")?)?,
    })
}
