//! Feature views: registering a definition (a new version unless the same definition is
//! already registered), reading them, and the check an upload's lineage goes through.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::endpoints::to_json;
use super::{MetadataStore, WriteTx, parse_json, parse_timestamp, timestamp};
use crate::error::{Error, Result};
use ferry_api::events::{
    EventData, FeatureViewMaterialized, FeatureViewRegistered, SkewDetected, SkewRecovered,
};
use ferry_api::features::{
    FeatureViewRecord, FeatureViewRef, FeatureViewSpec, MaterializationBody,
};
use ferry_api::names;
use ferry_api::records::Event;
use ferry_api::records::Page;
use ferry_api::skew::{self, Judgment, SampledRow, ServedRows, SkewState};

const COLUMNS: &str = "name, version, sha256, spec, created_at";

/// Entities looked up in one query of the skew sample.
const SAMPLE_QUERY_CHUNK: usize = 200;

impl MetadataStore {
    /// Registers `spec` as view `name`: the version with the same definition if there is one
    /// (`false`: nothing written), else a new version with a `feature_view.registered` event
    /// (`true`).
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name or definition, naming every problem.
    pub async fn register_feature_view(
        &self,
        name: &str,
        spec: FeatureViewSpec,
    ) -> Result<(FeatureViewRecord, bool)> {
        names::validate("feature view", name)?;
        spec.validate()?;
        let sha256 = spec.sha256();
        let body = to_json(&spec)?;
        let mut tx = self.begin_write().await?;
        let same = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM feature_views WHERE name = $1 AND sha256 = $2 ORDER BY version LIMIT 1"
        ))
        .bind(name)
        .bind(&sha256)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if let Some(row) = same {
            return Ok((view_from_row(&row)?, false));
        }
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM feature_views WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *tx.tx)
                .await?;
        let version = latest.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO feature_views (name, version, sha256, spec, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(version)
        .bind(&sha256)
        .bind(&body)
        .bind(timestamp(tx.now))
        .execute(&mut *tx.tx)
        .await?;
        let record = FeatureViewRecord {
            name: name.to_string(),
            version,
            sha256,
            created_at: tx.now,
            spec,
            sample_bound: None,
        };
        tx.emit(EventData::FeatureViewRegistered(FeatureViewRegistered {
            name: name.to_string(),
            version,
            sha256: record.sha256.clone(),
            entity: record.spec.entity.clone(),
            features: record.spec.features.len(),
        }))
        .await?;
        tx.commit(self).await?;
        Ok((record, true))
    }

    /// Records that version `version` of view `name` was materialized: a
    /// `feature_view.materialized` event, which is returned, and the materialization's sample
    /// (replacing the previous one; the skew window starts again, an open incident stays open
    /// until a window judges it).
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid report or sample, [`Error::NotFound`] for a view
    /// version that does not exist.
    pub async fn record_materialization(
        &self,
        name: &str,
        version: i64,
        body: MaterializationBody,
    ) -> Result<Event> {
        body.report.validate()?;
        // Checks the name and that the version exists.
        let view = self.get_feature_view(name, Some(version)).await?;
        if let Some(sample) = &body.sample {
            sample.validate(view.spec.features.len())?;
        }
        let mut tx = self.begin_write().await?;
        if let Some(sample) = &body.sample {
            sqlx::query("DELETE FROM feature_view_samples WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .execute(&mut *tx.tx)
                .await?;
            for row in &sample.rows {
                sqlx::query(
                    "INSERT INTO feature_view_samples (name, version, entity, vals) VALUES ($1, $2, $3, $4)",
                )
                .bind(name)
                .bind(version)
                .bind(&row.entity)
                .bind(to_json(&row.values)?)
                .execute(&mut *tx.tx)
                .await?;
            }
            let previous = skew_state(&mut tx, name, version).await?;
            let state = SkewState {
                incident_event: previous.and_then(|(_, s)| s.incident_event),
                ..SkewState::default()
            };
            sqlx::query("DELETE FROM feature_view_skew WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .execute(&mut *tx.tx)
                .await?;
            sqlx::query(
                "INSERT INTO feature_view_skew (name, version, bound, state, materialized_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(name)
            .bind(version)
            .bind(sample.bound.to_string())
            .bind(to_json(&state)?)
            .bind(timestamp(tx.now))
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.emit(EventData::FeatureViewMaterialized(Box::new(
            FeatureViewMaterialized {
                name: name.to_string(),
                version,
                report: body.report,
            },
        )))
        .await?;
        tx.commit(self)
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("the event written was not returned".into()))
    }

    /// Compares rows serving read online with the offline sample of the same entities (rows of
    /// entities outside the sample are ignored), and judges full windows: a `skew.detected` or
    /// `skew.recovered` event is written with the state. How many rows were compared.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for rows that do not fit the view, [`Error::NotFound`] for a view
    /// version that does not exist.
    pub async fn record_served_features(
        &self,
        name: &str,
        version: i64,
        served: ServedRows,
    ) -> Result<u64> {
        let view = self.get_feature_view(name, Some(version)).await?;
        served.validate(view.spec.features.len())?;
        let names: Vec<String> = view.spec.features.iter().map(|f| f.name.clone()).collect();
        // The offline rows of these entities, read before the write transaction (in chunks, one
        // query each), so the registry's writer lock is held only for the judgment.
        let mut offline_rows: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        let wanted: Vec<&str> = served.rows.iter().map(|r| r.entity.as_str()).collect();
        for chunk in wanted.chunks(SAMPLE_QUERY_CHUNK) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT entity, vals FROM feature_view_samples WHERE name = $1 AND version = $2 AND entity IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(name).bind(version);
            for entity in chunk {
                query = query.bind(*entity);
            }
            for row in query.fetch_all(self.pool()).await? {
                offline_rows.insert(row.try_get("entity")?, row.try_get("vals")?);
            }
        }
        if offline_rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let Some((_, mut state)) = skew_state(&mut tx, name, version).await? else {
            // Never materialized with a sample: nothing to compare with.
            return Ok(0);
        };
        let mut compared = 0;
        for row in &served.rows {
            let Some(offline) = offline_rows.get(&row.entity) else {
                continue;
            };
            let values: Vec<Option<f64>> = parse_json("offline sample", offline)?;
            let offline = SampledRow {
                entity: row.entity.clone(),
                values,
            };
            skew::compare(&mut state, &offline, row);
            compared += 1;
            let window_rows = state.rows;
            match skew::judge(&mut state, &names) {
                Judgment::Nothing => {}
                Judgment::Detected(features) => {
                    let id = tx
                        .emit(EventData::SkewDetected(Box::new(SkewDetected {
                            name: name.to_string(),
                            version,
                            window_rows,
                            features,
                        })))
                        .await?;
                    state.incident_event = Some(id);
                }
                Judgment::Recovered => {
                    tx.emit(EventData::SkewRecovered(Box::new(SkewRecovered {
                        name: name.to_string(),
                        version,
                        window_rows,
                        detected_event: state.incident_event.take(),
                    })))
                    .await?;
                }
            }
        }
        if compared > 0 {
            sqlx::query("UPDATE feature_view_skew SET state = $1 WHERE name = $2 AND version = $3")
                .bind(to_json(&state)?)
                .bind(name)
                .bind(version)
                .execute(&mut *tx.tx)
                .await?;
            tx.commit(self).await?;
        }
        Ok(compared)
    }

    /// A view's version `version`, or its newest.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name, [`Error::NotFound`] when it does not exist.
    pub async fn get_feature_view(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<FeatureViewRecord> {
        names::validate("feature view", name)?;
        let row = match version {
            Some(v) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM feature_views WHERE name = $1 AND version = $2"
                ))
                .bind(name)
                .bind(v)
                .fetch_optional(self.pool())
                .await?
            }
            None => sqlx::query(&format!(
                "SELECT {COLUMNS} FROM feature_views WHERE name = $1 ORDER BY version DESC LIMIT 1"
            ))
            .bind(name)
            .fetch_optional(self.pool())
            .await?,
        };
        match row {
            Some(row) => {
                let mut view = view_from_row(&row)?;
                let bound: Option<String> = sqlx::query_scalar(
                    "SELECT bound FROM feature_view_skew WHERE name = $1 AND version = $2",
                )
                .bind(name)
                .bind(view.version)
                .fetch_optional(self.pool())
                .await?;
                view.sample_bound = bound.and_then(|b| b.parse().ok());
                Ok(view)
            }
            None => Err(Error::NotFound(match version {
                Some(v) => format!("feature view `{name}` has no version {v}"),
                None => format!("feature view `{name}` does not exist"),
            })),
        }
    }

    /// The newest version of every view, by name; `page_token` is the previous page's
    /// `next_page_token` (the last name).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn list_feature_views(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<FeatureViewRecord>> {
        let after = page_token.unwrap_or("");
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM feature_views v WHERE name > $1 AND version = \
             (SELECT MAX(version) FROM feature_views w WHERE w.name = v.name) \
             ORDER BY name LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() > limit as usize;
        let items = rows
            .iter()
            .take(limit as usize)
            .map(view_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            next_page_token: if more {
                items.last().map(|v| v.name.clone())
            } else {
                None
            },
            items,
        })
    }
}

