//! Sending a message: checks, moderation, the durable append, then delivery.

use super::*;
use crate::attachments::UploadStatus;

impl ChatService {
    /// Validates, stores, then acks and delivers one message (REST: its
    /// answer is the response; MQTT devices get the v1 ack while v1 is
    /// spoken, and the v2 own copy).
    pub async fn send_message(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: &str,
        kind: MessageType,
        content: String,
    ) -> Result<Appended, ServiceError> {
        self.send_message_via(
            user_id,
            thread_id,
            client_msg_id,
            kind,
            content,
            Reply::V1,
            None,
        )
        .await
    }

    /// [`ChatService::send_message`] answered as `reply` says; `connection`
    /// is the MQTT client it came on, spared its own copy when its PUBACK
    /// answers.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_message_via(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: &str,
        kind: MessageType,
        content: String,
        reply: Reply,
        connection: Option<&str>,
    ) -> Result<Appended, ServiceError> {
        let via = (reply, connection);
        if !valid_client_msg_id(client_msg_id) {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidField,
                format!(
                    "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_LEN} of A-Z a-z 0-9 - _ . :"
                ),
            ));
        }
        match kind {
            MessageType::Text => {}
            // Without object storage there is nowhere to check and keep a
            // picture: refused, never stored raw.
            MessageType::Image if self.attachments.is_none() => {
                return Err(ServiceError::invalid(
                    ErrorCode::UnsupportedType,
                    "image messages are not enabled",
                ));
            }
            MessageType::Image => {}
            MessageType::System => {
                return Err(ServiceError::invalid(
                    ErrorCode::InvalidField,
                    "clients cannot send system messages",
                ));
            }
        }
        if shows_nothing(&content) {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidField,
                "empty message",
            ));
        }
        if content.chars().count() > self.limits.max_text_chars {
            return Err(ServiceError::invalid(
                ErrorCode::TooLarge,
                "message too long",
            ));
        }
        if !self.membership.is_member(thread_id, user_id).await? {
            return Err(ServiceError::Forbidden);
        }
        // Before the limits and moderation: a shed send costs nothing more
        // and uses none of the sender's budget.
        if let Err(shed) = self
            .admission
            .check(Instant::now(), connection, client_msg_id)
        {
            return Err(ServiceError::Overloaded(shed));
        }
        if let Err(limited) = self.limiter.check_message(user_id, thread_id, &content) {
            tracing::info!(user_id, thread_id, ?limited, "send limited");
            for muted in self.limiter.take_new_mutes() {
                self.audit(AuditEntry::new(
                    "system",
                    "user_muted",
                    &muted,
                    "repeated rate-limit hits",
                ))
                .await;
            }
            return Err(ServiceError::Limited(limited));
        }
        if self.blocked_thread(thread_id).await? {
            return Err(ServiceError::invalid(
                ErrorCode::ThreadBlocked,
                "the conversation is blocked",
            ));
        }
        if kind == MessageType::Image {
            let card = self.image_card(thread_id, user_id, content.trim()).await?;
            return self
                .store_and_deliver(
                    user_id,
                    thread_id,
                    client_msg_id,
                    kind,
                    String::new(),
                    Some(card),
                    None,
                    via,
                )
                .await;
        }
        // Before storage and delivery: what the other side may see.
        let outcome = self.moderation.check(thread_id, user_id, &content).await?;
        if outcome.blocked() {
            if let Some(record) =
                Moderation::record_of(&outcome, thread_id, user_id, &content, None)
            {
                self.store.record_moderation(&record).await?;
                self.audit(AuditEntry::new(
                    "system",
                    "message_blocked",
                    user_id,
                    format!("thread {thread_id}, record {}", record.id),
                ))
                .await;
            }
            tracing::info!(
                user_id,
                thread_id,
                client_msg_id,
                "message blocked by moderation"
            );
            return Err(ServiceError::invalid(
                ErrorCode::ContentBlocked,
                "blocked by moderation",
            ));
        }
        let text = outcome.text.clone();
        self.store_and_deliver(
            user_id,
            thread_id,
            client_msg_id,
            kind,
            text,
            None,
            Some((&outcome, &content)),
            via,
        )
        .await
    }

    /// The image card of an `image` message: its upload checked, cleaned
    /// and stored (or, for a retried send, as processed the first time).
    pub(super) async fn image_card(
        &self,
        thread_id: &str,
        user_id: &str,
        upload_id: &str,
    ) -> Result<Card, ServiceError> {
        let attachments = self
            .attachments
            .as_ref()
            .ok_or_else(|| ServiceError::invalid(ErrorCode::UnsupportedType, "no attachments"))?;
        let invalid = |why: &str| ServiceError::invalid(ErrorCode::InvalidAttachment, why);
        let upload = self
            .store
            .upload(upload_id)
            .await?
            .filter(|u| u.thread_id == thread_id && u.user_id == user_id)
            .ok_or_else(|| invalid("unknown upload"))?;
        if upload.status == UploadStatus::Used
            && let Some(card) = upload
                .card
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
        {
            return Ok(card);
        }
        if upload.status != UploadStatus::Pending {
            return Err(invalid("upload no longer usable"));
        }
        let prefix = format!("images/{thread_id}/{}", upload.id);
        match attachments.finalize(&upload, &prefix).await {
            Ok(stored) => {
                let card = Card::Image {
                    width: stored.width,
                    height: stored.height,
                    mime: stored.mime,
                    thumb_width: stored.thumb_width,
                    thumb_height: stored.thumb_height,
                    image_key: stored.image_key,
                    thumb_key: stored.thumb_key,
                    url: None,
                    thumb_url: None,
                };
                let json = serde_json::to_string(&card)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                self.store
                    .finish_upload(&upload.id, UploadStatus::Used, Some(&json))
                    .await?;
                Ok(card)
            }
            Err(AttachmentError::Rejected(reason)) => {
                tracing::info!(user_id, thread_id, upload_id, reason, "image refused");
                self.store
                    .finish_upload(&upload.id, UploadStatus::Rejected, None)
                    .await?;
                Err(invalid(&reason))
            }
            Err(AttachmentError::Unavailable(e)) => Err(ServiceError::Unavailable {
                what: Dependency::Attachments,
                detail: e,
            }),
        }
    }

    /// Stores a checked message, acks it, tells the sender what moderation
    /// did, delivers it and enqueues its push.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn store_and_deliver(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: &str,
        kind: MessageType,
        content: String,
        card: Option<Card>,
        moderated: Option<(&chat_moderation::Outcome, &str)>,
        (reply, connection): (Reply, Option<&str>),
    ) -> Result<Appended, ServiceError> {
        let (id, created_at) = crate::new_timed_id();
        let new = NewMessage {
            id,
            thread_id: thread_id.to_owned(),
            from: user_id.to_owned(),
            kind,
            content,
            card,
            client_msg_id: Some(client_msg_id.to_owned()),
            created_at,
            sets_product: None,
            owes_push: false,
        };
        // Owed only to a recipient with no live session, as the dispatcher
        // would decide a moment later (an online one got the message over
        // MQTT): an outbox row and its removal are most of a send's writes.
        let owes_push = matches!(self.push, PushRoute::WithTheMessage)
            && new.counts_as_unread()
            && !self.recipient_online(thread_id, user_id).await;
        let new = NewMessage { owes_push, ..new };
        if !self.store.appends_in_order_of_first_poll() {
            crate::pipeline::in_turn().await;
        }
        let appended = {
            let _timer = chat_ops::metrics().store_timer("append");
            let queued = self.admission.enter();
            let started = Instant::now();
            let appended = crate::pipeline::queued(self.store.append_message(&new)).await;
            let now = Instant::now();
            queued.done(now, now - started);
            appended
        };
        // The ack, push and delivery follow the connection's previous send.
        crate::pipeline::in_turn().await;
        let appended = appended?;
        let message = &appended.message;
        let to_user_id = appended.thread.other_participant(user_id).to_owned();
        if let PushRoute::Queue(jobs) = &self.push
            && new.counts_as_unread()
        {
            // Before the ack, so an acked message always owes its push; a
            // retry enqueues again, which the queue and the marks absorb.
            if !self.presence.status(&to_user_id).online {
                let job = Job::Push(MessageSent {
                    thread_id: thread_id.to_owned(),
                    message_id: message.id.clone(),
                    from_user_id: user_id.to_owned(),
                    to_user_id: to_user_id.clone(),
                });
                if let Err(e) = jobs.enqueue(&job).await {
                    tracing::warn!(thread_id, error = %e, "notification queue unavailable");
                    // The client retries with the same key; nothing is lost.
                    return Err(ServiceError::Unavailable {
                        what: Dependency::NotificationQueue,
                        detail: e.to_string(),
                    });
                }
            }
        }
        // Debug, not info: a line per message is a log that grows with the
        // traffic; `chat_store_latency_seconds{op="append"}` counts them.
        tracing::debug!(
            user_id,
            thread_id,
            client_msg_id,
            message_id = %message.id,
            duplicate = appended.duplicate,
            "message stored"
        );
        match reply {
            Reply::V1 => {
                let ack = ServerEvent::MessageSentAck {
                    client_msg_id: client_msg_id.to_owned(),
                    thread_id: thread_id.to_owned(),
                    message_id: Some(message.id.clone()),
                    created_at: Some(message.created_at),
                    error: None,
                };
                self.emit_v1(user_id, &ack).await;
            }
            // A first send is answered by the sender's own copy, below.
            Reply::V2 if appended.duplicate => {
                let ack = chat_protocol::v2::Event::Ack {
                    thread_id: thread_id.to_owned(),
                    client_msg_id: client_msg_id.to_owned(),
                    id: Some(message.id.clone()),
                    created_at: Some(message.created_at),
                    err: None,
                };
                self.emit_v2(user_id, &ack, Qos::AtLeastOnce).await;
            }
            Reply::V2 | Reply::Puback => {}
        }
        if !appended.duplicate
            && let Some((outcome, original)) = moderated
        {
            if let Some(record) =
                Moderation::record_of(outcome, thread_id, user_id, original, Some(&message.id))
                && let Err(e) = self.store.record_moderation(&record).await
            {
                tracing::warn!(thread_id, error = %e, "moderation record not kept");
            }
            if outcome.masked() {
                let lang = self.lang_of(user_id).await;
                let categories: Vec<String> = outcome
                    .masked_categories()
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect();
                let text = crate::i18n::masked_notice(lang).to_owned();
                if reply.is_v1() {
                    let notice = ServerEvent::ModerationNotice {
                        code: "content_masked".into(),
                        message: text,
                        thread_id: thread_id.to_owned(),
                        client_msg_id: client_msg_id.to_owned(),
                        message_id: message.id.clone(),
                        categories,
                    };
                    self.emit_v1(user_id, &notice).await;
                } else {
                    let notice = chat_protocol::v2::Event::Masked {
                        thread_id: thread_id.to_owned(),
                        client_msg_id: client_msg_id.to_owned(),
                        id: message.id.clone(),
                        content: message.content.clone(),
                        cats: categories,
                        msg: text,
                    };
                    self.emit_v2(user_id, &notice, Qos::AtLeastOnce).await;
                }
            }
        }
        // A retry after a lost ack must not show the message twice; readers
        // that missed the first delivery resync from history.
        if !appended.duplicate {
            let spared = connection.filter(|_| reply == Reply::Puback);
            self.deliver_stored(&appended, spared).await;
            let since_created = (crate::now_millis() - message.created_at).max(0);
            chat_ops::metrics()
                .delivery_latency
                .observe(since_created as f64 / 1000.0);
            self.bus
                .emit(DomainEvent::MessageSent(MessageSent {
                    thread_id: thread_id.to_owned(),
                    message_id: message.id.clone(),
                    from_user_id: user_id.to_owned(),
                    to_user_id,
                }))
                .await;
        }
        Ok(appended)
    }

    /// Whether the other participant of `thread_id` holds a live session
    /// (unknown counts as away: a push too many beats one missing).
    async fn recipient_online(&self, thread_id: &str, sender: &str) -> bool {
        match self.membership.participants(thread_id).await {
            Ok(Some(p)) => self.presence.status(p.other_than(sender)).online,
            _ => false,
        }
    }

    /// v2: the message to both participants' topics (the sender's copy
    /// on behalf of `spared`, the connection its PUBACK answered). v1:
    /// `message_new` to the thread, `thread_updated` to both participants.
    pub(super) async fn deliver_stored(&self, appended: &Appended, spared: Option<&str>) {
        let thread = &appended.thread;
        let presented;
        let message = if matches!(appended.message.card, Some(Card::Image { .. })) {
            presented = self.present(appended.message.clone());
            &presented
        } else {
            &appended.message
        };
        for user in [&thread.buyer_id, &thread.seller_id] {
            let topic = chat_protocol::v2::user(user);
            let spared = spared.filter(|_| *user == message.from);
            if !self.outbound.reaches_anyone(&topic, spared).await {
                continue;
            }
            let payload = chat_protocol::v2::encode(&wire::v2_msg(message, thread, user));
            match spared {
                Some(connection) => {
                    self.outbound
                        .publish_as(topic, payload, Qos::AtLeastOnce, connection)
                        .await
                }
                _ => {
                    self.outbound
                        .publish(topic, payload, Qos::AtLeastOnce)
                        .await
                }
            }
        }
        if message.from.is_empty() {
            // A card or a notice: the thread's context may have changed.
            self.emit_v2_thread(thread, &[&thread.buyer_id, &thread.seller_id])
                .await;
        }
        if !self.v1 {
            return;
        }
        let new = ServerEvent::MessageNew {
            message: self.present_to(None, appended.message.clone()),
        };
        self.outbound
            .publish(
                topics::thread(&thread.id),
                chat_protocol::encode(&new),
                Qos::AtLeastOnce,
            )
            .await;
        // Sending marks the thread read for the sender: when the other party
        // spoke last (or this node does not know), say so on the thread.
        let turned = {
            let mut last = self.last_sender.lock();
            if last.len() > 100_000 {
                last.clear();
            }
            last.insert(thread.id.clone(), message.from.clone())
                .is_none_or(|previous| previous != message.from)
        };
        if turned && !message.from.is_empty() {
            self.publish_read_v1(&thread.id, &message.from, &message.id, message.created_at)
                .await;
        }
        self.emit_thread_updated(thread, &[&thread.buyer_id, &thread.seller_id])
            .await;
    }

    /// A snapshot of the thread, encoded once for every recipient. QoS 0:
    /// each snapshot supersedes the previous one, and a client that was
    /// away refreshes its inbox over REST, so an acknowledged, queued copy
    /// would only cost a PUBACK per recipient and message.
    pub(super) async fn emit_thread_updated(&self, thread: &Thread, users: &[&str]) {
        let payload = chat_protocol::encode(&ServerEvent::ThreadUpdated {
            thread: thread.state(),
        });
        for user in users {
            self.outbound
                .publish(topics::user(user), payload.clone(), Qos::AtMostOnce)
                .await;
        }
    }
}
