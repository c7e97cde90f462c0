//! What admins do: the moderation queue and records, keyword lists, and
//! the audit log. Each call checks the caller is an admin.

use super::*;
use crate::model::ModerationRecord;

impl ChatService {
    pub async fn moderation_queue(
        &self,
        caller: &Claims,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ModerationRecord>, ServiceError> {
        require(caller, &[Role::Admin])?;
        Ok(self.store.moderation_queue(after, limit).await?)
    }

    pub async fn moderation_record(
        &self,
        caller: &Claims,
        id: &str,
    ) -> Result<ModerationRecord, ServiceError> {
        require(caller, &[Role::Admin])?;
        self.store
            .moderation_record(id)
            .await?
            .ok_or(ServiceError::NotFound("record"))
    }

    /// Takes a record out of the review queue, and audits it. A record
    /// unknown or not waiting is `NotFound`.
    pub async fn resolve_moderation(
        &self,
        caller: &Claims,
        id: &str,
        resolution: &str,
    ) -> Result<(), ServiceError> {
        require(caller, &[Role::Admin])?;
        let resolved = self
            .store
            .resolve_moderation(id, resolution, &caller.sub, crate::now_millis())
            .await?;
        if !resolved {
            return Err(ServiceError::NotFound("record"));
        }
        self.audit(AuditEntry::new(
            &caller.sub,
            "moderation_resolved",
            id,
            resolution,
        ))
        .await;
        Ok(())
    }

    /// The keyword lists: `(list, keyword)`.
    pub async fn keyword_lists(
        &self,
        caller: &Claims,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        require(caller, &[Role::Admin])?;
        Ok(self.store.keywords().await?)
    }

    /// Adds (`present`) or removes a keyword, applies it on this node at
    /// once (others on their next reload), and audits it.
    pub async fn change_keyword(
        &self,
        caller: &Claims,
        list: &str,
        keyword: &str,
        present: bool,
    ) -> Result<(), ServiceError> {
        require(caller, &[Role::Admin])?;
        self.store.set_keyword(list, keyword, present).await?;
        self.moderation.reload().await?;
        self.audit(AuditEntry::new(
            &caller.sub,
            if present {
                "keyword_added"
            } else {
                "keyword_removed"
            },
            &format!("keywords/{list}"),
            keyword,
        ))
        .await;
        Ok(())
    }

    /// The audit log, newest first.
    pub async fn audit_log(
        &self,
        caller: &Claims,
        actor: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, ServiceError> {
        require(caller, &[Role::Admin])?;
        Ok(self.store.audit_log(actor, before, limit).await?)
    }
}
