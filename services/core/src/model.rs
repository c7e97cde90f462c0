//! Domain records. The wire forms live in `chat_protocol`; these carry what
//! the server needs besides.

use chat_protocol::{Card, Message, MessagePreview, MessageType, ThreadState};
use serde::{Deserialize, Serialize};

/// What the platform tells us about a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub email: Option<String>,
    /// BCP 47 tag; `vi` unless the platform says otherwise.
    pub locale: String,
    /// The account has a shop: buyers may open a chat with it. Only the
    /// platform says so (`PUT /internal/users/{id}` with `"seller": true`);
    /// a token's role says which side a person acts on, not who may be
    /// contacted.
    #[serde(default)]
    pub seller: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub seller_id: String,
    pub title: String,
    pub price: i64,
    pub currency: String,
    pub image_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub buyer_id: String,
    pub seller_id: String,
    pub summary: String,
}

/// Where a device receives push notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePlatform {
    /// Firebase Cloud Messaging (Android, and iOS apps that use FCM).
    Fcm,
    /// Apple Push Notification service.
    Apns,
    /// Web Push (browsers).
    Web,
}

impl DevicePlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            DevicePlatform::Fcm => "fcm",
            DevicePlatform::Apns => "apns",
            DevicePlatform::Web => "web",
        }
    }

    pub fn parse(s: &str) -> Option<DevicePlatform> {
        match s {
            "fcm" => Some(DevicePlatform::Fcm),
            "apns" => Some(DevicePlatform::Apns),
            "web" => Some(DevicePlatform::Web),
            _ => None,
        }
    }
}

/// A push token registered by a user's app. A token belongs to one user
/// at a time: registering it again under another user moves it (the
/// phone changed hands, or another account logged in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub token: String,
    pub user_id: String,
    pub platform: DevicePlatform,
    /// The app's bundle id / FCM app (APNs topic for iOS).
    pub app_id: String,
    /// BCP 47 tag for the notification texts.
    pub locale: String,
    pub updated_at: i64,
}

/// One line of the audit log: who did what to what. Append-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Time-ordered (UUIDv7): the log lists newest first by id.
    pub id: String,
    pub at: i64,
    /// A user id, an admin's id, `system`, or `ip:<address>` for refused
    /// connections without a valid token.
    pub actor: String,
    /// `login_refused`, `message_blocked`, `user_muted`, `block`,
    /// `unblock`, `report`, `moderation_resolved`, `keyword_added`,
    /// `keyword_removed`, `persist_dead_letter`.
    pub action: String,
    /// What it was done to: a user, thread, record or keyword list.
    pub target: String,
    /// Free text (reason, keyword, decision).
    pub detail: String,
}

impl AuditEntry {
    pub fn new(actor: &str, action: &str, target: &str, detail: impl Into<String>) -> Self {
        AuditEntry {
            id: crate::new_id(),
            at: crate::now_millis(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.into(),
        }
    }
}

/// The admin-kept keyword lists of moderation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeywordList {
    /// Messages containing one are refused.
    Block,
    /// Messages containing one are delivered and queued for review.
    Flag,
}

impl KeywordList {
    pub const ALL: [KeywordList; 2] = [KeywordList::Block, KeywordList::Flag];

    /// The stores' and the admin API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeywordList::Block => "block",
            KeywordList::Flag => "flag",
        }
    }

    pub fn parse(s: &str) -> Option<KeywordList> {
        KeywordList::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// Why a moderation record exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModerationKind {
    /// Contact details were masked; kept for the record, not reviewed.
    Masked,
    /// Refused (a blocked keyword or category); nothing was stored.
    Blocked,
    /// Delivered, and queued for review (a flagged keyword or category).
    Flagged,
    /// A participant reported the message or the thread.
    Report,
}

impl ModerationKind {
    /// The stores' and the admin API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ModerationKind::Masked => "masked",
            ModerationKind::Blocked => "blocked",
            ModerationKind::Flagged => "flagged",
            ModerationKind::Report => "report",
        }
    }

    /// A stored kind; anything unknown reads as `Flagged`, so that an
    /// admin still sees it in the queue.
    pub fn from_stored(s: &str) -> ModerationKind {
        match s {
            "masked" => ModerationKind::Masked,
            "blocked" => ModerationKind::Blocked,
            "report" => ModerationKind::Report,
            _ => ModerationKind::Flagged,
        }
    }
}

