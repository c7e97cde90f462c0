//! Where a client's command becomes stored state and outgoing events.
//!
//! The order of effects is the product's main invariant: validate, store
//! durably, and only then ack the sender, deliver to the thread, update
//! both inboxes and emit `chat.message.sent`. Nothing reaches the other
//! participant that was not validated and stored first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::{
    Card, ClientEvent, DecodeError, ErrorBody, ErrorCode, MAX_CLIENT_MSG_ID_LEN, Message,
    MessageType, ServerEvent, topics, valid_client_msg_id,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::attachments::{AttachmentError, Attachments, Upload, UploadTarget};
use crate::auth::{Claims, Role};
use crate::bus::{DomainEvent, EventBus, MessageSent};
use crate::i18n::{Lang, error_text};
use crate::membership::MembershipCache;
use crate::model::{
    AuditEntry, MessageRange, ModerationRecord, NewMessage, OpenThread, Thread, ThreadKey,
};
use crate::moderation::{Moderation, ModerationConfig};
use crate::notify::{Job, JobSink};
use crate::outbound::{Outbound, Qos};
use crate::presence::{LocalPresence, Presence};
use crate::ratelimit::{Limited, RateLimitConfig, RateLimiter, Refusal};
use crate::store::{Appended, ChatStore, ReadMarked, StoreError};

/// Limits on what clients may send (section `[limits]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Longest text message, in characters.
    pub max_text_chars: usize,
    /// Largest inbound MQTT payload handled, in bytes. Larger packets up to
    /// the broker's packet limit get a `too_large` error event.
    pub max_payload_bytes: usize,
    /// Minimum time between two relayed `typing: true` of one user in one
    /// thread, in milliseconds.
    pub typing_throttle_ms: u64,
    /// MQTT connections one user may hold at once on a node (phones,
    /// tablets, browser tabs: distinct client ids); 0 = no cap.
    pub max_connections_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_chars: 4000,
            max_payload_bytes: 32 * 1024,
            typing_throttle_ms: 2000,
            max_connections_per_user: 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("forbidden")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    Invalid { code: ErrorCode, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("limited: {0:?}")]
    Limited(Limited),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Forbidden => ErrorCode::Forbidden,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Invalid { code, .. } => *code,
            ServiceError::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            ServiceError::Store(StoreError::Backend(_)) => ErrorCode::Unavailable,
            ServiceError::Limited(Limited::RateLimited(_)) => ErrorCode::RateLimited,
            ServiceError::Limited(Limited::Muted(_)) => ErrorCode::Muted,
        }
    }

    /// When to try again, for limits.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ServiceError::Limited(l) => Some(l.retry_after().as_millis() as u64),
            _ => None,
        }
    }

    fn invalid(code: ErrorCode, detail: impl Into<String>) -> Self {
        ServiceError::Invalid {
            code,
            detail: detail.into(),
        }
    }
}

/// What a thread is opened from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFrom {
    /// The general thread with a seller, optionally about a product.
    Seller {
        seller_id: String,
        product_id: Option<String>,
    },
    /// The thread of one order.
    Order { order_id: String },
}

/// What the broker does with a connection after one of its publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterInbound {
    Keep,
    /// It keeps sending refused publishes: close it.
    Disconnect,
}

/// Longest topic echoed back in an error event, and logged, in bytes: a
/// refused topic may be 64 KiB of anything.
const MAX_ECHOED_TOPIC: usize = 128;

/// `text` cut to at most `max` bytes on a character boundary.
pub fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Whether `content` shows nothing: whitespace and invisible format
/// characters only (zero-width spaces and joiners, word joiner, BOM, soft
/// hyphen, variation selectors).
fn shows_nothing(content: &str) -> bool {
    content.chars().all(|c| {
        c.is_whitespace()
            || matches!(c,
                '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
                | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
                | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}')
    })
}

