//! `ferry events`: print the registry's event log, optionally following it.

use std::time::Duration;

use anyhow::{Context, Result};

use ferry_api::events::EventData;
use ferry_api::events::patterns::{matches, validate_patterns};
use ferry_api::records::Event;

use crate::cli::{EventsArgs, Output};
use crate::output::{self, Table};

/// Widest DATA cell in the table; `-o json` prints events whole.
const DATA_WIDTH: usize = 120;

/// Drifted features named in a drift event's summary before `+N more`.
const SUMMARY_FEATURES: usize = 3;

/// The DATA cell: a one-line summary for the events people read most in a terminal (drift,
/// staleness and performance incidents, whose payloads are long), the JSON payload for the
/// others.
fn describe(kind: &str, data: &serde_json::Value) -> String {
    drift_summary(kind, data).unwrap_or_else(|| data.to_string())
}

/// `fraud:4 (stable) psi 3.26 > 0.2 in f0 (3.26), f7 (0.31)` for `drift.detected`,
/// `fraud:4 (stable) psi 0.03 <= 0.2, recovered from event 15` for `drift.recovered`; `None`
/// for other kinds or a payload that is not the kind's.
fn drift_summary(kind: &str, data: &serde_json::Value) -> Option<String> {
    let head = |model: &str, version: i64, role: &str, metric: &str, score: Option<f64>| {
        score.map(|score| format!("{model}:{version} ({role}) {metric} {score:.2}"))
    };
    match EventData::decode(kind.parse().ok()?, data).ok()? {
        EventData::DriftDetected(d) => {
            let head = head(&d.model, d.version, &d.role, &d.metric, d.score)?;
            let threshold = d.threshold;
            let drifted: Vec<String> = d
                .features
                .iter()
                .filter(|f| f.score > threshold)
                .map(|f| format!("{} ({:.2})", f.name, f.score))
                .collect();
            let mut named = drifted
                .iter()
                .take(SUMMARY_FEATURES)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if drifted.len() > SUMMARY_FEATURES {
                named.push_str(&format!(" +{} more", drifted.len() - SUMMARY_FEATURES));
            }
            Some(if named.is_empty() {
                format!("{head} > {threshold}")
            } else {
                format!("{head} > {threshold} in {named}")
            })
        }
        EventData::DriftRecovered(d) => {
            let head = head(&d.model, d.version, &d.role, &d.metric, d.score)?;
            let threshold = d.threshold;
            Some(match d.detected_event {
                Some(id) => format!("{head} <= {threshold}, recovered from event {id}"),
                None => format!("{head} <= {threshold}, recovered"),
            })
        }
        EventData::ModelStale(d) => Some(format!(
            "{}:{} (stable) {} old > max age {} (from its {})",
            d.model,
            d.version,
            ferry_api::units::short_age(d.age_seconds),
            ferry_api::units::short_age(d.max_age_seconds),
            if d.age_from == "data" {
                "training data"
            } else {
                "creation"
            }
        )),
        EventData::ModelRefreshed(d) => {
            let closes = d
                .stale_event
                .map(|id| format!(", refreshed from event {id}"))
                .unwrap_or_default();
            Some(if d.reason == "policy" {
                format!(
                    "{}:{} (stable) within its max age again{closes}",
                    d.model, d.version
                )
            } else {
                format!(
                    "{}:{} (stable) replaces stale version {}{closes}",
                    d.model, d.version, d.stale_version
                )
            })
        }
        EventData::PerformanceDegraded(d) => Some(format!(
            "{}:{} (stable) {} {:.3} < {:.3} - {} (reference from {})",
            d.model,
            d.version,
            d.metric,
            d.value,
            d.reference,
            d.max_drop,
            d.reference_source.replace('_', " ")
        )),
        EventData::PerformanceRecovered(d) => Some(format!(
            "{}:{} {}{}",
            d.model,
            d.version,
            match (d.reason.as_str(), d.value) {
                ("recovered", Some(v)) => format!("{} {v:.3} back within the limit", d.metric),
                ("replaced", _) => "no longer stable".to_string(),
                _ => "no longer watched".to_string(),
            },
            d.degraded_event
                .map(|id| format!(", recovered from event {id}"))
                .unwrap_or_default()
        )),
        EventData::FeatureViewMaterialized(d) => Some(format!(
            "{}:{} {} rows from {} ({}) into {}",
            d.name,
            d.version,
            d.report.rows,
            d.report.source,
            crate::output::short_hash(&d.report.source_sha256),
            d.report.store
        )),
        _ => None,
    }
}