/// What moderation did to one message (or a report about one), kept for
/// support staff with the original text. `masked` records are kept for the
/// record only; `blocked`, `flagged` and `report` ones wait in the review
/// queue until an admin resolves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationRecord {
    /// Time-ordered (UUIDv7).
    pub id: String,
    pub thread_id: String,
    /// Who sent the message (for a report: whose message is reported).
    pub user_id: String,
    /// The stored message, when there is one (not for blocked messages).
    pub message_id: Option<String>,
    pub kind: ModerationKind,
    /// Finding categories (`phone`, `keyword`, …) or the report's reason.
    pub categories: Vec<String>,
    /// The text as sent: only here, never delivered.
    pub original: String,
    /// Keywords that matched, if any.
    pub keywords: Vec<String>,
    /// Who filed it: the sender's id for automatic records, the reporter's
    /// for reports.
    pub reported_by: Option<String>,
    pub needs_review: bool,
    /// Set once an admin resolved it: the decision and who took it.
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub created_at: i64,
}

/// One attempt to notify a user, for support staff (`GET
/// /admin/notifications`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationAttempt {
    /// Time-ordered (UUIDv7), so the log lists newest first by id.
    pub id: String,
    pub user_id: String,
    pub thread_id: String,
    pub message_id: String,
    pub channel: NotifyChannel,
    /// The device token's last characters (never the whole token).
    pub device: String,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub at: i64,
}

/// How a notification went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyChannel {
    Fcm,
    /// A browser's push subscription, sent through FCM.
    Web,
    Apns,
    Email,
}

impl NotifyChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyChannel::Fcm => "fcm",
            NotifyChannel::Web => "web",
            NotifyChannel::Apns => "apns",
            NotifyChannel::Email => "email",
        }
    }

    /// The channel of a device's pushes.
    pub fn of(platform: DevicePlatform) -> NotifyChannel {
        match platform {
            DevicePlatform::Fcm => NotifyChannel::Fcm,
            DevicePlatform::Web => NotifyChannel::Web,
            DevicePlatform::Apns => NotifyChannel::Apns,
        }
    }

    /// A stored channel; anything unknown reads as `Email` (the log is for
    /// people: the row stays readable).
    pub fn from_stored(s: &str) -> NotifyChannel {
        match s {
            "fcm" => NotifyChannel::Fcm,
            "web" => NotifyChannel::Web,
            "apns" => NotifyChannel::Apns,
            _ => NotifyChannel::Email,
        }
    }
}

/// What one notification attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Sent,
    /// The device token no longer exists: it was pruned.
    TokenGone,
    /// A transient failure: tried again later.
    Retry,
    /// The provider refused this notification for good.
    Rejected,
    /// A failure the provider did not classify.
    Error,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Sent => "sent",
            AttemptOutcome::TokenGone => "token_gone",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::Error => "error",
        }
    }

    /// A stored outcome; anything unknown reads as `Error`.
    pub fn from_stored(s: &str) -> AttemptOutcome {
        match s {
            "sent" => AttemptOutcome::Sent,
            "token_gone" => AttemptOutcome::TokenGone,
            "retry" => AttemptOutcome::Retry,
            "rejected" => AttemptOutcome::Rejected,
            _ => AttemptOutcome::Error,
        }
    }
}

/// Which "notified up to" mark: one per push device, one for e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MarkChannel {
    Email,
    Push { token: String },
}

impl MarkChannel {
    /// The stores' key: `email`, or `push:<token>`.
    pub fn key(&self) -> String {
        match self {
            MarkChannel::Email => "email".to_owned(),
            MarkChannel::Push { token } => format!("push:{token}"),
        }
    }
}

/// Which side of a thread a user is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buyer,
    Seller,
}

/// Unread counts stop here; clients show it as "99+". Counting a backlog
/// exactly would cost ScyllaDB a read of the whole backlog per message.
pub const UNREAD_CAP: u32 = 100;

