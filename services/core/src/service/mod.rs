//! Where a client's command becomes stored state and outgoing events.
//!
//! The order of effects is the product's main invariant: validate, store
//! durably, and only then ack the sender, deliver to the thread, update
//! both inboxes and emit `chat.message.sent`. Nothing reaches the other
//! participant that was not validated and stored first.

mod admin;
mod devices;
mod directory;
mod inbound;
mod pages;
mod read;
mod safety;
mod send;
#[cfg(test)]
mod tests;
mod threads;
mod uploads;
mod wire;

pub use directory::Record;
pub use pages::{HistoryPage, InboxPage, ThreadCard};
pub use wire::{Handled, PubackAnswer, Reply};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::{
    Card, ClientEvent, DecodeError, ErrorBody, ErrorCode, MAX_CLIENT_MSG_ID_LEN, Message,
    MessageType, ServerEvent, topics, valid_client_msg_id,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::admission::{Admission, Shed};
use crate::attachments::{AttachmentError, Attachments, Upload, UploadTarget};
use crate::auth::{Claims, Role};
use crate::bus::{DomainEvent, EventBus, MessageSent};
use crate::i18n::{Lang, error_text};
use crate::membership::MembershipCache;
use crate::model::{
    AuditEntry, MessageRange, ModerationRecord, NewMessage, OpenThread, Thread, ThreadKey,
};
use crate::moderation::Moderation;
use crate::notify::{Job, JobSink};
use crate::outbound::{Outbound, Qos};
use crate::presence::Presence;
use crate::ratelimit::{Limited, RateLimiter, Refusal};
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
    /// Load shedding (`crate::admission`): once every append for
    /// `shed_interval_ms` waited longer than this, new sends are refused
    /// `unavailable` with a retry delay until one is quick again; 0 = never
    /// (the default: on a node whose CPU is the limit a refusal costs
    /// nearly what a send does, see docs/performance.md; it pays when the
    /// store is the slow part).
    pub shed_after_ms: u64,
    pub shed_interval_ms: u64,
    /// Sends waiting for the store beyond which new ones are refused
    /// `unavailable` (bounds the memory a stalled store costs); 0 = no cap.
    pub max_sends_queued: usize,
}

impl Limits {
    pub fn admission(&self) -> crate::admission::AdmissionConfig {
        crate::admission::AdmissionConfig {
            target: Duration::from_millis(self.shed_after_ms),
            interval: Duration::from_millis(self.shed_interval_ms.max(1)),
            max_queued: self.max_sends_queued,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_chars: 4000,
            max_payload_bytes: 32 * 1024,
            typing_throttle_ms: 2000,
            max_connections_per_user: 20,
            shed_after_ms: 0,
            shed_interval_ms: 1000,
            max_sends_queued: 100_000,
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
    /// A dependency besides the store failed; a retry may pass.
    #[error("{what} unavailable: {detail}")]
    Unavailable { what: Dependency, detail: String },
    /// Our own bug (a value that would not encode); a retry will not pass.
    #[error("internal: {0}")]
    Internal(String),
    #[error("limited: {0:?}")]
    Limited(Limited),
    /// Shed for load before any work: the store has a standing queue.
    #[error("overloaded")]
    Overloaded(Shed),
}

/// What besides the store a use-case waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Attachments,
    NotificationQueue,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dependency::Attachments => "attachment storage",
            Dependency::NotificationQueue => "notification queue",
        })
    }
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Forbidden => ErrorCode::Forbidden,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Invalid { code, .. } => *code,
            ServiceError::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            ServiceError::Store(StoreError::Unavailable { .. }) => ErrorCode::Unavailable,
            ServiceError::Store(
                StoreError::Exists(_)
                | StoreError::Inconsistent(_)
                | StoreError::Refused { .. }
                | StoreError::Config(_),
            ) => ErrorCode::Internal,
            ServiceError::Unavailable { .. } | ServiceError::Overloaded(_) => {
                ErrorCode::Unavailable
            }
            ServiceError::Internal(_) => ErrorCode::Internal,
            ServiceError::Limited(Limited::RateLimited(_)) => ErrorCode::RateLimited,
            ServiceError::Limited(Limited::Muted(_)) => ErrorCode::Muted,
        }
    }

    /// When to try again, for limits.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ServiceError::Limited(l) => Some(l.retry_after().as_millis() as u64),
            ServiceError::Overloaded(shed) => Some(shed.retry_after.as_millis() as u64),
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

/// The one role check of the use-cases: `caller` holds one of `roles`.
fn require(caller: &Claims, roles: &[Role]) -> Result<(), ServiceError> {
    if roles.contains(&caller.role) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden)
    }
}

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

