//! Endpoints: each write checks its preconditions and the versions it routes to, bumps the
//! revision, records which versions it references and emits its event, in one transaction.

use super::page::parse_page_token;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{MetadataStore, WriteTx, parse_json, parse_timestamp, timestamp};
use crate::endpoints::Preconditions;
use crate::error::{Error, Result};
use ferry_api::events::{EndpointDeleted, EndpointUpdated, EventData, RolloutStepped};
use ferry_api::names;
use ferry_api::records::{EndpointPolicy, EndpointRecord, Event, Page, RolloutStep, VersionStatus};
use ferry_api::rollout::validate_rollout_step;
use ferry_api::traffic::{referenced_versions, validate_policy};

/// What a `PUT` of an endpoint did.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointWrite {
    /// The endpoint did not exist; it is now at revision 1.
    Created(EndpointRecord),
    /// The policy changed; the revision was bumped.
    Updated(EndpointRecord),
    /// The policy was already exactly this one: no new revision, no event (a reconciler that
    /// re-applies its desired state does not make serving reload).
    Unchanged(EndpointRecord),
}

impl EndpointWrite {
    /// The endpoint as it now is.
    pub fn record(&self) -> &EndpointRecord {
        match self {
            EndpointWrite::Created(r) | EndpointWrite::Updated(r) | EndpointWrite::Unchanged(r) => {
                r
            }
        }
    }

    /// The endpoint as it now is, by value.
    pub fn into_record(self) -> EndpointRecord {
        match self {
            EndpointWrite::Created(r) | EndpointWrite::Updated(r) | EndpointWrite::Unchanged(r) => {
                r
            }
        }
    }
}

const ENDPOINT_COLUMNS: &str = "name, seq, revision, policy, created_at, updated_at";

impl MetadataStore {
    /// Creates or replaces the policy of endpoint `name`, if `preconditions` hold.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name or policy, [`Error::PreconditionFailed`] when
    /// `If-Match` / `If-None-Match` do not hold, [`Error::NotFound`] naming a missing model or
    /// version, [`Error::Conflict`] naming an archived version.
    pub async fn put_endpoint(
        &self,
        name: &str,
        policy: EndpointPolicy,
        preconditions: &Preconditions,
    ) -> Result<EndpointWrite> {
        names::validate("endpoint", name)?;
        let policy = validate_policy(policy)?;
        let policy_json = to_json(&policy)?;
        let mut tx = self.begin_write().await?;
        let current = read_endpoint(&mut tx, name).await?;
        preconditions.check(name, current.as_ref().map(|c| c.revision))?;
        check_versions(&mut tx, &policy).await?;
        if let Some(current) = &current
            && current.policy == policy
        {
            return Ok(EndpointWrite::Unchanged(current.clone()));
        }

        let now = timestamp(tx.now);
        let revision = current.as_ref().map_or(1, |c| c.revision + 1);
        let created = current.is_none();
        let event_id = tx
            .emit(EventData::EndpointUpdated(Box::new(EndpointUpdated {
                endpoint: name.to_string(),
                revision,
                policy: policy.clone(),
                created,
            })))
            .await?;
        if created {
            sqlx::query(
                "INSERT INTO endpoints (name, seq, model, revision, policy, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(name)
            .bind(event_id)
            .bind(&policy.model)
            .bind(revision)
            .bind(&policy_json)
            .bind(&now)
            .execute(&mut *tx.tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE endpoints SET model = $1, revision = $2, policy = $3, updated_at = $4 WHERE name = $5",
            )
            .bind(&policy.model)
            .bind(revision)
            .bind(&policy_json)
            .bind(&now)
            .bind(name)
            .execute(&mut *tx.tx)
            .await?;
        }
        sqlx::query("DELETE FROM endpoint_versions WHERE endpoint = $1")
            .bind(name)
            .execute(&mut *tx.tx)
            .await?;
        for used in referenced_versions(&policy) {
            sqlx::query(
                "INSERT INTO endpoint_versions (endpoint, model, version, role) VALUES ($1, $2, $3, $4)",
            )
            .bind(name)
            .bind(&policy.model)
            .bind(used.version)
            .bind(used.role.as_str())
            .execute(&mut *tx.tx)
            .await?;
        }
        // Read back at the stored precision, so this answer equals what a GET returns.
        let updated_at = parse_timestamp(&now)?;
        tx.commit(self).await?;
        let record = EndpointRecord {
            name: name.to_string(),
            revision,
            created_at: current.as_ref().map_or(updated_at, |c| c.created_at),
            updated_at,
            policy,
            conditions: Vec::new(),
        };
        Ok(if created {
            EndpointWrite::Created(record)
        } else {
            EndpointWrite::Updated(record)
        })
    }

    /// One endpoint.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name, [`Error::NotFound`] when it does not exist.
    pub async fn get_endpoint(&self, name: &str) -> Result<EndpointRecord> {
        names::validate("endpoint", name)?;
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| endpoint_not_found(name))?;
        endpoint_from_row(&row)
    }

