//! `GET /v2/models/{name}/stats?window=`: this replica's per-version numbers, summarized the
//! way the registry summarizes every replica's reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};

use super::extract::Path;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::find_model;
use crate::ServingState;
use crate::error::ServingError;

/// `?window=` of `/stats`.
#[derive(Debug, Deserialize)]
pub(super) struct StatsQuery {
    window: Option<String>,
}

pub(super) async fn stats(
    State(state): State<ServingState>,
    Path(name): Path<String>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ServingError> {
    let Query(query) =
        query.map_err(|e| ServingError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let window = match query.window.as_deref() {
        None => Duration::from_secs(60),
        Some(text) => parse_window(text)?,
    };
    let model = find_model(&state, &name)?;
    let policy = model
        .endpoint
        .as_ref()
        .map(|e| e.policy.clone())
        .or_else(|| {
            // A plain model: its served version plays the stable role.
            model
                .default
                .version
                .parse()
                .ok()
                .map(|v| ferry_api::records::EndpointPolicy {
                    model: name.clone(),
                    stable: v,
                    canary: None,
                    shadows: Vec::new(),
                    sticky_header: None,
                    drift: None,
                    max_age_seconds: None,
                    decay: None,
                })
        });
    // Drift is scored against the training profiles of the versions served here.
    let profiles: BTreeMap<i64, Arc<ferry_api::drift::Profile>> = model
        .versions
        .values()
        .filter_map(|v| Some((v.version.parse().ok()?, v.profile.clone()?)))
        .collect();
    let mut analysis =
        model
            .traffic
            .stats
            .analysis(Instant::now(), window, policy.as_ref(), &profiles);
    analysis.load_error.clone_from(&model.last_error);
    Ok(axum::Json(analysis).into_response())
}

/// A `/stats` window in the contract's duration grammar, at most the stats horizon.
///
/// # Errors
/// [`ServingError::BadRequest`] saying what is wrong.
pub fn parse_window(text: &str) -> Result<Duration, ServingError> {
    ferry_api::traffic::parse_window(Some(text), crate::served::STATS_HORIZON)
        .map_err(|e| ServingError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_seconds_minutes_and_hours_within_the_horizon() {
        assert_eq!(parse_window("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_window("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_window("90").ok(), Some(Duration::from_secs(90)));
        assert!(parse_window("1h").is_err(), "beyond the 15 min horizon");
        assert!(parse_window("0s").is_err());
        assert!(parse_window("5 minutes").is_err());
        assert!(parse_window("").is_err());
    }
}
