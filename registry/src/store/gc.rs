//! Garbage collection's one write: deleting a blob only while no version references it, under
//! the write lock (`crate::gc` plans and sweeps around it).

use crate::blob_store::BlobStore;
use crate::error::Result;
use crate::store::MetadataStore;

impl MetadataStore {
    /// Deletes the blob `sha256` unless a version references it, inside a write transaction so
    /// that no version referencing it can commit meanwhile. Returns whether it was deleted.
    ///
    /// # Errors
    /// [`Error::Database`], [`Error::ObjectStore`] when the delete fails.
    pub async fn delete_blob_if_unreferenced(
        &self,
        blobs: &BlobStore,
        sha256: &str,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let references: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM model_versions WHERE sha256 = $1")
                .bind(sha256)
                .fetch_one(&mut *tx.tx)
                .await?;
        let deleted = if references == 0 {
            // Held under the lock: an upload of the same bytes waits here, then finds the blob
            // gone and fails instead of recording a version without bytes.
            blobs.delete(&blobs.blob_path(sha256)).await?;
            true
        } else {
            false
        };
        // Nothing was written; committing only releases the lock.
        tx.commit(self).await?;
        Ok(deleted)
    }
}