    /// Endpoints, newest first. `page_token` is the `next_page_token` of the previous page.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a malformed page token.
    pub async fn list_endpoints(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<EndpointRecord>> {
        let before = parse_page_token(page_token)?;
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(limit as usize) {
            items.push(endpoint_from_row(row)?);
            last_seq = Some(row.try_get::<i64, _>("seq")?);
        }
        Ok(Page {
            items,
            next_page_token: if more {
                last_seq.map(|s| s.to_string())
            } else {
                None
            },
        })
    }

    /// Deletes an endpoint, with its reports, if `preconditions` hold; returns it as it was.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name, [`Error::PreconditionFailed`] when `If-Match`
    /// does not hold, [`Error::NotFound`] when it does not exist.
    pub async fn delete_endpoint(
        &self,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<EndpointRecord> {
        names::validate("endpoint", name)?;
        let mut tx = self.begin_write().await?;
        let current = read_endpoint(&mut tx, name).await?;
        preconditions.check(name, current.as_ref().map(|c| c.revision))?;
        let Some(current) = current else {
            return Err(endpoint_not_found(name));
        };
        // A later endpoint of the same name starts from nothing, not from these numbers.
        for table in ["endpoint_versions", "endpoint_reports", "endpoint_replicas"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE endpoint = $1"))
                .bind(name)
                .execute(&mut *tx.tx)
                .await?;
        }
        sqlx::query("DELETE FROM endpoints WHERE name = $1")
            .bind(name)
            .execute(&mut *tx.tx)
            .await?;
        tx.emit(EventData::EndpointDeleted(EndpointDeleted {
            endpoint: name.to_string(),
            revision: current.revision,
        }))
        .await?;
        tx.commit(self).await?;
        Ok(current)
    }
}

impl MetadataStore {
    /// Records a step of a rollout on endpoint `name` as a `rollout.step` event, with the
    /// endpoint's model and current revision, and returns the event. It goes through the same
    /// outbox as every change, so consumers see it in order with the policy writes it explains.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an invalid name or step, [`Error::NotFound`] when the endpoint
    /// does not exist.
    pub async fn record_rollout_step(&self, name: &str, step: RolloutStep) -> Result<Event> {
        names::validate("endpoint", name)?;
        validate_rollout_step(&step)?;
        let mut tx = self.begin_write().await?;
        let current = read_endpoint(&mut tx, name)
            .await?
            .ok_or_else(|| endpoint_not_found(name))?;
        tx.emit(EventData::RolloutStep(Box::new(RolloutStepped {
            endpoint: name.to_string(),
            model: current.policy.model.clone(),
            revision: current.revision,
            reason: step.reason,
            message: step.message,
            phase: step.phase,
            stable: step.stable,
            candidate: step.candidate,
            step: step.step,
            weight: step.weight,
            source: step.source,
            analysis: step.analysis,
        })))
        .await?;
        let mut event =
            tx.commit(self).await?.pop().ok_or_else(|| {
                Error::Internal("the rollout step's event was not recorded".into())
            })?;
        // At the stored precision, so this answer equals what the event log returns.
        event.created_at = parse_timestamp(&timestamp(event.created_at))?;
        Ok(event)
    }
}

/// The endpoint as the transaction sees it.
async fn read_endpoint(tx: &mut WriteTx, name: &str) -> Result<Option<EndpointRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut *tx.tx)
    .await?;
    row.as_ref().map(endpoint_from_row).transpose()
}

/// The model and every version the policy routes to exist and are active. Run inside the write
/// transaction: writers are serialized, so nothing can archive a version between this check and
/// the commit.
async fn check_versions(tx: &mut WriteTx, policy: &EndpointPolicy) -> Result<()> {
    let model: Option<String> = sqlx::query_scalar("SELECT name FROM models WHERE name = $1")
        .bind(&policy.model)
        .fetch_optional(&mut *tx.tx)
        .await?;
    if model.is_none() {
        return Err(Error::NotFound(format!(
            "model: model `{}` does not exist",
            policy.model
        )));
    }
    for used in referenced_versions(policy) {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM model_versions WHERE model = $1 AND version = $2",
        )
        .bind(&policy.model)
        .bind(used.version)
        .fetch_optional(&mut *tx.tx)
        .await?;
        match status.as_deref().map(VersionStatus::from_db) {
            None => {
                return Err(Error::NotFound(format!(
                    "{}: model `{}` has no version {}",
                    used.field, policy.model, used.version
                )));
            }
            Some(VersionStatus::Archived) => {
                return Err(Error::Conflict(format!(
                    "{}: version {} of `{}` is archived; restore it before routing traffic to it",
                    used.field, used.version, policy.model
                )));
            }
            Some(VersionStatus::Active) => {}
        }
    }
    Ok(())
}

fn endpoint_from_row(row: &AnyRow) -> Result<EndpointRecord> {
    Ok(EndpointRecord {
        name: row.try_get("name")?,
        revision: row.try_get("revision")?,
        policy: parse_json("endpoint policy", &row.try_get::<String, _>("policy")?)?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_timestamp(&row.try_get::<String, _>("updated_at")?)?,
        conditions: Vec::new(),
    })
}

fn endpoint_not_found(name: &str) -> Error {
    Error::NotFound(format!("endpoint `{name}` does not exist"))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("serializing: {e}")))
}