/// `text` cut to `width` characters, with `…` when something was cut.
fn truncate(text: &str, width: usize) -> String {
    match text.char_indices().nth(width.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > width => format!("{}…", &text[..cut]),
        _ => text.to_string(),
    }
}

/// Runs `ferry events`.
///
/// # Errors
/// Client and server errors.
pub async fn run(args: EventsArgs) -> Result<()> {
    let patterns = if args.types.is_empty() {
        Vec::new()
    } else {
        validate_patterns(&args.types).context("--type")?
    };
    let wanted = |kind: &str| patterns.is_empty() || matches(&patterns, kind);
    let api = super::model::connect(&args.client)?;
    let limit = args.limit.clamp(1, 1000);
    let mut after = args.after;
    let mut first = true;
    let mut remaining = args.count;
    loop {
        let wait = if args.follow && !first {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        let page = api.events(after, limit, wait).await?;
        after = page.next_after;
        let mut events: Vec<&Event> = page.events.iter().filter(|e| wanted(&e.kind)).collect();
        if let Some(left) = remaining.as_mut() {
            events.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= events.len() as u64;
        }
        if args.client.output == Output::Json {
            // One event per line when following, so the output can be piped into jq.
            for event in &events {
                crate::say!("{}", serde_json::to_string(event)?);
            }
        } else if !events.is_empty() || first {
            let mut table = Table::new(&["ID", "TYPE", "SUBJECT", "TIME", "DATA"]);
            for e in &events {
                table.row(vec![
                    e.id.to_string(),
                    e.kind.clone(),
                    e.subject.clone(),
                    output::time(&e.created_at),
                    truncate(&describe(&e.kind, &e.data), DATA_WIDTH),
                ]);
            }
            let rendered = table.render();
            // After the first page, print rows only.
            let body = if first {
                rendered.as_str()
            } else {
                rendered.split_once('\n').map_or("", |(_, rest)| rest)
            };
            crate::output::write_out(format_args!("{body}"));
        }
        first = false;
        if !args.follow || remaining == Some(0) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{describe, truncate};

    #[test]
    fn a_drift_incident_reads_as_one_line_naming_only_the_drifted_features() {
        let mut detected = json!({
            "endpoint": "fraud", "model": "fraud", "version": 4, "role": "stable",
            "metric": "psi", "threshold": 0.2, "score": 3.257_998, "samples": 500,
            "consecutive_windows": 1, "window_seconds": 60.0,
            "window_end": "2026-11-29T21:52:21.000000Z",
            "features": [
                {"name": "f0", "score": 3.257_998},
                {"name": "f7", "score": 0.31},
                {"name": "f12", "score": 0.021},
            ],
        });
        assert_eq!(
            describe("drift.detected", &detected),
            "fraud:4 (stable) psi 3.26 > 0.2 in f0 (3.26), f7 (0.31)"
        );
        detected["features"] = json!([
            {"name": "a", "score": 0.9}, {"name": "b", "score": 0.8},
            {"name": "c", "score": 0.7}, {"name": "d", "score": 0.6},
            {"name": "e", "score": 0.5},
        ]);
        assert_eq!(
            describe("drift.detected", &detected),
            "fraud:4 (stable) psi 3.26 > 0.2 in a (0.90), b (0.80), c (0.70) +2 more"
        );
        let recovered = json!({
            "endpoint": "fraud", "model": "fraud", "version": 4, "role": "canary",
            "metric": "js", "threshold": 0.1, "score": 0.031, "detected_event": 15,
            "samples": 500, "window_seconds": 60.0,
            "window_end": "2026-11-29T21:53:21.000000Z",
        });
        assert_eq!(
            describe("drift.recovered", &recovered),
            "fraud:4 (canary) js 0.03 <= 0.1, recovered from event 15"
        );
    }

    #[test]
    fn other_events_and_unexpected_payloads_show_their_json() {
        let alias = json!({"alias": "production", "model": "fraud", "version": 2});
        assert_eq!(describe("alias.set", &alias), alias.to_string());
        let odd = json!({"model": "fraud"});
        assert_eq!(describe("drift.detected", &odd), odd.to_string());
    }

    #[test]
    fn long_data_is_cut_on_a_character_boundary_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        assert_eq!(truncate("ééééééé", 4), "ééé…");
        assert_eq!(truncate("", 4), "");
    }
}
