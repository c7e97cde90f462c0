//! SQLite: the `Safety` role of the store.

use async_trait::async_trait;
use chat_core::store::Safety;

use super::*;

#[async_trait]
impl Safety for SqliteStore {
    async fn record_moderation(&self, r: &ModerationRecord) -> StoreResult<()> {
        let r = r.clone();
        let categories = serde_json::to_string(&r.categories).map_err(backend)?;
        let keywords = serde_json::to_string(&r.keywords).map_err(backend)?;
        self.execute(
            format!(
                "INSERT INTO moderation_records ({MODERATION_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT (id) DO NOTHING"
            ),
            vec![
                r.id.into(),
                r.thread_id.into(),
                r.user_id.into(),
                r.message_id.into(),
                r.kind.as_str().to_owned().into(),
                categories.into(),
                r.original.into(),
                keywords.into(),
                r.reported_by.into(),
                r.needs_review.into(),
                r.resolution.into(),
                r.resolved_by.into(),
                r.resolved_at.into(),
                r.created_at.into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn moderation_record(&self, id: &str) -> StoreResult<Option<ModerationRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {MODERATION_COLUMNS} FROM moderation_records WHERE id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id], moderation_from_row).optional())
            .map_err(backend)
        })
        .await
    }

    async fn moderation_queue(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ModerationRecord>> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {MODERATION_COLUMNS} FROM moderation_records \
                 WHERE needs_review = 1 AND resolution IS NULL AND id > ?1 ORDER BY id LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![after, limit as i64], moderation_from_row)?
                    .collect()
            })
            .map_err(backend)
        })
        .await
    }

    async fn resolve_moderation(
        &self,
        id: &str,
        resolution: &str,
        by: &str,
        at: i64,
    ) -> StoreResult<bool> {
        self.execute(
            "UPDATE moderation_records SET resolution = ?2, resolved_by = ?3, resolved_at = ?4 \
             WHERE id = ?1 AND needs_review = 1 AND resolution IS NULL",
            vec![
                id.to_owned().into(),
                resolution.to_owned().into(),
                by.to_owned().into(),
                at.into(),
            ],
        )
        .await
        .map(|changed| changed == 1)
    }

    async fn keywords(&self) -> StoreResult<Vec<(KeywordList, String)>> {
        let rows: Vec<(String, String)> = self
            .read(|c| {
                c.prepare_cached(
                    "SELECT list, keyword FROM moderation_keywords ORDER BY list, keyword",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect()
                })
                .map_err(backend)
            })
            .await?;
        // A list this version does not know (written by a newer one) is
        // left out rather than read as another.
        Ok(rows
            .into_iter()
            .filter_map(|(list, k)| Some((KeywordList::parse(&list)?, k)))
            .collect())
    }

    async fn set_keyword(
        &self,
        list: KeywordList,
        keyword: &str,
        present: bool,
    ) -> StoreResult<()> {
        let sql = if present {
            "INSERT INTO moderation_keywords (list, keyword) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM moderation_keywords WHERE list = ?1 AND keyword = ?2"
        };
        self.execute(
            sql,
            vec![list.as_str().to_owned().into(), keyword.to_owned().into()],
        )
        .await
        .map(drop)
    }

    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()> {
        let sql = if on {
            "INSERT INTO blocks (blocker, blocked) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2"
        };
        self.execute(
            sql,
            vec![blocker.to_owned().into(), blocked.to_owned().into()],
        )
        .await
        .map(drop)
    }

    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>> {
        let (a, b) = (a.to_owned(), b.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT blocker FROM blocks WHERE (blocker = ?1 AND blocked = ?2) \
                 OR (blocker = ?2 AND blocked = ?1) ORDER BY blocker",
            )
            .and_then(|mut stmt| stmt.query_map(params![a, b], |r| r.get(0))?.collect())
            .map_err(backend)
        })
        .await
    }

    async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let e = e.clone();
        self.execute(
            "INSERT INTO audit_log (id, at, actor, action, target, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
            vec![
                e.id.into(),
                e.at.into(),
                e.actor.into(),
                e.action.into(),
                e.target.into(),
                e.detail.into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn audit_log(
        &self,
        actor: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let actor = actor.map(str::to_owned);
        // Ids are UUIDv7 text: "~" sorts after every one of them.
        let before = before.unwrap_or("~").to_owned();
        self.read(move |c| {
            let row = |r: &Row<'_>| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            };
            let columns = "id, at, actor, action, target, detail";
            match &actor {
                Some(actor) => c
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM audit_log WHERE actor = ?1 AND id < ?2 \
                         ORDER BY id DESC LIMIT ?3"
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_map(params![actor, before, limit as i64], row)?
                            .collect()
                    }),
                None => c
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM audit_log WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_map(params![before, limit as i64], row)?
                            .collect()
                    }),
            }
            .map_err(backend)
        })
        .await
    }
}