pub struct ChatService {
    store: Arc<dyn ChatStore>,
    membership: Arc<MembershipCache>,
    outbound: Arc<dyn Outbound>,
    bus: Arc<dyn EventBus>,
    limits: Limits,
    typing_seen: Mutex<HashMap<(String, String), Instant>>,
    /// Who sent the last message this node delivered in a thread: a reply
    /// after the other party's message moves the replier's read marker past
    /// it, which the other party must see (`message_read`, "Đã xem").
    last_sender: Mutex<HashMap<String, String>>,
    presence: Arc<dyn Presence>,
    /// Where notification jobs go when the store does not write them
    /// itself (JetStream, or the in-memory queue).
    jobs: Option<Arc<dyn JobSink>>,
    moderation: Arc<Moderation>,
    limiter: Arc<RateLimiter>,
    /// Object storage for image messages; `None`: images are refused.
    attachments: Option<Arc<dyn Attachments>>,
    /// Whether a pair of users is blocked, cached briefly: every send asks.
    blocks: Mutex<HashMap<(String, String), (bool, Instant)>>,
    /// Users whose id starts with this (the demo's) open threads among
    /// themselves only, and nobody else opens one with them.
    sandbox_prefix: Option<String>,
}

/// How long a cached block state is trusted (a change made through this
/// node applies at once; through another, within this).
const BLOCK_CACHE_TTL: Duration = Duration::from_secs(10);

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Why a user reports a thread or a message.
pub const REPORT_REASONS: &[&str] = &[
    "spam",
    "scam",
    "abuse",
    "off_platform",
    "prohibited_item",
    "other",
];

impl ChatService {
    pub fn new(
        store: Arc<dyn ChatStore>,
        membership: Arc<MembershipCache>,
        outbound: Arc<dyn Outbound>,
        bus: Arc<dyn EventBus>,
        limits: Limits,
    ) -> Self {
        ChatService {
            membership,
            outbound,
            bus,
            limits,
            typing_seen: Mutex::new(HashMap::new()),
            last_sender: Mutex::new(HashMap::new()),
            presence: Arc::new(LocalPresence::new()),
            jobs: None,
            limiter: Arc::new(RateLimiter::new(RateLimitConfig::default())),
            blocks: Mutex::new(HashMap::new()),
            sandbox_prefix: None,
            attachments: None,
            moderation: Arc::new(Moderation::without_keywords(
                ModerationConfig::default(),
                store.clone(),
            )),
            store,
        }
    }

    /// Presence shared by every node (the in-process one knows only the
    /// sessions of this node's broker).
    pub fn with_presence(mut self, presence: Arc<dyn Presence>) -> Self {
        self.presence = presence;
        self
    }

    /// Moderation with the deployment's policy and keyword lists.
    pub fn with_moderation(mut self, moderation: Arc<Moderation>) -> Self {
        self.moderation = moderation;
        self
    }

    pub fn moderation(&self) -> &Arc<Moderation> {
        &self.moderation
    }

    /// Keeps the users whose id starts with `prefix` (the demo's) to
    /// themselves: they open threads with each other only.
    pub fn with_sandbox(mut self, prefix: &str) -> Self {
        self.sandbox_prefix = Some(prefix.to_owned());
        self
    }

    /// Whether `a` and `b` are on the same side of the sandbox.
    fn may_meet(&self, a: &str, b: &str) -> bool {
        match &self.sandbox_prefix {
            Some(prefix) => a.starts_with(prefix.as_str()) == b.starts_with(prefix.as_str()),
            None => true,
        }
    }

    /// Object storage for image messages.
    pub fn with_attachments(mut self, attachments: Arc<dyn Attachments>) -> Self {
        self.attachments = Some(attachments);
        self
    }

    pub fn attachments(&self) -> Option<&Arc<dyn Attachments>> {
        self.attachments.as_ref()
    }

    /// A message as `viewer` gets it: image cards carry signed URLs, and
    /// the idempotency key is the sender's business (it could carry text
    /// past moderation): only the sender sees it. `None`: a broadcast to
    /// the thread, which carries no key.
    pub fn present_to(&self, viewer: Option<&str>, mut message: Message) -> Message {
        if viewer != Some(message.from.as_str()) {
            message.client_msg_id = None;
        }
        self.present(message)
    }

    /// A message as a client gets it: image cards carry signed URLs.
    fn present(&self, mut message: Message) -> Message {
        if let (
            Some(attachments),
            Some(Card::Image {
                image_key,
                thumb_key,
                url,
                thumb_url,
                ..
            }),
        ) = (&self.attachments, message.card.as_mut())
        {
            *url = attachments.download_url(image_key).ok();
            *thumb_url = attachments.download_url(thumb_key).ok();
        }
        message
    }

