//! The demo model `ferry up` puts into an empty registry, so the first `curl` has something to
//! answer.

use anyhow::{Context, Result};
use bytes::Bytes;
use ferry_api::lineage::VersionMetadata;
use ferry_registry::AppState;
use ferry_registry::store::Inserted;
use ferry_registry::upload::UploadSession;

/// Name of the demo model.
pub const NAME: &str = "demo";

/// Pushes `model` as `demo` version 1 with alias `production`, unless the registry already
/// holds any model. Idempotent: a crash halfway is finished by the next start.
///
/// # Errors
/// Storage failures.
pub async fn seed(state: &AppState, model: &'static [u8]) -> Result<()> {
    let existing = state
        .store
        .list_models(1, None)
        .await
        .context("listing models")?;
    if existing.items.iter().any(|m| m.name != NAME) {
        return Ok(());
    }
    let mut session = UploadSession::new(
        state.store.clone(),
        state.blobs.clone(),
        state.config.upload.clone(),
        NAME.to_string(),
        Some("ferry-up-demo".to_string()),
    )?;
    let metadata = VersionMetadata {
        description: Some(
            "Demo MLP classifier pushed by `ferry up`: 32 FP32 features in, 2 class probabilities out"
                .into(),
        ),
        tags: [("source".to_string(), "ferry up".to_string())].into(),
        ..VersionMetadata::default()
    };
    session.set_metadata(serde_json::to_vec(&metadata)?).await?;
    let chunks = futures::stream::iter([Ok::<_, ferry_registry::Error>(Bytes::from_static(model))]);
    session.receive_model(chunks).await?;
    let record = match session.finish().await? {
        Inserted::Created(r) | Inserted::Replayed(r) => r,
    };
    if record.aliases.is_empty() {
        state
            .store
            .set_alias(NAME, "production", record.version)
            .await?;
        tracing::info!(
            model = NAME,
            version = record.version,
            "pushed the demo model (alias production); `ferry up --no-demo` skips this"
        );
    }
    Ok(())
}
