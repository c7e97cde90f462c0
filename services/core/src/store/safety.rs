//! Moderation records, keyword lists, blocks between users, and the audit log.

use async_trait::async_trait;

use super::*;

/// Moderation records, keyword lists, blocks between users, and the audit log.
#[async_trait]
pub trait Safety: Send + Sync {
    /// Keeps a moderation record (append-only but for its resolution).
    async fn record_moderation(&self, record: &ModerationRecord) -> StoreResult<()>;

    /// One record by id.
    async fn moderation_record(&self, id: &str) -> StoreResult<Option<ModerationRecord>>;

    /// Records waiting for review (`needs_review` and unresolved), oldest
    /// first, after `after` (an id) when paging.
    async fn moderation_queue(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ModerationRecord>>;

    /// Resolves a record waiting for review; false if it is not waiting.
    async fn resolve_moderation(
        &self,
        id: &str,
        resolution: &str,
        by: &str,
        at: i64,
    ) -> StoreResult<bool>;

    /// The admin keyword lists: `(list, keyword)` with list `block`/`flag`.
    async fn keywords(&self) -> StoreResult<Vec<(KeywordList, String)>>;

    /// Adds (`present`) or removes a keyword of a list.
    async fn set_keyword(&self, list: KeywordList, keyword: &str, present: bool)
    -> StoreResult<()>;

    /// `blocker` blocks (`on`) or unblocks `blocked`.
    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()>;

    /// Which of `a` and `b` blocked the other (none, one or both).
    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>>;

    /// Appends to the audit log.
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// The audit log, newest first, of one actor or of everyone (the last
    /// 90 days on ScyllaDB), before `before` (an id) when paging.
    async fn audit_log(
        &self,
        actor: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>>;
}
