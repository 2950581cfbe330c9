//! Feature views: registering a definition (a new version unless the same definition is
//! already registered), reading them, and the check an upload's lineage goes through.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::endpoints::to_json;
use super::{MetadataStore, WriteTx, parse_json, parse_timestamp, timestamp};
use crate::error::{Error, Result};
use ferry_api::events::{EventData, FeatureViewRegistered};
use ferry_api::features::{FeatureViewRecord, FeatureViewRef, FeatureViewSpec};
use ferry_api::names;
use ferry_api::records::Page;

const COLUMNS: &str = "name, version, sha256, spec, created_at";

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
            Some(row) => view_from_row(&row),
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

fn view_from_row(row: &AnyRow) -> Result<FeatureViewRecord> {
    Ok(FeatureViewRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        spec: parse_json("feature view", &row.try_get::<String, _>("spec")?)?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
    })
}
