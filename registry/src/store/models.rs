//! Models, versions and aliases.

use super::page::parse_page_token;
use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{MetadataStore, parse_json, parse_timestamp, timestamp};
use crate::blob_store::BlobStore;
use crate::error::{Error, Result};
use ferry_api::events::{
    AliasDeleted, AliasSet, EventData, ModelCreated, VersionCreated, VersionUpdated,
};
use ferry_api::lineage::VersionMetadata;
use ferry_api::names::{LATEST, VersionRef};
use ferry_api::onnx::ModelSignature;
use ferry_api::records::{AliasRecord, ModelRecord, Page, VersionRecord, VersionStatus};

/// A version about to be recorded: its bytes are already published in the blob store.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The model's name (validated).
    pub model: String,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Size of the bytes.
    pub size: u64,
    /// What the ONNX graph declares.
    pub signature: ModelSignature,
    /// The upload's metadata (validated).
    pub metadata: VersionMetadata,
    /// `Idempotency-Key` and the fingerprint a retry must match.
    pub idempotency: Option<(String, String)>,
}

/// What recording a version did.
#[derive(Debug, Clone)]
pub enum Inserted {
    /// A new version was created.
    Created(VersionRecord),
    /// The idempotency key had already created this version; nothing new was stored.
    Replayed(VersionRecord),
}

const VERSION_COLUMNS: &str = "model, version, sha256, size, status, signature, lineage, params, \
     metrics, tags, description, profile IS NOT NULL AS has_profile, created_at";

