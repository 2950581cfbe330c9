//! Reports of serving replicas: stored as they arrive, summed per window on demand, pruned by
//! age in the background.
//!
//! A report is not a change of registry state, so it emits no event of its own (replicas report
//! every few seconds and would flood the log). A change of a replica's load error is one:
//! `endpoint.degraded` when it reports a new error, `endpoint.recovered` when it reports none
//! after one.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::endpoints::to_json;
use super::{JobKey, MetadataStore, parse_json, parse_timestamp, timestamp};
use crate::error::{Error, Result};
use ferry_api::drift::{Profile, VersionHistograms, feature_histograms};
use ferry_api::events::{EndpointDegraded, EndpointRecovered, EventData};
use ferry_api::names;
use ferry_api::records::EndpointRecord;
use ferry_api::records::Event;
use ferry_api::traffic::{
    AnalysisSeries, DriftCounters, EndpointAnalysis, Report, analysis_series,
};
use ferry_api::traffic::{ReceivedReport, referenced_versions, summarize_reports, validate_report};

/// Reports deleted per transaction when pruning, so that no prune holds the writer lock long.
const PRUNE_BATCH: i64 = 500;

/// Least time between two background prunes started by one process.
const PRUNE_EVERY: TimeDelta = TimeDelta::seconds(60);

impl MetadataStore {
    /// Stores a replica's report for endpoint `name`, received now, and emits
    /// `endpoint.degraded` / `endpoint.recovered` when the replica's load error changed.
    /// Returns those events (usually none).
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid report, [`Error::NotFound`] for an unknown endpoint.
    pub async fn record_report(&self, name: &str, report: Report) -> Result<Vec<Event>> {
        self.insert_report(name, report, None).await
    }

