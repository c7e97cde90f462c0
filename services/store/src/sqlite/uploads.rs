//! SQLite: the `Uploads` role of the store.

use async_trait::async_trait;
use chat_core::store::Uploads;

use super::*;
use chat_core::attachments::UploadStatus;

#[async_trait]
impl Uploads for SqliteStore {
    async fn create_upload(&self, u: &Upload) -> StoreResult<()> {
        let u = u.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO uploads (id, thread_id, user_id, content_type, size, status, \
                 card, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    u.id,
                    u.thread_id,
                    u.user_id,
                    u.content_type,
                    u.size as i64,
                    u.status.as_str(),
                    u.card,
                    u.created_at
                ])
            })
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn upload(&self, id: &str) -> StoreResult<Option<Upload>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id], upload_from_row).optional())
            .map_err(backend)
        })
        .await
    }

    async fn finish_upload(
        &self,
        id: &str,
        status: UploadStatus,
        card: Option<&str>,
    ) -> StoreResult<bool> {
        let (id, status, card) = (id.to_owned(), status.as_str(), card.map(str::to_owned));
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE uploads SET status = ?2, card = ?3 WHERE id = ?1 AND status = 'pending'",
            )
            .and_then(|mut stmt| stmt.execute(params![id, status, card]))
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<Upload>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE status = 'pending' AND created_at < ?1 \
                 ORDER BY created_at LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![before, limit as i64], upload_from_row)?
                    .collect()
            })
            .map_err(backend)
        })
        .await
    }
}
