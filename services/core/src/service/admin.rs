//! What admins do: the moderation queue and records, keyword lists, and
//! the audit log. Each call checks the caller is an admin.

use super::*;
use crate::model::{KeywordList, ModerationRecord};
use chat_moderation::Outcome;

/// The longest text an admin may preview (a message is at most
/// `limits.max_text_chars`; a preview may hold several).
pub const MAX_PREVIEW_CHARS: usize = 20_000;
/// The longest resolution note, in bytes.
pub const MAX_RESOLUTION_BYTES: usize = 200;
/// The longest keyword, in characters.
pub const MAX_KEYWORD_CHARS: usize = 100;

impl ChatService {
    /// What the pipeline would do to `text` on its own (no earlier
    /// messages): for support staff tuning the lists.
    pub fn preview_moderation(&self, caller: &Claims, text: &str) -> Result<Outcome, ServiceError> {
        require(caller, &[Role::Admin])?;
        if text.chars().count() > MAX_PREVIEW_CHARS {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidField,
                "text: at most 20,000 characters",
            ));
        }
        Ok(self.moderation.preview(text))
    }

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
        let resolution = resolution.trim();
        if resolution.is_empty() || resolution.len() > MAX_RESOLUTION_BYTES {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidField,
                "resolution: 1 to 200 bytes",
            ));
        }
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
    ) -> Result<Vec<(KeywordList, String)>, ServiceError> {
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
        let list = KeywordList::parse(list)
            .ok_or_else(|| ServiceError::invalid(ErrorCode::InvalidField, "list: block or flag"))?;
        let keyword = keyword.trim();
        if keyword.is_empty() || keyword.chars().count() > MAX_KEYWORD_CHARS {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidField,
                "keyword: 1 to 100 characters",
            ));
        }
        self.store.set_keyword(list, keyword, present).await?;
        self.moderation.reload().await?;
        self.audit(AuditEntry::new(
            &caller.sub,
            if present {
                "keyword_added"
            } else {
                "keyword_removed"
            },
            &format!("keywords/{}", list.as_str()),
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