    /// An upload slot for one image in a thread the caller belongs to, and
    /// where to upload it.
    pub async fn create_upload(
        &self,
        caller: &Claims,
        thread_id: &str,
        content_type: &str,
        size: u64,
    ) -> Result<(Upload, UploadTarget), ServiceError> {
        let attachments = self.attachments.as_ref().ok_or_else(|| {
            ServiceError::invalid(ErrorCode::UnsupportedType, "attachments are off")
        })?;
        if !self.membership.is_member(thread_id, &caller.sub).await? {
            return Err(ServiceError::NotFound("thread"));
        }
        if !matches!(content_type, "image/jpeg" | "image/png" | "image/webp") {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidAttachment,
                "contentType: image/jpeg, image/png or image/webp",
            ));
        }
        if size == 0 || size > attachments.max_bytes() {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidAttachment,
                format!("size: 1 to {} bytes", attachments.max_bytes()),
            ));
        }
        self.limiter
            .check_upload(&caller.sub)
            .map_err(ServiceError::Limited)?;
        let upload = Upload {
            id: crate::new_id(),
            thread_id: thread_id.to_owned(),
            user_id: caller.sub.clone(),
            content_type: content_type.to_owned(),
            size,
            status: "pending".into(),
            card: None,
            created_at: crate::now_millis(),
        };
        let target = attachments
            .upload_target(&upload)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.store.create_upload(&upload).await?;
        Ok((upload, target))
    }

    /// Deletes uploads never used by a message within `older_than_ms`.
    pub async fn sweep_uploads(&self, older_than_ms: i64) -> Result<usize, ServiceError> {
        let Some(attachments) = &self.attachments else {
            return Ok(0);
        };
        let stale = self
            .store
            .stale_uploads(crate::now_millis() - older_than_ms, 500)
            .await?;
        let mut swept = 0;
        for upload in stale {
            if let Err(e) = attachments.delete(&upload.key()).await {
                tracing::warn!(upload = upload.id, error = %e, "unused upload not deleted");
                continue;
            }
            if self
                .store
                .finish_upload(&upload.id, "expired", None)
                .await?
            {
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// The deployment's rate limits (shared with the broker and REST).
    pub fn with_rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// Enqueues a push job per stored message for a recipient who is
    /// offline here, before the sender's ack.
    pub fn with_job_sink(mut self, jobs: Arc<dyn JobSink>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Who is online; the broker reports sessions into it.
    pub fn presence(&self) -> &Arc<dyn Presence> {
        &self.presence
    }

    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.store
    }

    pub fn membership(&self) -> &Arc<MembershipCache> {
        &self.membership
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Handles a payload a participant published to `thread/<id>/in`. The
    /// caller has checked membership; every outcome, good or bad, is told
    /// to the sender on `user/<id>`.
    /// One publish to `thread/<id>/in`, already allowed by the broker's ACL.
    /// `connection` is the MQTT client id it came on (`None` from a
    /// persistence worker): sends, typing and receipts each spend their own
    /// budget of it, and refusals beyond its refusal budget go unanswered,
    /// then close it.
    pub async fn handle_inbound(
        &self,
        user_id: &str,
        connection: Option<&str>,
        thread_id: &str,
        payload: &[u8],
    ) -> AfterInbound {
        let topic = topics::thread_inbound(thread_id);
        if payload.len() > self.limits.max_payload_bytes {
            tracing::debug!(
                user_id,
                thread_id,
                size = payload.len(),
                "inbound too large"
            );
            let send = chat_protocol::send_reference(payload);
            return self
                .refuse(
                    user_id,
                    connection,
                    thread_id,
                    ErrorCode::TooLarge,
                    send,
                    None,
                    None,
                )
                .await;
        }
        let event = match chat_protocol::decode_client(payload) {
            Ok(event) => event,
            Err(e) => {
                // Its detail may quote the payload: not at info.
                tracing::debug!(user_id, thread_id, error = ?e, "inbound does not decode");
                let send = chat_protocol::send_reference(payload);
                let reference = match &e {
                    DecodeError::UnknownEvent(name)
                    | DecodeError::InvalidField { event: name, .. } => {
                        Some(truncated(name, 32).to_owned())
                    }
                    _ => None,
                };
                return self
                    .refuse(
                        user_id,
                        connection,
                        thread_id,
                        e.code(),
                        send,
                        reference,
                        None,
                    )
                    .await;
            }
        };
        if let Some(connection) = connection
            && let Err(after) = self
                .within_budget(user_id, connection, thread_id, &event)
                .await
        {
            return after;
        }
        match event {
            ClientEvent::SendMessage {
                client_msg_id,
                kind,
                content,
            } => {
                let metrics = chat_ops::metrics();
                let received = Instant::now();
                match self
                    .send_message(user_id, thread_id, &client_msg_id, kind, content)
                    .await
                {
                    Ok(appended) => {
                        if !appended.duplicate {
                            metrics.messages_in.inc();
                        }
                    }
                    Err(e) => {
                        tracing::info!(user_id, thread_id, client_msg_id, error = %e, "send refused");
                        metrics.publish_refused(e.code().as_str());
                        self.send_failed(
                            user_id,
                            thread_id,
                            client_msg_id,
                            e.code(),
                            e.retry_after_ms(),
                        )
                        .await;
                    }
                }
                metrics
                    .ack_latency
                    .observe(received.elapsed().as_secs_f64());
            }
            ClientEvent::MarkRead { up_to } => {
                if let Err(e) = self.mark_read(user_id, thread_id, &up_to).await {
                    tracing::info!(user_id, thread_id, error = %e, "mark_read refused");
                    self.send_error(user_id, e.code(), Some(topic), Some("mark_read".into()))
                        .await;
                }
            }
            ClientEvent::Typing { active } => self.typing(user_id, thread_id, active).await,
        }
        AfterInbound::Keep
    }

    /// Spends `event`'s budget of `connection`: sends and read receipts
    /// have one each (typing has the user's, in [`ChatService::typing`]).
    /// Over it, the event is refused here: a send with its ack.
    pub async fn within_budget(
        &self,
        user_id: &str,
        connection: &str,
        thread_id: &str,
        event: &ClientEvent,
    ) -> Result<(), AfterInbound> {
        let (limited, send, reference) = match event {
            ClientEvent::SendMessage { client_msg_id, .. } => {
                match self.limiter.check_connection(user_id, connection) {
                    Ok(()) => return Ok(()),
                    Err(limited) => (limited, Some(client_msg_id.clone()), None),
                }
            }
            ClientEvent::MarkRead { .. } => match self.limiter.check_receipt(connection) {
                Ok(()) => return Ok(()),
                Err(limited) => (limited, None, Some("mark_read".to_owned())),
            },
            ClientEvent::Typing { .. } => return Ok(()),
        };
        tracing::info!(
            user_id,
            connection,
            ?limited,
            "publish limited on its connection"
        );
        let code = match limited {
            Limited::RateLimited(_) => ErrorCode::RateLimited,
            Limited::Muted(_) => ErrorCode::Muted,
        };
        let retry = Some(limited.retry_after().as_millis() as u64);
        Err(self
            .refuse(
                user_id,
                Some(connection),
                thread_id,
                code,
                send,
                reference,
                retry,
            )
            .await)
    }

    /// Refuses a publish of `user_id` into `thread_id` (or, with an empty
    /// thread id, to a topic that is no thread's): a decodable send
    /// (`send` = its `client_msg_id`) gets a failed `message_sent_ack` its
    /// outbox can settle, anything else an `error` event. Within the
    /// connection's refusal budget only; beyond it nothing is answered.
    #[allow(clippy::too_many_arguments)]
    pub async fn refuse(
        &self,
        user_id: &str,
        connection: Option<&str>,
        thread_id: &str,
        code: ErrorCode,
        send: Option<String>,
        reference: Option<String>,
        retry_after_ms: Option<u64>,
    ) -> AfterInbound {
        let verdict = connection.map_or(Refusal::Tell, |c| self.limiter.refusal(c));
        match verdict {
            Refusal::Tell => {
                tracing::info!(
                    user_id,
                    connection,
                    thread_id,
                    code = code.as_str(),
                    "publish refused"
                );
            }
            Refusal::Quiet => {
                chat_ops::metrics().publish_refused(code.as_str());
                return AfterInbound::Keep;
            }
            Refusal::Disconnect => {
                chat_ops::metrics().publish_refused(code.as_str());
                tracing::info!(
                    user_id,
                    connection,
                    "disconnecting: too many refused publishes"
                );
                return AfterInbound::Disconnect;
            }
        }
        match send {
            Some(client_msg_id) => {
                chat_ops::metrics().publish_refused(code.as_str());
                self.send_failed(user_id, thread_id, client_msg_id, code, retry_after_ms)
                    .await
            }
            None => {
                let topic = if thread_id.is_empty() {
                    None
                } else {
                    Some(topics::thread_inbound(thread_id))
                };
                self.send_error_retry(user_id, code, topic, reference, retry_after_ms)
                    .await
            }
        }
        AfterInbound::Keep
    }

    /// A publish to a topic no user may publish to, or a thread the user
    /// is not in: an `error` naming the topic (cut to 128 bytes), within
    /// the connection's refusal budget.
    pub async fn refuse_topic(
        &self,
        user_id: &str,
        connection: &str,
        topic: &str,
        code: ErrorCode,
    ) -> AfterInbound {
        match self.limiter.refusal(connection) {
            Refusal::Tell => {
                let topic = truncated(topic, MAX_ECHOED_TOPIC).to_owned();
                tracing::info!(user_id, connection, topic = ?topic, code = code.as_str(), "publish refused");
                self.send_error(user_id, code, Some(topic), None).await;
                AfterInbound::Keep
            }
            Refusal::Quiet => {
                chat_ops::metrics().publish_refused(code.as_str());
                AfterInbound::Keep
            }
            Refusal::Disconnect => {
                chat_ops::metrics().publish_refused(code.as_str());
                tracing::info!(
                    user_id,
                    connection,
                    "disconnecting: too many refused publishes"
                );
                AfterInbound::Disconnect
            }
        }
    }

    /// The failed `message_sent_ack` of a send: nothing was stored.
    async fn send_failed(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: String,
        code: ErrorCode,
        retry_after_ms: Option<u64>,
    ) {
        let lang = self.lang_of(user_id).await;
        let ack = ServerEvent::MessageSentAck {
            client_msg_id,
            thread_id: thread_id.to_owned(),
            message_id: None,
            created_at: None,
            error: Some(ErrorBody {
                code,
                message: error_text(code, lang).to_owned(),
                retry_after_ms,
            }),
        };
        self.emit_to_user(user_id, &ack).await;
    }

    /// Sets aside a hand-over that the server failed on (a persistence
    /// worker crashed on it, or panicked): recorded in the audit log as
    /// `persist_dead_letter`, and its sender told with a failed ack
    /// (`internal`) when the payload names a send, so that the outbox
    /// settles instead of resending the poison forever. `why` is ours
    /// (never message text).
    pub async fn dead_letter(&self, user_id: &str, thread_id: &str, payload: &[u8], why: &str) {
        let reference = chat_protocol::send_reference(payload);
        tracing::error!(
            user_id,
            thread_id,
            size = payload.len(),
            why,
            "hand-over set aside"
        );
        self.audit(AuditEntry::new(
            "system",
            "persist_dead_letter",
            thread_id,
            format!(
                "from {user_id}, {} bytes, client_msg_id {}: {why}",
                payload.len(),
                reference.as_deref().unwrap_or("-")
            ),
        ))
        .await;
        if let Some(client_msg_id) = reference {
            self.send_failed(user_id, thread_id, client_msg_id, ErrorCode::Internal, None)
                .await;
        }
    }

    /// Tells a user that something they published was refused.
    pub async fn send_error(
        &self,
        user_id: &str,
        code: ErrorCode,
        topic: Option<String>,
        reference: Option<String>,
    ) {
        self.send_error_retry(user_id, code, topic, reference, None)
            .await
    }

    /// [`ChatService::send_error`] with when to try again.
    pub async fn send_error_retry(
        &self,
        user_id: &str,
        code: ErrorCode,
        topic: Option<String>,
        reference: Option<String>,
        retry_after_ms: Option<u64>,
    ) {
        chat_ops::metrics().publish_refused(code.as_str());
        let lang = self.lang_of(user_id).await;
        let event = ServerEvent::Error {
            error: ErrorBody {
                code,
                message: error_text(code, lang).to_owned(),
                retry_after_ms,
            },
            topic,
            reference,
        };
        self.emit_to_user(user_id, &event).await;
    }

    /// Validates, stores, then acks and delivers one message.
    pub async fn send_message(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: &str,
        kind: MessageType,
        content: String,
    ) -> Result<Appended, ServiceError> {
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
        )
        .await
    }

    /// The image card of an `image` message: its upload checked, cleaned
    /// and stored (or, for a retried send, as processed the first time).
    async fn image_card(
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
        if upload.status == "used"
            && let Some(card) = upload
                .card
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
        {
            return Ok(card);
        }
        if upload.status != "pending" {
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
                let json =
                    serde_json::to_string(&card).map_err(|e| StoreError::Backend(e.to_string()))?;
                self.store
                    .finish_upload(&upload.id, "used", Some(&json))
                    .await?;
                Ok(card)
            }
            Err(AttachmentError::Rejected(reason)) => {
                tracing::info!(user_id, thread_id, upload_id, reason, "image refused");
                self.store
                    .finish_upload(&upload.id, "rejected", None)
                    .await?;
                Err(invalid(&reason))
            }
            Err(AttachmentError::Unavailable(e)) => Err(StoreError::Backend(e).into()),
        }
    }

    /// Stores a checked message, acks it, tells the sender what moderation
    /// did, delivers it and enqueues its push.
    #[allow(clippy::too_many_arguments)]
    async fn store_and_deliver(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: &str,
        kind: MessageType,
        content: String,
        card: Option<Card>,
        moderated: Option<(&chat_moderation::Outcome, &str)>,
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
        };
        let appended = {
            let _timer = chat_ops::metrics().store_timer("append");
            self.store.append_message(&new).await?
        };
        let message = &appended.message;
        let to_user_id = appended.thread.other_participant(user_id).to_owned();
        if let Some(jobs) = &self.jobs {
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
                    return Err(StoreError::Backend(format!("notification queue: {e}")).into());
                }
            }
        }
        tracing::info!(
            user_id,
            thread_id,
            client_msg_id,
            message_id = %message.id,
            duplicate = appended.duplicate,
            "message stored"
        );
        let ack = ServerEvent::MessageSentAck {
            client_msg_id: client_msg_id.to_owned(),
            thread_id: thread_id.to_owned(),
            message_id: Some(message.id.clone()),
            created_at: Some(message.created_at),
            error: None,
        };
        self.emit_to_user(user_id, &ack).await;
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
                let notice = ServerEvent::ModerationNotice {
                    code: "content_masked".into(),
                    message: crate::i18n::masked_notice(lang).to_owned(),
                    thread_id: thread_id.to_owned(),
                    client_msg_id: client_msg_id.to_owned(),
                    message_id: message.id.clone(),
                    categories: outcome
                        .masked_categories()
                        .iter()
                        .map(|c| c.as_str().to_owned())
                        .collect(),
                };
                self.emit_to_user(user_id, &notice).await;
            }
        }
        // A retry after a lost ack must not show the message twice; readers
        // that missed the first delivery resync from history.
        if !appended.duplicate {
            self.deliver_stored(&appended).await;
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

    /// `message_new` to the thread, `thread_updated` to both participants.
    async fn deliver_stored(&self, appended: &Appended) {
        let thread = &appended.thread;
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
        let message = &appended.message;
        let turned = {
            let mut last = self.last_sender.lock();
            if last.len() > 100_000 {
                last.clear();
            }
            last.insert(thread.id.clone(), message.from.clone())
                .is_none_or(|previous| previous != message.from)
        };
        if turned && !message.from.is_empty() {
            self.publish_read(&thread.id, &message.from, &message.id, message.created_at)
                .await;
        }
        self.emit_thread_updated(thread, &[&thread.buyer_id, &thread.seller_id])
            .await;
    }

    /// A snapshot of the thread, encoded once for every recipient. QoS 0:
    /// each snapshot supersedes the previous one, and a client that was
    /// away refreshes its inbox over REST, so an acknowledged, queued copy
    /// would only cost a PUBACK per recipient and message.
    async fn emit_thread_updated(&self, thread: &Thread, users: &[&str]) {
        let payload = chat_protocol::encode(&ServerEvent::ThreadUpdated {
            thread: thread.state(),
        });
        for user in users {
            self.outbound
                .publish(topics::user(user), payload.clone(), Qos::AtMostOnce)
                .await;
        }
    }

    /// `message_read` on the thread: `user_id` has read up to `up_to`.
    async fn publish_read(&self, thread_id: &str, user_id: &str, up_to: &str, read_at: i64) {
        let read = ServerEvent::MessageRead {
            thread_id: thread_id.to_owned(),
            user_id: user_id.to_owned(),
            up_to: up_to.to_owned(),
            read_at,
        };
        self.outbound
            .publish(
                topics::thread(thread_id),
                chat_protocol::encode(&read),
                Qos::AtLeastOnce,
            )
            .await;
    }

    pub async fn mark_read(
        &self,
        user_id: &str,
        thread_id: &str,
        up_to: &str,
    ) -> Result<ReadMarked, ServiceError> {
        if !self.membership.is_member(thread_id, user_id).await? {
            return Err(ServiceError::Forbidden);
        }
        let marked = {
            let _timer = chat_ops::metrics().store_timer("mark_read");
            self.store.mark_read(thread_id, user_id, up_to).await?
        };
        tracing::info!(user_id, thread_id, up_to = %marked.up_to, moved = marked.moved, "read marker");
        if marked.moved {
            self.publish_read(thread_id, user_id, &marked.up_to, crate::now_millis())
                .await;
        }
        self.emit_thread_updated(&marked.thread, &[user_id]).await;
        Ok(marked)
    }

    /// Relays a typing indicator to the thread, throttled, never stored.
    pub async fn typing(&self, user_id: &str, thread_id: &str, active: bool) {
        if !self.limiter.allow_typing(user_id) {
            return;
        }
        if active {
            let throttle = Duration::from_millis(self.limits.typing_throttle_ms);
            let now = Instant::now();
            let mut seen = self.typing_seen.lock();
            let key = (user_id.to_owned(), thread_id.to_owned());
            if seen
                .get(&key)
                .is_some_and(|last| now.duration_since(*last) < throttle)
            {
                return;
            }
            if seen.len() > 100_000 {
                seen.retain(|_, last| now.duration_since(*last) < throttle);
            }
            seen.insert(key, now);
        } else {
            self.typing_seen
                .lock()
                .remove(&(user_id.to_owned(), thread_id.to_owned()));
        }
        let event = ServerEvent::Typing {
            thread_id: thread_id.to_owned(),
            user_id: user_id.to_owned(),
            active,
        };
        self.outbound
            .publish(
                topics::thread(thread_id),
                chat_protocol::encode(&event),
                Qos::AtMostOnce,
            )
            .await;
    }

    /// Opens (or finds) a thread for the caller. Product context shows up as
    /// a product-card system message whenever it changes.
    ///
    /// A buyer opens the thread with a seller (an account the platform
    /// registered as one); either party opens the thread of their order, on
    /// the side their token says. Someone else's order and an account that
    /// is not a seller answer like missing ones, so that ids cannot be
    /// probed.
    pub async fn open_thread(
        &self,
        caller: &Claims,
        from: OpenFrom,
    ) -> Result<Thread, ServiceError> {
        let (spec, card) = match from {
            OpenFrom::Order { order_id } => {
                let order = self
                    .store
                    .order(&order_id)
                    .await?
                    .filter(|order| match caller.role {
                        Role::Buyer => order.buyer_id == caller.sub,
                        Role::Seller => order.seller_id == caller.sub,
                        _ => false,
                    })
                    .ok_or(ServiceError::NotFound("order"))?;
                let card = Card::Order {
                    order_id: order.id.clone(),
                    summary: order.summary.clone(),
                };
                let spec = OpenThread {
                    key: ThreadKey::Order {
                        order_id: order.id.clone(),
                    },
                    buyer_id: order.buyer_id,
                    seller_id: order.seller_id,
                };
                (spec, Some((card, None)))
            }
            OpenFrom::Seller {
                seller_id,
                product_id,
            } => {
                if caller.role != Role::Buyer {
                    return Err(ServiceError::Forbidden);
                }
                if seller_id == caller.sub {
                    return Err(ServiceError::invalid(
                        ErrorCode::InvalidField,
                        "cannot open a thread with yourself",
                    ));
                }
                let contactable = self.may_meet(&caller.sub, &seller_id)
                    && self
                        .store
                        .user(&seller_id)
                        .await?
                        .is_some_and(|user| user.seller);
                if !contactable {
                    return Err(ServiceError::NotFound("seller"));
                }
                let card = match product_id {
                    Some(product_id) => {
                        let product = self
                            .store
                            .product(&product_id)
                            .await?
                            .ok_or(ServiceError::NotFound("product"))?;
                        if product.seller_id != seller_id {
                            return Err(ServiceError::invalid(
                                ErrorCode::InvalidField,
                                "the product is not sold by this seller",
                            ));
                        }
                        Some((
                            Card::Product {
                                product_id: product.id.clone(),
                                title: product.title,
                                price: product.price,
                                currency: product.currency,
                                image_url: product.image_url,
                            },
                            Some(product.id),
                        ))
                    }
                    None => None,
                };
                let spec = OpenThread {
                    key: ThreadKey::Pair {
                        buyer_id: caller.sub.clone(),
                        seller_id: seller_id.clone(),
                    },
                    buyer_id: caller.sub.clone(),
                    seller_id,
                };
                (spec, card)
            }
        };
        // Starting threads with many sellers is how spam begins: a buyer
        // starts a limited number per hour; reopening one is free.
        if matches!(spec.key, ThreadKey::Pair { .. })
            && self.store.find_thread(&spec.key).await?.is_none()
            && let Err(limited) = self.limiter.check_new_thread(&caller.sub)
        {
            tracing::info!(user_id = caller.sub, ?limited, "new thread limited");
            return Err(ServiceError::Limited(limited));
        }
        let opened = self.store.open_thread(&spec).await?;
        if opened.created {
            self.membership.changed(&opened.thread.id);
            tracing::info!(thread_id = %opened.thread.id, buyer = %spec.buyer_id, seller = %spec.seller_id, "thread created");
        }
        let mut thread = opened.thread;
        let Some((card, sets_product)) = card else {
            return Ok(thread);
        };
        let wanted = match &sets_product {
            Some(product_id) => thread.product_id.as_ref() != Some(product_id),
            None => opened.created,
        };
        if wanted {
            let (id, created_at) = crate::new_timed_id();
            let system = NewMessage {
                id,
                thread_id: thread.id.clone(),
                from: String::new(),
                kind: MessageType::System,
                content: String::new(),
                card: Some(card),
                client_msg_id: None,
                created_at,
                sets_product,
            };
            let appended = self.store.append_message(&system).await?;
            self.deliver_stored(&appended).await;
            thread = appended.thread;
        }
        Ok(thread)
    }

    /// Appends to the audit log; a failure is logged, never the caller's.
    pub async fn audit(&self, entry: AuditEntry) {
        tracing::info!(
            actor = entry.actor,
            action = entry.action,
            target = entry.target,
            detail = entry.detail,
            "audit"
        );
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }

    /// Whether either participant of the thread blocked the other.
    async fn blocked_thread(&self, thread_id: &str) -> Result<bool, ServiceError> {
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
        };
        let appended = self.store.append_message(&notice).await?;
        self.deliver_stored(&appended).await;
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
            kind: "report".into(),
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

    /// A thread the caller may read: a participant, or an admin.
    pub async fn readable_thread(
        &self,
        caller: &Claims,
        thread_id: &str,
    ) -> Result<Thread, ServiceError> {
        let thread = self
            .store
            .thread(thread_id)
            .await?
            .ok_or(ServiceError::NotFound("thread"))?;
        if thread.is_participant(&caller.sub) || caller.role == Role::Admin {
            Ok(thread)
        } else {
            // Same answer as a missing thread: ids are not to be probed.
            Err(ServiceError::NotFound("thread"))
        }
    }

    async fn lang_of(&self, user_id: &str) -> Lang {
        match self.store.user(user_id).await {
            Ok(Some(user)) => Lang::from_locale(Some(&user.locale)),
            _ => Lang::Vi,
        }
    }

    async fn emit_to_user(&self, user_id: &str, event: &ServerEvent) {
        self.outbound
            .publish(
                topics::user(user_id),
                chat_protocol::encode(event),
                Qos::AtLeastOnce,
            )
            .await;
    }
}