/// Checks, inside an upload's transaction, that the view version a lineage names exists with
/// the hash it gives.
///
/// # Errors
/// [`Error::NotFound`] for a view version that does not exist, [`Error::BadRequest`] for a hash
/// that is not the version's.
pub(crate) async fn check_reference(tx: &mut WriteTx, view: &FeatureViewRef) -> Result<()> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT sha256 FROM feature_views WHERE name = $1 AND version = $2")
            .bind(&view.name)
            .bind(view.version)
            .fetch_optional(&mut *tx.tx)
            .await?;
    match stored {
        None => Err(Error::NotFound(format!(
            "metadata field `feature_view` names feature view `{}` version {}, which is not registered",
            view.name, view.version
        ))),
        Some(hash) if hash != view.sha256 => Err(Error::BadRequest(format!(
            "metadata field `feature_view.sha256` is {}, but feature view `{}` version {} has {hash}",
            view.sha256, view.name, view.version
        ))),
        Some(_) => Ok(()),
    }
}

/// The skew row of a view version: its bound and state.
async fn skew_state(
    tx: &mut WriteTx,
    name: &str,
    version: i64,
) -> Result<Option<(u64, SkewState)>> {
    let row =
        sqlx::query("SELECT bound, state FROM feature_view_skew WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&mut *tx.tx)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let bound: String = row.try_get("bound")?;
    let state: String = row.try_get("state")?;
    Ok(Some((
        bound.parse().unwrap_or(u64::MAX),
        parse_json("skew state", &state)?,
    )))
}

fn view_from_row(row: &AnyRow) -> Result<FeatureViewRecord> {
    Ok(FeatureViewRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        spec: parse_json("feature view", &row.try_get::<String, _>("spec")?)?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        sample_bound: None,
    })
}