/// A 1-1 thread between a buyer and a seller: either the general thread of
/// the pair or the thread of one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub id: String,
    pub buyer_id: String,
    pub seller_id: String,
    /// Product most recently discussed (general threads).
    pub product_id: Option<String>,
    /// Set for order threads.
    pub order_id: Option<String>,
    pub last_message: Option<MessagePreview>,
    pub last_message_at: Option<i64>,
    pub unread_buyer: u32,
    pub unread_seller: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Thread {
    pub fn side_of(&self, user_id: &str) -> Option<Side> {
        if self.buyer_id == user_id {
            Some(Side::Buyer)
        } else if self.seller_id == user_id {
            Some(Side::Seller)
        } else {
            None
        }
    }

    pub fn is_participant(&self, user_id: &str) -> bool {
        self.side_of(user_id).is_some()
    }

    /// The participant who is not `user_id`.
    pub fn other_participant(&self, user_id: &str) -> &str {
        if self.buyer_id == user_id {
            &self.seller_id
        } else {
            &self.buyer_id
        }
    }

    pub fn unread_for(&self, user_id: &str) -> u32 {
        match self.side_of(user_id) {
            Some(Side::Buyer) => self.unread_buyer,
            Some(Side::Seller) => self.unread_seller,
            None => 0,
        }
    }

    /// Time used to order an inbox: last message, or creation.
    pub fn activity_at(&self) -> i64 {
        self.last_message_at.unwrap_or(self.created_at)
    }

    pub fn state(&self) -> ThreadState {
        ThreadState {
            thread_id: self.id.clone(),
            buyer_id: self.buyer_id.clone(),
            seller_id: self.seller_id.clone(),
            product_id: self.product_id.clone(),
            order_id: self.order_id.clone(),
            last_message: self.last_message.clone(),
            last_message_at: self.last_message_at,
            unread_buyer: self.unread_buyer,
            unread_seller: self.unread_seller,
        }
    }
}

/// How a thread is found again: one per (buyer, seller) pair, one per order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadKey {
    Pair { buyer_id: String, seller_id: String },
    Order { order_id: String },
}

/// A request to find or create a thread.
#[derive(Debug, Clone)]
pub struct OpenThread {
    pub key: ThreadKey,
    pub buyer_id: String,
    pub seller_id: String,
}

/// A message about to be stored; the store assigns nothing, the service
/// has already chosen id and time so that a retry can be recognised.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub thread_id: String,
    /// Empty for system messages.
    pub from: String,
    pub kind: MessageType,
    pub content: String,
    pub card: Option<Card>,
    pub client_msg_id: Option<String>,
    pub created_at: i64,
    /// For product cards: the thread's product context becomes this.
    pub sets_product: Option<String>,
    /// The append itself records the push this message owes its recipient,
    /// in the same transaction (the SQLite outbox). Set by `ChatService`,
    /// which decides where every obligation goes; a store without an outbox
    /// refuses such a message rather than drop the obligation.
    pub owes_push: bool,
}

impl NewMessage {
    pub fn into_message(self) -> Message {
        Message {
            id: self.id,
            thread_id: self.thread_id,
            from: self.from,
            kind: self.kind,
            content: self.content,
            card: self.card,
            client_msg_id: self.client_msg_id,
            created_at: self.created_at,
        }
    }

    /// Whether the message counts towards the recipient's unread count.
    pub fn counts_as_unread(&self) -> bool {
        self.kind != MessageType::System
    }
}

/// The preview line an inbox shows for a message.
pub fn preview_of(message: &Message) -> MessagePreview {
    let text = match (&message.kind, &message.card) {
        (MessageType::System, Some(Card::Product { title, .. })) => title.clone(),
        (MessageType::System, Some(Card::Order { summary, .. })) => summary.clone(),
        (MessageType::System, Some(Card::Notice { text, .. })) => text.clone(),
        (MessageType::Image, _) => "[image]".to_owned(),
        _ => message.content.clone(),
    };
    MessagePreview {
        message_id: message.id.clone(),
        from: message.from.clone(),
        kind: message.kind,
        text: chat_protocol::preview_text(&text),
        created_at: message.created_at,
    }
}

/// How far a participant has read a thread: every message with an id up
/// to and including `up_to`. Markers only move forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMarker {
    pub user_id: String,
    /// Id of the newest message the user has read.
    pub up_to: String,
    /// When the marker last moved (milliseconds since the epoch).
    pub read_at: i64,
}

/// Keyset bounds for a page of history. Both bounds are exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageRange {
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Position in an inbox listing: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxCursor {
    pub activity_at: i64,
    pub thread_id: String,
}

impl InboxCursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.activity_at, self.thread_id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('_')?;
        Some(InboxCursor {
            activity_at: at.parse().ok()?,
            thread_id: id.to_owned(),
        })
    }
}
