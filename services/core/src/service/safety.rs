//! Blocks between users and reports.

use super::*;

impl ChatService {
    /// Whether either participant of the thread blocked the other.
    pub(super) async fn blocked_thread(&self, thread_id: &str) -> Result<bool, ServiceError> {
        let Some(p) = self.membership.participants(thread_id).await? else {
            return Ok(false);
        };
        let key = pair(&p.buyer_id, &p.seller_id);
        if let Some((blocked, at)) = self.blocks.lock().get(&key)
            && at.elapsed() < BLOCK_CACHE_TTL
        {
            return Ok(*blocked);
        }
        let blocked = !self
            .store
            .blockers_between(&p.buyer_id, &p.seller_id)
            .await?
            .is_empty();
        let mut cache = self.blocks.lock();
        if cache.len() > 100_000 {
            cache.retain(|_, (_, at)| at.elapsed() < BLOCK_CACHE_TTL);
        }
        cache.insert(key, (blocked, Instant::now()));
        Ok(blocked)
    }

    /// The caller blocks (`on`) or unblocks the other participant of a
    /// thread. While either blocks the other nothing can be sent in their
    /// threads; both see a notice in this one.
    pub async fn set_block(
        &self,
        caller: &Claims,
        thread_id: &str,
        on: bool,
    ) -> Result<(), ServiceError> {
        let thread = self.readable_thread(caller, thread_id).await?;
        if !thread.is_participant(&caller.sub) {
            return Err(ServiceError::Forbidden);
        }
        let other = thread.other_participant(&caller.sub).to_owned();
        self.store.set_block(&caller.sub, &other, on).await?;
        self.blocks.lock().remove(&pair(&caller.sub, &other));
        let (code, text) = if on {
            (
                "blocked",
                "Cuộc trò chuyện đã bị chặn: không thể gửi tin nhắn cho đến khi bỏ chặn.",
            )
        } else {
            ("unblocked", "Đã bỏ chặn: có thể nhắn tin lại.")
        };
        let (id, created_at) = crate::new_timed_id();
        let notice = NewMessage {
            id,
            thread_id: thread_id.to_owned(),
            from: String::new(),
            kind: MessageType::System,
            content: text.to_owned(),
            card: Some(Card::Notice {
                code: code.to_owned(),
                text: text.to_owned(),
            }),
            client_msg_id: None,
            created_at,
            sets_product: None,
            owes_push: false,
        };
        let appended = self.store.append_message(&notice).await?;
        self.deliver_stored(&appended, None).await;
        self.audit(AuditEntry::new(
            &caller.sub,
            if on { "block" } else { "unblock" },
            &other,
            format!("thread {thread_id}"),
        ))
        .await;
        Ok(())
    }

    /// The caller reports the thread, or one message of it, to the
    /// moderation queue. Returns the record's id.
    pub async fn report(
        &self,
        caller: &Claims,
        thread_id: &str,
        message_id: Option<&str>,
        reason: &str,
    ) -> Result<String, ServiceError> {
        if !REPORT_REASONS.contains(&reason) {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidField,
                "reason: spam, scam, abuse, off_platform, prohibited_item or other",
            ));
        }
        let thread = self.readable_thread(caller, thread_id).await?;
        if !thread.is_participant(&caller.sub) {
            return Err(ServiceError::Forbidden);
        }
        let reported = thread.other_participant(&caller.sub).to_owned();
        let original = match message_id {
            Some(id) => {
                // Reports are about recent messages; look among the latest.
                let recent = self
                    .store
                    .messages(thread_id, &MessageRange::default(), 200)
                    .await?;
                let message = recent
                    .into_iter()
                    .find(|m| m.id == id)
                    .ok_or(ServiceError::NotFound("message"))?;
                message.content
            }
            None => String::new(),
        };
        let record = ModerationRecord {
            id: crate::new_id(),
            thread_id: thread_id.to_owned(),
            user_id: reported.clone(),
            message_id: message_id.map(str::to_owned),
            kind: crate::model::ModerationKind::Report,
            categories: vec![reason.to_owned()],
            original,
            keywords: Vec::new(),
            reported_by: Some(caller.sub.clone()),
            needs_review: true,
            resolution: None,
            resolved_by: None,
            resolved_at: None,
            created_at: crate::now_millis(),
        };
        self.store.record_moderation(&record).await?;
        self.audit(AuditEntry::new(
            &caller.sub,
            "report",
            &reported,
            format!("{reason}: thread {thread_id}, record {}", record.id),
        ))
        .await;
        Ok(record.id)
    }
}
