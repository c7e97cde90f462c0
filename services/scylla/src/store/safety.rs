//! ScyllaDB: the `Safety` role of the store, with its prepared statements
//! beside the queries that bind them, so a CQL text and its values change
//! together.

use async_trait::async_trait;
use chat_core::store::Safety;

use super::*;

const MODERATION_COLUMNS: &str = "id, thread_id, user_id, message_id, kind, categories, original, keywords, reported_by, needs_review, resolution, resolved_by, resolved_at, created_at";

type ModerationColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn moderation_from_columns(c: ModerationColumns) -> ModerationRecord {
    ModerationRecord {
        id: c.0,
        thread_id: c.1.unwrap_or_default(),
        user_id: c.2.unwrap_or_default(),
        message_id: c.3,
        kind: chat_core::model::ModerationKind::from_stored(c.4.as_deref().unwrap_or("")),
        categories: c.5.unwrap_or_default(),
        original: c.6.unwrap_or_default(),
        keywords: c.7.unwrap_or_default(),
        reported_by: c.8,
        needs_review: c.9.unwrap_or(false),
        resolution: c.10,
        resolved_by: c.11,
        resolved_at: c.12,
        created_at: c.13.unwrap_or_default(),
    }
}

/// Prepared once when the store opens.
pub(super) struct Statements {
    add_block: PreparedStatement,
    remove_block: PreparedStatement,
    get_block: PreparedStatement,
    audit_day: PreparedStatement,
    audit_actor: PreparedStatement,
    audit_of_day: PreparedStatement,
    audit_of_actor: PreparedStatement,
    record_moderation: PreparedStatement,
    wait_for_review: PreparedStatement,
    moderation_record: PreparedStatement,
    moderation_waiting: PreparedStatement,
    resolve_moderation: PreparedStatement,
    stop_waiting: PreparedStatement,
    keywords_of: PreparedStatement,
    add_keyword: PreparedStatement,
    remove_keyword: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(prepare: &Prepare<'_>) -> StoreResult<Statements> {
        let ks = prepare.keyspace;
        Ok(Statements {
            add_block: prepare.cql(format!("INSERT INTO {ks}.blocks (blocker, blocked) VALUES (?, ?)"), true).await?,
            remove_block: prepare.cql(format!("DELETE FROM {ks}.blocks WHERE blocker = ? AND blocked = ?"), true).await?,
            get_block: prepare.cql(format!("SELECT blocker FROM {ks}.blocks WHERE blocker = ? AND blocked = ?"), true).await?,
            audit_day: prepare.cql(format!("INSERT INTO {ks}.audit_by_day (day, id, at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"), true).await?,
            audit_actor: prepare.cql(format!("INSERT INTO {ks}.audit_by_actor (actor, id, at, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            audit_of_day: prepare.cql(format!("SELECT id, at, actor, action, target, detail FROM {ks}.audit_by_day WHERE day = ? AND id < ? LIMIT ?"), true).await?,
            audit_of_actor: prepare.cql(format!("SELECT id, at, action, target, detail FROM {ks}.audit_by_actor WHERE actor = ? AND id < ? LIMIT ?"), true).await?,
            record_moderation: prepare.cql(format!("INSERT INTO {ks}.moderation_records ({MODERATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), true).await?,
            wait_for_review: prepare.cql(format!("INSERT INTO {ks}.moderation_waiting (bucket, id) VALUES (?, ?)"), true).await?,
            moderation_record: prepare.cql(format!("SELECT {MODERATION_COLUMNS} FROM {ks}.moderation_records WHERE id = ?"), true).await?,
            moderation_waiting: prepare.cql(format!("SELECT id FROM {ks}.moderation_waiting WHERE bucket = ? AND id > ? LIMIT ?"), true).await?,
            resolve_moderation: prepare.cql(format!("UPDATE {ks}.moderation_records SET resolution = ?, resolved_by = ?, resolved_at = ? WHERE id = ? IF resolution = null AND needs_review = true"), false).await?,
            stop_waiting: prepare.cql(format!("DELETE FROM {ks}.moderation_waiting WHERE bucket = ? AND id = ?"), true).await?,
            keywords_of: prepare.cql(format!("SELECT keyword FROM {ks}.moderation_keywords WHERE list = ?"), true).await?,
            add_keyword: prepare.cql(format!("INSERT INTO {ks}.moderation_keywords (list, keyword) VALUES (?, ?)"), true).await?,
            remove_keyword: prepare.cql(format!("DELETE FROM {ks}.moderation_keywords WHERE list = ? AND keyword = ?"), true).await?,
        })
    }
}

#[async_trait]
impl Safety for ScyllaStore {
    async fn record_moderation(&self, r: &ModerationRecord) -> StoreResult<()> {
        let s = &self.statements.safety;
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
            .first(&self.statements.safety.moderation_record, (id,))
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
                    &self.statements.safety.moderation_waiting,
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
                &self.statements.safety.resolve_moderation,
                (resolution, by, at, id),
            )
            .await?;
        if applied {
            self.exec(
                &self.statements.safety.stop_waiting,
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
                .rows(&self.statements.safety.keywords_of, (list.as_str(),))
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
        let s = &self.statements.safety;
        let statement = if present {
            &s.add_keyword
        } else {
            &s.remove_keyword
        };
        self.exec(statement, (list.as_str(), keyword)).await?;
        Ok(())
    }

    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()> {
        let s = &self.statements.safety;
        let statement = if on { &s.add_block } else { &s.remove_block };
        self.exec(statement, (blocker, blocked)).await?;
        Ok(())
    }

    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for (blocker, blocked) in [(a, b), (b, a)] {
            let row: Option<(String,)> = self
                .first(&self.statements.safety.get_block, (blocker, blocked))
                .await?;
            if let Some((who,)) = row {
                out.push(who);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let s = &self.statements.safety;
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
                    &self.statements.safety.audit_of_actor,
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
                    &self.statements.safety.audit_of_day,
                    (&day, before_id, (limit - out.len()) as i32),
                )
                .await?;
            out.extend(rows.into_iter().map(entry));
        }
        Ok(out)
    }
}