/// Where the push a stored message owes its recipient is recorded. Acted
/// on here, once, for every message (`send.rs` `store_and_deliver`).
pub enum PushRoute {
    /// Notifications are off.
    Nowhere,
    /// By the store's append, in the same transaction (`NewMessage::owes_push`),
    /// for a recipient with no live session here: the SQLite outbox, whose
    /// notification service checks presence again when it sends.
    WithTheMessage,
    /// In this queue (JetStream, or in memory), after the append and
    /// before the ack, for a recipient offline here: the `chatd push`
    /// replicas that send know no sessions.
    Queue(Arc<dyn JobSink>),
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
    /// Where the push a stored message owes its recipient is recorded.
    push: PushRoute,
    moderation: Arc<Moderation>,
    limiter: Arc<RateLimiter>,
    /// Object storage for image messages; `None`: images are refused.
    attachments: Option<Arc<dyn Attachments>>,
    /// Whether a pair of users is blocked, cached briefly: every send asks.
    blocks: Mutex<HashMap<(String, String), (bool, Instant)>>,
    /// Users whose id starts with this (the demo's) open threads among
    /// themselves only, and nobody else opens one with them.
    sandbox_prefix: Option<String>,
    /// Whether v1 events are published beside v2's (`mqtt.protocol_v1`).
    v1: bool,
    /// Sends shed when the store has a standing queue.
    admission: Admission,
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

/// Everything a [`ChatService`] works with, each chosen by the caller:
/// there are no defaults to forget to override.
pub struct Deps {
    pub store: Arc<dyn ChatStore>,
    pub membership: Arc<MembershipCache>,
    pub outbound: Arc<dyn Outbound>,
    pub bus: Arc<dyn EventBus>,
    pub limits: Limits,
    /// Who is online: this node's sessions, or shared by every node.
    pub presence: Arc<dyn Presence>,
    /// The deployment's moderation policy and keyword lists.
    pub moderation: Arc<Moderation>,
    /// The deployment's rate limits (shared with the broker and REST).
    pub limiter: Arc<RateLimiter>,
    /// Object storage for image messages; `None`: images are refused.
    pub attachments: Option<Arc<dyn Attachments>>,
    /// Where the push a stored message owes its recipient is recorded.
    pub push: PushRoute,
    /// Users whose id starts with this (the demo's) open threads among
    /// themselves only, and nobody else opens one with them.
    pub sandbox_prefix: Option<String>,
    /// Whether protocol v1 is still spoken: its events published beside
    /// v2's, its publishes handled. `false`: v1 publishes are answered
    /// `unsupported_version`.
    pub protocol_v1: bool,
}

impl ChatService {
    pub fn new(deps: Deps) -> Self {
        ChatService {
            store: deps.store,
            membership: deps.membership,
            outbound: deps.outbound,
            bus: deps.bus,
            limits: deps.limits.clone(),
            presence: deps.presence,
            moderation: deps.moderation,
            limiter: deps.limiter,
            attachments: deps.attachments,
            push: deps.push,
            sandbox_prefix: deps.sandbox_prefix,
            v1: deps.protocol_v1,
            admission: Admission::new(deps.limits.admission()),
            typing_seen: Mutex::new(HashMap::new()),
            last_sender: Mutex::new(HashMap::new()),
            blocks: Mutex::new(HashMap::new()),
        }
    }

    pub fn moderation(&self) -> &Arc<Moderation> {
        &self.moderation
    }

    /// Whether `a` and `b` are on the same side of the sandbox.
    pub(super) fn may_meet(&self, a: &str, b: &str) -> bool {
        match &self.sandbox_prefix {
            Some(prefix) => a.starts_with(prefix.as_str()) == b.starts_with(prefix.as_str()),
            None => true,
        }
    }

    pub fn attachments(&self) -> Option<&Arc<dyn Attachments>> {
        self.attachments.as_ref()
    }

    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// Who is online; the broker reports sessions into it.
    pub fn presence(&self) -> &Arc<dyn Presence> {
        &self.presence
    }

    pub fn membership(&self) -> &Arc<MembershipCache> {
        &self.membership
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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

    pub(super) async fn lang_of(&self, user_id: &str) -> Lang {
        match self.store.user(user_id).await {
            Ok(Some(user)) => Lang::from_locale(Some(&user.locale)),
            _ => Lang::Vi,
        }
    }

    pub(super) async fn emit_to_user(&self, user_id: &str, event: &ServerEvent) {
        self.outbound
            .publish(
                topics::user(user_id),
                chat_protocol::encode(event),
                Qos::AtLeastOnce,
            )
            .await;
    }
}
