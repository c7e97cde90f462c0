//! ScyllaDB: the `Uploads` role of the store.

use async_trait::async_trait;
use chat_core::store::Uploads;

use super::*;
use chat_core::attachments::UploadStatus;

#[async_trait]
impl Uploads for ScyllaStore {
    async fn create_upload(&self, u: &Upload) -> StoreResult<()> {
        let s = &self.statements;
        self.exec(
            &s.create_upload,
            (
                &u.id,
                &u.thread_id,
                &u.user_id,
                &u.content_type,
                u.size as i64,
                u.status.as_str(),
                &u.card,
                u.created_at,
            ),
        )
        .await?;
        if u.status == UploadStatus::Pending {
            self.exec(&s.upload_pending, (day_bucket(u.created_at), &u.id))
                .await?;
        }
        Ok(())
    }

    async fn upload(&self, id: &str) -> StoreResult<Option<Upload>> {
        let row: Option<UploadColumns> = self.first(&self.statements.get_upload, (id,)).await?;
        Ok(row.map(upload_from_columns))
    }

    async fn finish_upload(
        &self,
        id: &str,
        status: UploadStatus,
        card: Option<&str>,
    ) -> StoreResult<bool> {
        let Some(upload) = self.upload(id).await? else {
            return Ok(false);
        };
        let applied = self
            .claim(&self.statements.finish_upload, (status.as_str(), card, id))
            .await?;
        if applied {
            self.exec(
                &self.statements.upload_done,
                (day_bucket(upload.created_at), id),
            )
            .await?;
        }
        Ok(applied)
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<Upload>> {
        // The pending lists of the last weeks, oldest first.
        let mut out = Vec::new();
        for back in (0..UPLOAD_LOOKBACK_DAYS).rev() {
            if out.len() >= limit {
                break;
            }
            let day = day_bucket(before - back * DAY_MS);
            let ids: Vec<(String,)> = self
                .rows(&self.statements.pending_of_day, (&day, limit as i32))
                .await?;
            for (id,) in ids {
                if let Some(upload) = self.upload(&id).await?
                    && upload.status == UploadStatus::Pending
                    && upload.created_at < before
                    && out.len() < limit
                {
                    out.push(upload);
                }
            }
        }
        Ok(out)
    }
}