    /// Like [`MetadataStore::record_report`], as if received at `received_at`: for tests and
    /// for replaying reports collected elsewhere.
    ///
    /// # Errors
    /// As [`MetadataStore::record_report`].
    pub async fn record_report_at(
        &self,
        name: &str,
        report: Report,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<Event>> {
        self.insert_report(name, report, Some(received_at)).await
    }

    async fn insert_report(
        &self,
        name: &str,
        report: Report,
        received_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>> {
        names::validate("endpoint", name)?;
        let report = validate_report(report)?;
        let body = to_json(&report)?;
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT revision FROM endpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx.tx)
                .await?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("endpoint `{name}` does not exist")));
        }
        // A report sent again under its id (its answer was lost) is stored once and answered as
        // the first time, with no events (they were emitted then).
        if let Some(id) = &report.id {
            let first: Option<(String, String)> =
                sqlx::query_as("SELECT endpoint, replica FROM endpoint_reports WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx.tx)
                    .await?;
            match first {
                Some((endpoint, replica)) if endpoint == name && replica == report.replica => {
                    tracing::debug!(endpoint = %name, replica = %report.replica, report = %id, "a report sent again is counted once");
                    return Ok(Vec::new());
                }
                Some(_) => {
                    return Err(Error::Conflict(format!(
                        "report id `{id}` was already used by another replica's or endpoint's report; use a fresh UUID per report"
                    )));
                }
                None => {}
            }
        }
        let at = timestamp(received_at.unwrap_or(tx.now));
        sqlx::query(
            "INSERT INTO endpoint_reports (id, endpoint, replica, received_at, report) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(
            report
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        )
        .bind(name)
        .bind(&report.replica)
        .bind(&at)
        .bind(&body)
        .execute(&mut *tx.tx)
        .await?;

        // Writers are serialized, so two reports of one replica cannot both see the old error
        // and both emit.
        let previous: Option<String> = sqlx::query_scalar::<_, Option<String>>(
            "SELECT load_error FROM endpoint_replicas WHERE endpoint = $1 AND replica = $2",
        )
        .bind(name)
        .bind(&report.replica)
        .fetch_optional(&mut *tx.tx)
        .await?
        .flatten();
        match (&previous, &report.load_error) {
            (previous, Some(error)) if previous.as_ref() != Some(error) => {
                tx.emit(EventData::EndpointDegraded(EndpointDegraded {
                    endpoint: name.to_string(),
                    replica: report.replica.clone(),
                    error: error.clone(),
                    revision: report.revision,
                }))
                .await?;
            }
            (Some(previous), None) => {
                tx.emit(EventData::EndpointRecovered(EndpointRecovered {
                    endpoint: name.to_string(),
                    replica: report.replica.clone(),
                    previous_error: previous.clone(),
                    revision: report.revision,
                }))
                .await?;
            }
            _ => {}
        }
        sqlx::query(
            "INSERT INTO endpoint_replicas (endpoint, replica, load_error, last_report_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (endpoint, replica) DO UPDATE \
             SET load_error = excluded.load_error, last_report_at = excluded.last_report_at",
        )
        .bind(name)
        .bind(&report.replica)
        .bind(report.load_error.as_deref())
        .bind(&at)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit(self).await
    }

    /// Deletes reports received before `before`, and forgets replicas that have not reported
    /// since, in batches of a few hundred rows per transaction. Returns how many reports went:
    /// 0 when another registry on the same database is pruning at the moment (its prune covers
    /// the same rows).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn prune_reports(&self, before: DateTime<Utc>) -> Result<u64> {
        // Several registries on one database: one prunes, the others have nothing to do.
        let Some(lock) = self.try_job_lock(JobKey::PruneReports).await? else {
            tracing::debug!("another registry is pruning the reports");
            return Ok(0);
        };
        let pruned = self.prune_reports_batches(before).await;
        lock.release().await;
        pruned
    }

    async fn prune_reports_batches(&self, before: DateTime<Utc>) -> Result<u64> {
        let cutoff = timestamp(before);
        let mut total = 0;
        loop {
            let mut tx = self.begin_write().await?;
            // `IN (SELECT … LIMIT)`: neither engine shares a `DELETE … LIMIT` syntax.
            let deleted = sqlx::query(
                "DELETE FROM endpoint_reports WHERE id IN \
                 (SELECT id FROM endpoint_reports WHERE received_at < $1 LIMIT $2)",
            )
            .bind(&cutoff)
            .bind(PRUNE_BATCH)
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
            let done = deleted < PRUNE_BATCH as u64;
            if done {
                sqlx::query("DELETE FROM endpoint_replicas WHERE last_report_at < $1")
                    .bind(&cutoff)
                    .execute(&mut *tx.tx)
                    .await?;
            }
            tx.commit(self).await?;
            total += deleted;
            if done {
                return Ok(total);
            }
        }
    }

    /// Starts [`MetadataStore::prune_reports`] of reports older than `retention` on a background
    /// task, unless this store started one less than a minute ago; says whether it started one.
    /// Cheap enough to call on every report; never waits for the prune. Must be called inside a
    /// Tokio runtime.
    pub fn prune_reports_soon(&self, retention: Duration) -> bool {
        let now = Utc::now();
        let last = self.reports_pruned_at.load(Ordering::Relaxed);
        if now.timestamp_millis() - last < PRUNE_EVERY.num_milliseconds() {
            return false;
        }
        // One caller wins the slot; the others see it taken and go on.
        if self
            .reports_pruned_at
            .compare_exchange(
                last,
                now.timestamp_millis(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        let Some(cutoff) = TimeDelta::from_std(retention)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
        else {
            return false;
        };
        let store = self.clone();
        tokio::spawn(async move {
            match store.prune_reports(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(reports = n, "pruned old endpoint reports"),
                Err(e) => tracing::warn!(error = %e, "pruning old endpoint reports failed"),
            }
        });
        true
    }

    /// Sums the reports endpoint `name` received in the last `window`, per version, labelled
    /// with their roles in the current policy, and scores the drift of every version of the
    /// policy that has a training profile (each profile loaded once).
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name, [`Error::NotFound`] for an unknown endpoint.
    pub async fn endpoint_analysis(
        &self,
        name: &str,
        window: Duration,
    ) -> Result<EndpointAnalysis> {
        let window_seconds = window.as_secs_f64();
        self.with_window_reports(name, window, move |endpoint, reports, profiles| {
            summarize_reports(
                &endpoint.name,
                window_seconds,
                &endpoint.policy,
                reports,
                profiles,
            )
        })
        .await
    }

    /// The analysis of endpoint `name` step by step over the last `window`
    /// ([`analysis_series`]).
    ///
    /// # Errors
    /// As [`MetadataStore::endpoint_analysis`].
    pub async fn endpoint_analysis_series(
        &self,
        name: &str,
        window: Duration,
        step: Duration,
    ) -> Result<AnalysisSeries> {
        let end = Utc::now();
        self.with_window_reports(name, window, move |endpoint, reports, profiles| {
            analysis_series(
                &endpoint.name,
                &endpoint.policy,
                reports,
                profiles,
                end,
                window,
                step,
            )
        })
        .await
    }

    /// The training and live histograms of `version` (the stable one by default) of endpoint
    /// `name` over the last `window` ([`feature_histograms`]).
    ///
    /// # Errors
    /// As [`MetadataStore::endpoint_analysis`]; [`Error::NotFound`] when the version is not in
    /// the endpoint's policy or has no training profile.
    pub async fn endpoint_histograms(
        &self,
        name: &str,
        version: Option<i64>,
        window: Duration,
    ) -> Result<VersionHistograms> {
        self.with_window_reports(name, window, move |endpoint, reports, profiles| {
            let version = version.unwrap_or(endpoint.policy.stable);
            let profile = profiles.get(&version).ok_or_else(|| {
                Error::NotFound(format!(
                    "version {version} of endpoint {} is not in its policy or has no training \
                     profile (push it with --profile-data)",
                    endpoint.name
                ))
            })?;
            let mut live = DriftCounters::default();
            for received in reports {
                if let Some(drift) = received
                    .report
                    .versions
                    .get(&version)
                    .and_then(|c| c.drift.as_ref())
                {
                    live.merge(drift);
                }
            }
            Ok(VersionHistograms {
                endpoint: endpoint.name.clone(),
                version,
                window_seconds: window.as_secs_f64(),
                features: feature_histograms(profile, &live),
            })
        })
        .await?
    }

    /// Loads endpoint `name`, the reports it received in the last `window` and the training
    /// profiles of its policy's versions, then runs `f` on them on a blocking thread (parsing
    /// and summing an hour of reports from many replicas is CPU work: kept off the reactor).
    async fn with_window_reports<T: Send + 'static>(
        &self,
        name: &str,
        window: Duration,
        f: impl FnOnce(&EndpointRecord, &[ReceivedReport], &BTreeMap<i64, Profile>) -> T
        + Send
        + 'static,
    ) -> Result<T> {
        let endpoint = self.get_endpoint(name).await?;
        let since = TimeDelta::from_std(window)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| Error::BadRequest(format!("window of {window:?} is too long")))?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT received_at, report FROM endpoint_reports \
             WHERE endpoint = $1 AND received_at >= $2 ORDER BY received_at, id",
        )
        .bind(name)
        .bind(timestamp(since))
        .fetch_all(self.pool())
        .await?;
        let versions: Vec<i64> = referenced_versions(&endpoint.policy)
            .iter()
            .map(|used| used.version)
            .collect();
        let profiles = self
            .version_profiles(&endpoint.policy.model, &versions)
            .await?;
        tokio::task::spawn_blocking(move || {
            let reports = rows
                .iter()
                .map(|(at, body)| {
                    Ok(ReceivedReport {
                        received_at: parse_timestamp(at)?,
                        report: parse_json("endpoint report", body)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(f(&endpoint, &reports, &profiles))
        })
        .await
        .map_err(|e| Error::Internal(format!("analysis task failed: {e}")))?
    }
}
