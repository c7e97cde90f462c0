//! ScyllaDB: the `Uploads` role of the store, with its prepared statements
//! beside the queries that bind them, so a CQL text and its values change
//! together.

use async_trait::async_trait;
use chat_core::store::Uploads;

use super::*;
use chat_core::attachments::UploadStatus;

const UPLOAD_COLUMNS: &str = "id, thread_id, user_id, content_type, size, status, card, created_at";

type UploadColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn upload_from_columns(c: UploadColumns) -> Upload {
    Upload {
        id: c.0,
        thread_id: c.1.unwrap_or_default(),
        user_id: c.2.unwrap_or_default(),
        content_type: c.3.unwrap_or_default(),
        size: c.4.unwrap_or_default().max(0) as u64,
        status: chat_core::attachments::UploadStatus::from_stored(c.5.as_deref().unwrap_or("")),
        card: c.6,
        created_at: c.7.unwrap_or_default(),
    }
}

/// Prepared once when the store opens.
pub(super) struct Statements {
    create_upload: PreparedStatement,
    upload_pending: PreparedStatement,
    get_upload: PreparedStatement,
    finish_upload: PreparedStatement,
    upload_done: PreparedStatement,
    pending_of_day: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(prepare: &Prepare<'_>) -> StoreResult<Statements> {
        let ks = prepare.keyspace;
        Ok(Statements {
            create_upload: prepare.cql(format!("INSERT INTO {ks}.uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), true).await?,
            upload_pending: prepare.cql(format!("INSERT INTO {ks}.uploads_pending (day, id) VALUES (?, ?)"), true).await?,
            get_upload: prepare.cql(format!("SELECT {UPLOAD_COLUMNS} FROM {ks}.uploads WHERE id = ?"), true).await?,
            finish_upload: prepare.cql(format!("UPDATE {ks}.uploads SET status = ?, card = ? WHERE id = ? IF status = 'pending'"), false).await?,
            upload_done: prepare.cql(format!("DELETE FROM {ks}.uploads_pending WHERE day = ? AND id = ?"), true).await?,
            pending_of_day: prepare.cql(format!("SELECT id FROM {ks}.uploads_pending WHERE day = ? LIMIT ?"), true).await?,
        })
    }
}

#[async_trait]
impl Uploads for ScyllaStore {
    async fn create_upload(&self, u: &Upload) -> StoreResult<()> {
        let s = &self.statements.uploads;
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
        let row: Option<UploadColumns> = self
            .first(&self.statements.uploads.get_upload, (id,))
            .await?;
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
            .claim(
                &self.statements.uploads.finish_upload,
                (status.as_str(), card, id),
            )
            .await?;
        if applied {
            self.exec(
                &self.statements.uploads.upload_done,
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
                .rows(
                    &self.statements.uploads.pending_of_day,
                    (&day, limit as i32),
                )
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
