//! SQLite: the `Uploads` role of the store.

use async_trait::async_trait;
use chat_core::store::Uploads;

use super::*;
use chat_core::attachments::UploadStatus;

#[async_trait]
impl Uploads for SqliteStore {
    async fn create_upload(&self, u: &Upload) -> StoreResult<()> {
        let u = u.clone();
        self.execute(
            "INSERT INTO uploads (id, thread_id, user_id, content_type, size, status, \
             card, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            vec![
                u.id.into(),
                u.thread_id.into(),
                u.user_id.into(),
                u.content_type.into(),
                (u.size as i64).into(),
                u.status.as_str().to_owned().into(),
                u.card.into(),
                u.created_at.into(),
            ],
        )
        .await
        .map(drop)
        .map_err(|e| match rusqlite_code(&e) {
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => StoreError::Exists("upload"),
            _ => e,
        })
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
        self.execute(
            "UPDATE uploads SET status = ?2, card = ?3 WHERE id = ?1 AND status = 'pending'",
            vec![
                id.to_owned().into(),
                status.as_str().to_owned().into(),
                card.map(str::to_owned).into(),
            ],
        )
        .await
        .map(|n| n == 1)
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