impl MetadataStore {
    /// Records a new version (creating the model on its first version) with its events, or
    /// returns the version an earlier request with the same idempotency key created.
    ///
    /// The blob must already be published in `blobs`; it is checked under the write lock (see
    /// [`crate::gc`] for why that makes a concurrent gc safe).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the key was used with different content,
    /// [`Error::Unavailable`] when the blob is gone (a concurrent gc collected it: retry).
    pub async fn insert_version(&self, new: NewVersion, blobs: &BlobStore) -> Result<Inserted> {
        let mut tx = self.begin_write().await?;
        if let Some((key, fingerprint)) = &new.idempotency {
            // Writers are serialized, so this check cannot race with another insert of the key.
            let existing: Option<(i64, Option<String>)> = sqlx::query_as(
                "SELECT version, idempotency_fp FROM model_versions WHERE model = $1 AND idempotency_key = $2",
            )
            .bind(&new.model)
            .bind(key)
            .fetch_optional(&mut *tx.tx)
            .await?;
            if let Some((version, stored_fp)) = existing {
                drop(tx);
                if stored_fp.as_deref() != Some(fingerprint.as_str()) {
                    return Err(idempotency_conflict(key));
                }
                let record = self
                    .get_version(&new.model, &VersionRef::Number(version))
                    .await?;
                return Ok(Inserted::Replayed(record));
            }
        }

        // gc deletes a blob only inside a write transaction that found no version referencing
        // it. Checking here, under the same lock, orders this insert against any such delete:
        // either the blob is still there now and no gc can take it once this commits, or gc won
        // and nothing is recorded.
        match blobs.size_of(&new.sha256).await? {
            Some(size) if size == new.size => {}
            Some(size) => {
                return Err(Error::Internal(format!(
                    "blob sha256:{} holds {size} bytes, the upload had {}",
                    new.sha256, new.size
                )));
            }
            None => {
                return Err(Error::Unavailable(format!(
                    "blob sha256:{} was collected by a concurrent gc before its version was recorded",
                    new.sha256
                )));
            }
        }

        if let Some(view) = &new.metadata.feature_view {
            super::features::check_reference(&mut tx, view).await?;
        }

        let now = timestamp(tx.now);
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT latest_version FROM models WHERE name = $1")
                .bind(&new.model)
                .fetch_optional(&mut *tx.tx)
                .await?;
        let version = match latest {
            Some(latest) => latest + 1,
            None => {
                let seq = tx
                    .emit(EventData::ModelCreated(ModelCreated {
                        model: new.model.clone(),
                    }))
                    .await?;
                sqlx::query(
                    "INSERT INTO models (name, seq, latest_version, created_at, updated_at) VALUES ($1, $2, 0, $3, $3)",
                )
                .bind(&new.model)
                .bind(seq)
                .bind(&now)
                .execute(&mut *tx.tx)
                .await?;
                1
            }
        };
        sqlx::query("UPDATE models SET latest_version = $1, updated_at = $2 WHERE name = $3")
            .bind(version)
            .bind(&now)
            .bind(&new.model)
            .execute(&mut *tx.tx)
            .await?;
        let meta = &new.metadata;
        let size = i64::try_from(new.size)
            .map_err(|_| Error::BadRequest("the model is too large".into()))?;
        sqlx::query(
            "INSERT INTO model_versions (model, version, sha256, size, status, signature, lineage, params, \
             metrics, tags, description, profile, idempotency_key, idempotency_fp, created_at) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&new.model)
        .bind(version)
        .bind(&new.sha256)
        .bind(size)
        .bind(to_json(&new.signature)?)
        .bind(to_json(&meta.lineage())?)
        .bind(to_json(&meta.params)?)
        .bind(to_json(&meta.metrics)?)
        .bind(to_json(&meta.tags)?)
        .bind(meta.description.as_deref())
        .bind(meta.profile.as_ref().map(to_json).transpose()?)
        .bind(new.idempotency.as_ref().map(|(k, _)| k.as_str()))
        .bind(new.idempotency.as_ref().map(|(_, f)| f.as_str()))
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?;
        tx.emit(EventData::VersionCreated(VersionCreated {
            model: new.model.clone(),
            version,
            sha256: new.sha256.clone(),
            size,
        }))
        .await?;
        let created_at = tx.now;
        tx.commit(self).await?;
        Ok(Inserted::Created(VersionRecord {
            name: new.model,
            version,
            sha256: new.sha256,
            size,
            status: VersionStatus::Active,
            signature: new.signature,
            lineage: meta.lineage(),
            params: meta.params.clone(),
            metrics: meta.metrics.clone(),
            tags: meta.tags.clone(),
            description: meta.description.clone(),
            has_profile: meta.profile.is_some(),
            aliases: Vec::new(),
            created_at,
        }))
    }

    /// Looks up the version an idempotency key created, with its fingerprint.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn find_idempotent(
        &self,
        model: &str,
        key: &str,
    ) -> Result<Option<(i64, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT version, idempotency_fp FROM model_versions WHERE model = $1 AND idempotency_key = $2",
        )
        .bind(model)
        .bind(key)
        .fetch_optional(self.pool())
        .await?)
    }

    /// One model with its aliases and version count.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such model.
    pub async fn get_model(&self, name: &str) -> Result<ModelRecord> {
        let row = sqlx::query(
            "SELECT m.name, m.latest_version, m.created_at, m.updated_at, \
             (SELECT COUNT(*) FROM model_versions v WHERE v.model = m.name) AS version_count \
             FROM models m WHERE m.name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| model_not_found(name))?;
        let mut record = model_from_row(&row)?;
        record.aliases = self.aliases_of(name).await?;
        Ok(record)
    }

    /// Models, newest first. `page_token` is the `next_page_token` of the previous page.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed page token.
    pub async fn list_models(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<ModelRecord>> {
        let before = parse_page_token(page_token)?;
        let rows = sqlx::query(
            "SELECT m.name, m.seq, m.latest_version, m.created_at, m.updated_at, \
             (SELECT COUNT(*) FROM model_versions v WHERE v.model = m.name) AS version_count \
             FROM models m WHERE m.seq < $1 ORDER BY m.seq DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut next = None;
        for (i, row) in rows.iter().enumerate() {
            if i == limit as usize {
                break;
            }
            let mut record = model_from_row(row)?;
            record.aliases = self.aliases_of(&record.name).await?;
            if i + 1 == limit as usize && rows.len() > limit as usize {
                next = Some(row.try_get::<i64, _>("seq")?.to_string());
            }
            items.push(record);
        }
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// Resolves a version reference (number, alias or `latest`) to a version number.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming what could not be resolved.
    pub async fn resolve(&self, model: &str, version: &VersionRef) -> Result<i64> {
        match version {
            VersionRef::Number(n) => Ok(*n),
            VersionRef::Alias(alias) if alias == LATEST => {
                let latest: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(version) FROM model_versions WHERE model = $1 AND status = 'active'",
                )
                .bind(model)
                .fetch_one(self.pool())
                .await?;
                match latest {
                    Some(v) => Ok(v),
                    None => {
                        self.get_model(model).await?;
                        Err(Error::NotFound(format!(
                            "model `{model}` has no active version"
                        )))
                    }
                }
            }
            VersionRef::Alias(alias) => {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM aliases WHERE model = $1 AND alias = $2",
                )
                .bind(model)
                .bind(alias)
                .fetch_optional(self.pool())
                .await?;
                match v {
                    Some(v) => Ok(v),
                    None => {
                        self.get_model(model).await?;
                        Err(Error::NotFound(format!(
                            "model `{model}` has no alias `{alias}`"
                        )))
                    }
                }
            }
        }
    }

    /// One version, by number, alias or `latest`.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming the model, alias or version that does not exist.
    pub async fn get_version(&self, model: &str, version: &VersionRef) -> Result<VersionRecord> {
        let number = self.resolve(model, version).await?;
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 AND version = $2"
        ))
        .bind(model)
        .bind(number)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            self.get_model(model).await?;
            return Err(Error::NotFound(format!(
                "model `{model}` has no version {number}"
            )));
        };
        let mut record = version_from_row(&row)?;
        record.aliases = self
            .aliases_of(model)
            .await?
            .into_iter()
            .filter(|(_, v)| *v == number)
            .map(|(a, _)| a)
            .collect();
        Ok(record)
    }

    /// Versions of a model, newest first.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the model does not exist, [`Error::BadRequest`] for a bad token.
    pub async fn list_versions(
        &self,
        model: &str,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<VersionRecord>> {
        let before = parse_page_token(page_token)?;
        let aliases = self.get_model(model).await?.aliases;
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 AND version < $2 \
             ORDER BY version DESC LIMIT $3"
        ))
        .bind(model)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            let mut record = version_from_row(row)?;
            record.aliases = aliases
                .iter()
                .filter(|(_, v)| **v == record.version)
                .map(|(a, _)| a.clone())
                .collect();
            items.push(record);
        }
        let next_page_token = if more {
            items.last().map(|v| v.version.to_string())
        } else {
            None
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// The training profile attached to a version.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the version has none.
    pub async fn get_profile(
        &self,
        model: &str,
        version: &VersionRef,
    ) -> Result<serde_json::Value> {
        let number = self.resolve(model, version).await?;
        let profile: Option<Option<String>> = sqlx::query_scalar(
            "SELECT profile FROM model_versions WHERE model = $1 AND version = $2",
        )
        .bind(model)
        .bind(number)
        .fetch_optional(self.pool())
        .await?;
        match profile {
            Some(Some(text)) => parse_json("profile", &text),
            Some(None) => Err(Error::NotFound(format!(
                "version {number} of `{model}` has no training profile"
            ))),
            None => Err(Error::NotFound(format!(
                "model `{model}` has no version {number}"
            ))),
        }
    }

    /// Points `alias` at `version` (creating or moving it atomically).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a missing model or version, [`Error::Conflict`] when the version is
    /// archived.
    pub async fn set_alias(&self, model: &str, alias: &str, version: i64) -> Result<AliasRecord> {
        let mut tx = self.begin_write().await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM model_versions WHERE model = $1 AND version = $2",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(&mut *tx.tx)
        .await?;
        match status.as_deref().map(VersionStatus::from_db) {
            None => {
                drop(tx);
                self.get_model(model).await?;
                return Err(Error::NotFound(format!(
                    "model `{model}` has no version {version}"
                )));
            }
            Some(VersionStatus::Archived) => {
                return Err(Error::Conflict(format!(
                    "version {version} of `{model}` is archived; restore it before pointing an alias at it"
                )));
            }
            Some(VersionStatus::Active) => {}
        }
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
                .bind(model)
                .bind(alias)
                .fetch_optional(&mut *tx.tx)
                .await?;
        let record = AliasRecord {
            name: model.to_string(),
            alias: alias.to_string(),
            version,
            previous,
        };
        if previous == Some(version) {
            // Already there: no change, no event.
            return Ok(record);
        }
        let now = timestamp(tx.now);
        if previous.is_some() {
            sqlx::query(
                "UPDATE aliases SET version = $1, updated_at = $2 WHERE model = $3 AND alias = $4",
            )
            .bind(version)
            .bind(&now)
            .bind(model)
            .bind(alias)
            .execute(&mut *tx.tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO aliases (model, alias, version, updated_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(model)
            .bind(alias)
            .bind(version)
            .bind(&now)
            .execute(&mut *tx.tx)
            .await?;
        }
        sqlx::query("UPDATE models SET updated_at = $1 WHERE name = $2")
            .bind(&now)
            .bind(model)
            .execute(&mut *tx.tx)
            .await?;
        tx.emit(EventData::AliasSet(AliasSet {
            model: model.to_string(),
            alias: alias.to_string(),
            version,
            previous,
        }))
        .await?;
        tx.commit(self).await?;
        Ok(record)
    }

    /// Removes an alias.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the model or the alias does not exist.
    pub async fn delete_alias(&self, model: &str, alias: &str) -> Result<AliasRecord> {
        let mut tx = self.begin_write().await?;
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
                .bind(model)
                .bind(alias)
                .fetch_optional(&mut *tx.tx)
                .await?;
        let Some(previous) = previous else {
            drop(tx);
            self.get_model(model).await?;
            return Err(Error::NotFound(format!(
                "model `{model}` has no alias `{alias}`"
            )));
        };
        sqlx::query("DELETE FROM aliases WHERE model = $1 AND alias = $2")
            .bind(model)
            .bind(alias)
            .execute(&mut *tx.tx)
            .await?;
        let now = timestamp(tx.now);
        sqlx::query("UPDATE models SET updated_at = $1 WHERE name = $2")
            .bind(&now)
            .bind(model)
            .execute(&mut *tx.tx)
            .await?;
        tx.emit(EventData::AliasDeleted(AliasDeleted {
            model: model.to_string(),
            alias: alias.to_string(),
            version: previous,
        }))
        .await?;
        tx.commit(self).await?;
        Ok(AliasRecord {
            name: model.to_string(),
            alias: alias.to_string(),
            version: previous,
            previous: Some(previous),
        })
    }

    /// Archives or restores a version. A version an alias points at or an endpoint routes to
    /// cannot be archived.
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::Conflict`] naming the aliases that still point at it or
    /// the endpoints that still route to it.
    pub async fn set_status(
        &self,
        model: &str,
        version: i64,
        status: VersionStatus,
    ) -> Result<VersionRecord> {
        let mut tx = self.begin_write().await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT status FROM model_versions WHERE model = $1 AND version = $2",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(&mut *tx.tx)
        .await?;
        let Some(current) = current else {
            drop(tx);
            self.get_model(model).await?;
            return Err(Error::NotFound(format!(
                "model `{model}` has no version {version}"
            )));
        };
        if VersionStatus::from_db(&current) != status {
            if status == VersionStatus::Archived {
                let aliases: Vec<String> = sqlx::query_scalar(
                    "SELECT alias FROM aliases WHERE model = $1 AND version = $2 ORDER BY alias",
                )
                .bind(model)
                .bind(version)
                .fetch_all(&mut *tx.tx)
                .await?;
                if !aliases.is_empty() {
                    return Err(Error::Conflict(format!(
                        "version {version} of `{model}` cannot be archived while aliases point at it: {}",
                        aliases.join(", ")
                    )));
                }
                let endpoints: Vec<String> = sqlx::query_scalar(
                    "SELECT endpoint FROM endpoint_versions WHERE model = $1 AND version = $2 ORDER BY endpoint",
                )
                .bind(model)
                .bind(version)
                .fetch_all(&mut *tx.tx)
                .await?;
                if !endpoints.is_empty() {
                    return Err(Error::Conflict(format!(
                        "version {version} of `{model}` cannot be archived while endpoints route traffic to it: {}",
                        endpoints.join(", ")
                    )));
                }
            }
            sqlx::query("UPDATE model_versions SET status = $1 WHERE model = $2 AND version = $3")
                .bind(status.as_str())
                .bind(model)
                .bind(version)
                .execute(&mut *tx.tx)
                .await?;
            tx.emit(EventData::VersionUpdated(VersionUpdated {
                model: model.to_string(),
                version,
                status,
            }))
            .await?;
            tx.commit(self).await?;
        } else {
            drop(tx);
        }
        self.get_version(model, &VersionRef::Number(version)).await
    }

    /// Every distinct blob hash that some version references (for garbage collection).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn referenced_blobs(&self) -> Result<std::collections::HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT sha256 FROM model_versions")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn aliases_of(&self, model: &str) -> Result<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT alias, version FROM aliases WHERE model = $1")
                .bind(model)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().collect())
    }
}

fn model_from_row(row: &AnyRow) -> Result<ModelRecord> {
    Ok(ModelRecord {
        name: row.try_get("name")?,
        latest_version: row.try_get("latest_version")?,
        version_count: row.try_get("version_count")?,
        aliases: BTreeMap::new(),
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_timestamp(&row.try_get::<String, _>("updated_at")?)?,
    })
}

fn version_from_row(row: &AnyRow) -> Result<VersionRecord> {
    // `IS NOT NULL` comes back as a boolean on PostgreSQL and an integer on SQLite.
    let has_profile = row
        .try_get::<bool, _>("has_profile")
        .or_else(|_| row.try_get::<i64, _>("has_profile").map(|v| v != 0))?;
    Ok(VersionRecord {
        name: row.try_get("model")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        status: VersionStatus::from_db(&row.try_get::<String, _>("status")?),
        signature: parse_json("signature", &row.try_get::<String, _>("signature")?)?,
        lineage: parse_json("lineage", &row.try_get::<String, _>("lineage")?)?,
        params: parse_json("params", &row.try_get::<String, _>("params")?)?,
        metrics: parse_json("metrics", &row.try_get::<String, _>("metrics")?)?,
        tags: parse_json("tags", &row.try_get::<String, _>("tags")?)?,
        description: row.try_get("description")?,
        has_profile,
        aliases: Vec::new(),
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("serializing: {e}")))
}

fn model_not_found(name: &str) -> Error {
    Error::NotFound(format!("model `{name}` does not exist"))
}

/// The error for an `Idempotency-Key` reused with other content.
pub(crate) fn idempotency_conflict(key: &str) -> Error {
    Error::Conflict(format!(
        "Idempotency-Key {} was already used for a different upload (other bytes or metadata) of this model",
        ferry_api::names::printable(key)
    ))
}
