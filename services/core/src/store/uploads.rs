//! Image upload slots.

use async_trait::async_trait;

use super::*;

/// Image upload slots.
#[async_trait]
pub trait Uploads: Send + Sync {
    /// Records an upload slot.
    async fn create_upload(&self, upload: &Upload) -> StoreResult<()>;

    async fn upload(&self, id: &str) -> StoreResult<Option<Upload>>;

    /// Moves a `pending` upload to `status` (`used` with its image card,
    /// `rejected`, `expired`); false if it was not pending.
    async fn finish_upload(
        &self,
        id: &str,
        status: crate::attachments::UploadStatus,
        card: Option<&str>,
    ) -> StoreResult<bool>;

    /// Uploads still pending that were created before `before` (ms).
    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<Upload>>;
}
