//! ScyllaDB: the `Safety` role of the store.

use async_trait::async_trait;
use chat_core::store::Safety;

use super::*;

#[async_trait]
impl Safety for ScyllaStore {
    async fn record_moderation(&self, r: &ModerationRecord) -> StoreResult<()> {
        let s = &self.statements;
        self.exec(
            &s.record_moderation,
            (
                &r.id,
                &r.thread_id,
                &r.user_id,
                &r.message_id,
                r.kind.as_str(),
                &r.categories,
                &r.original,
                &r.keywords,
                &r.reported_by,
                r.needs_review,
                &r.resolution,
                &r.resolved_by,
                r.resolved_at,
                r.created_at,
            ),
        )
        .await?;
        if r.needs_review && r.resolution.is_none() {
            self.exec(&s.wait_for_review, (month_bucket(r.created_at), &r.id))
                .await?;
        }
        Ok(())
    }

    async fn moderation_record(&self, id: &str) -> StoreResult<Option<ModerationRecord>> {
        let row: Option<ModerationColumns> = self
            .first(&self.statements.moderation_record, (id,))
            .await?;
        Ok(row.map(moderation_from_columns))
    }

    async fn moderation_queue(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ModerationRecord>> {
        // Months from the cursor's (or a year back) to now, oldest first.
        let now = self.clock.now_millis();
        let from = after
            .and_then(millis_of_id)
            .unwrap_or(now - QUEUE_LOOKBACK_MS);
        let mut out = Vec::new();
        for bucket in month_buckets(from, now) {
            if out.len() >= limit {
                break;
            }
            let ids: Vec<(String,)> = self
                .rows(
                    &self.statements.moderation_waiting,
                    (&bucket, after.unwrap_or(""), (limit - out.len()) as i32),
                )
                .await?;
            for (id,) in ids {
                if let Some(record) = self.moderation_record(&id).await?
                    && record.resolution.is_none()
                {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    async fn resolve_moderation(
        &self,
        id: &str,
        resolution: &str,
        by: &str,
        at: i64,
    ) -> StoreResult<bool> {
        let Some(record) = self.moderation_record(id).await? else {
            return Ok(false);
        };
        let applied = self
            .claim(
                &self.statements.resolve_moderation,
                (resolution, by, at, id),
            )
            .await?;
        if applied {
            self.exec(
                &self.statements.stop_waiting,
                (month_bucket(record.created_at), id),
            )
            .await?;
        }
        Ok(applied)
    }

    async fn keywords(&self) -> StoreResult<Vec<(KeywordList, String)>> {
        let mut out = Vec::new();
        for list in KeywordList::ALL {
            let rows: Vec<(String,)> = self
                .rows(&self.statements.keywords_of, (list.as_str(),))
                .await?;
            out.extend(rows.into_iter().map(|(k,)| (list, k)));
        }
        Ok(out)
    }

    async fn set_keyword(
        &self,
        list: KeywordList,
        keyword: &str,
        present: bool,
    ) -> StoreResult<()> {
        let s = &self.statements;
        let statement = if present {
            &s.add_keyword
        } else {
            &s.remove_keyword
        };
        self.exec(statement, (list.as_str(), keyword)).await?;
        Ok(())
    }

    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()> {
        let s = &self.statements;
        let statement = if on { &s.add_block } else { &s.remove_block };
        self.exec(statement, (blocker, blocked)).await?;
        Ok(())
    }

    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for (blocker, blocked) in [(a, b), (b, a)] {
            let row: Option<(String,)> = self
                .first(&self.statements.get_block, (blocker, blocked))
                .await?;
            if let Some((who,)) = row {
                out.push(who);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let s = &self.statements;
        let day = day_bucket(e.at);
        self.exec(
            &s.audit_day,
            (&day, &e.id, e.at, &e.actor, &e.action, &e.target, &e.detail),
        )
        .await?;
        self.exec(
            &s.audit_actor,
            (&e.actor, &e.id, e.at, &e.action, &e.target, &e.detail),
        )
        .await?;
        Ok(())
    }

    async fn audit_log(
        &self,
        actor: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        type Columns = (
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let entry = |(id, at, actor, action, target, detail): Columns| AuditEntry {
            id,
            at: at.unwrap_or_default(),
            actor: actor.unwrap_or_default(),
            action: action.unwrap_or_default(),
            target: target.unwrap_or_default(),
            detail: detail.unwrap_or_default(),
        };
        let before_id = before.unwrap_or("~");
        if let Some(actor) = actor {
            type ActorColumns = (
                String,
                Option<i64>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let rows: Vec<ActorColumns> = self
                .rows(
                    &self.statements.audit_of_actor,
                    (actor, before_id, limit as i32),
                )
                .await?;
            return Ok(rows
                .into_iter()
                .map(|(id, at, action, target, detail)| {
                    entry((id, at, Some(actor.to_owned()), action, target, detail))
                })
                .collect());
        }
        // Day by day, newest first, from the cursor's day (or today).
        let start = before
            .and_then(millis_of_id)
            .unwrap_or_else(|| self.clock.now_millis());
        let mut out = Vec::new();
        for back in 0..AUDIT_LOOKBACK_DAYS {
            if out.len() >= limit {
                break;
            }
            let day = day_bucket(start - back * DAY_MS);
            let rows: Vec<Columns> = self
                .rows(
                    &self.statements.audit_of_day,
                    (&day, before_id, (limit - out.len()) as i32),
                )
                .await?;
            out.extend(rows.into_iter().map(entry));
        }
        Ok(out)
    }
}
