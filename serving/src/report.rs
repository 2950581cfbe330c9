//! Pushing this replica's per-version counters to the registry every few seconds, where the
//! counters of every replica add up into the analysis rollouts are judged on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::traffic::{Report, VersionCounters};

use crate::catalog::{CatalogError, SharedCatalog};
use crate::repository::ModelRepository;

/// How often counters are pushed by default (`--report-interval`).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// What an endpoint still has to report: a report sent whose answer never came (sent again as
/// it was, under its id, until the registry answers: it stores a report once, so a lost answer
/// never counts twice), and the counters gathered since, which go in the next report.
#[derive(Default)]
struct Pending {
    unanswered: Option<Report>,
    versions: BTreeMap<i64, VersionCounters>,
    elapsed: Duration,
}

/// How a report went.
enum Sent {
    /// The registry stored it (or had, the first time it was sent).
    Stored,
    /// The endpoint is gone: its counters have nowhere to go.
    Gone,
    /// No answer: send the same report again.
    Unanswered,
}

async fn send(catalog: &SharedCatalog, name: &str, report: &Report) -> Sent {
    match catalog.report(name, report.clone()).await {
        Ok(()) => Sent::Stored,
        Err(CatalogError::NotFound(_)) => Sent::Gone,
        Err(e) => {
            tracing::debug!(endpoint = %name, error = %e, "report not delivered; will send it again");
            Sent::Unanswered
        }
    }
}

/// Sends every endpoint's counters every `interval` until `stop` is cancelled, then once more, so
/// the counts of the last seconds before a shutdown reach the registry too.
pub async fn run(
    catalog: SharedCatalog,
    repository: Arc<ModelRepository>,
    replica: String,
    interval: Duration,
    drift: Option<crate::api::DriftGauges>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = false;
    while !last {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => last = true,
        }
        let snapshot = repository.snapshot();
        if let Some(gauges) = &drift {
            // Scoring every version's histograms is CPU work: on the blocking pool.
            let (gauges, models) = (gauges.clone(), snapshot.clone());
            if let Err(e) = ferry_api::blocking::run_blocking(move || {
                update_drift_gauges(&gauges, &models);
            })
            .await
            {
                tracing::warn!(error = %e, "updating the drift gauges failed");
            }
        }
        for (name, model) in snapshot.iter() {
            let Some(endpoint) = &model.endpoint else {
                continue;
            };
            let taken = model.traffic.stats.take_report(Instant::now());
            let entry = pending.entry(name.clone()).or_default();
            entry.elapsed += taken.elapsed;
            for (version, counters) in taken.versions {
                entry.versions.entry(version).or_default().merge(&counters);
            }
            // First the report whose answer was lost, unchanged; once it is answered, the
            // counters gathered since, in a new report.
            if let Some(report) = entry.unanswered.take() {
                match send(&catalog, name, &report).await {
                    Sent::Stored => {}
                    Sent::Gone => {
                        pending.remove(name);
                        continue;
                    }
                    Sent::Unanswered => {
                        entry.unanswered = Some(report);
                        continue;
                    }
                }
            }
            let report = Report {
                id: Some(ferry_api::http::request_id::new_id()),
                replica: replica.clone(),
                interval_seconds: entry.elapsed.as_secs_f64().max(0.001),
                revision: Some(endpoint.revision),
                versions: std::mem::take(&mut entry.versions),
                load_error: model.last_error.clone(),
            };
            entry.elapsed = Duration::ZERO;
            match send(&catalog, name, &report).await {
                Sent::Stored | Sent::Gone => {
                    pending.remove(name);
                }
                Sent::Unanswered => entry.unanswered = Some(report),
            }
        }
        // Endpoints no longer served take their unsent counters with them.
        pending.retain(|name, _| snapshot.get(name).is_some_and(|m| m.endpoint.is_some()));
    }
}

/// Window the drift gauges look back over.
const DRIFT_WINDOW: Duration = Duration::from_secs(300);

fn update_drift_gauges(
    gauges: &crate::api::DriftGauges,
    snapshot: &std::collections::HashMap<String, Arc<crate::repository::ServedModel>>,
) {
    ferry_api::blocking::assert_off_reactor("scoring drift for the gauges");
    let now = Instant::now();
    for (name, model) in snapshot {
        let window = model.traffic.stats.window(now, DRIFT_WINDOW);
        for (label, served) in &model.versions {
            let Some(profile) = &served.profile else {
                continue;
            };
            let drift = window.get(&served.number).and_then(|c| c.drift.as_ref());
            if let Some(drift) = drift {
                gauges.set(
                    name,
                    label,
                    &ferry_api::drift::analyze_drift(profile, drift),
                );
            }
        }
    }
}

/// A replica id that is stable for the life of the process and distinct between replicas:
/// `FERRY_REPLICA_ID`, else the pod or host name and the port.
pub fn replica_id(port: u16) -> String {
    if let Ok(id) = std::env::var("FERRY_REPLICA_ID")
        && !id.trim().is_empty()
    {
        return id;
    }
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{port}")
}
