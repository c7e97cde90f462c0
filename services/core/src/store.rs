//! The storage contract. Shaped for both SQLite (one file) and ScyllaDB
//! (partitioned): time-ordered ids chosen by the caller, keyset ranges
//! instead of offsets, and no operation that needs a transaction across
//! threads.

use async_trait::async_trait;
use chat_protocol::Message;

use crate::attachments::Upload;
use crate::model::{
    AuditEntry, Device, InboxCursor, MessageRange, ModerationRecord, NewMessage,
    NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey, User,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Result of [`ChatStore::open_thread`].
#[derive(Debug, Clone)]
pub struct Opened {
    pub thread: Thread,
    pub created: bool,
}

/// Result of [`ChatStore::append_message`].
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored message: the new one, or the one stored earlier under the
    /// same `(thread, sender, client_msg_id)`.
    pub message: Message,
    pub thread: Thread,
    /// True when nothing was written because the message already existed.
    pub duplicate: bool,
}

/// Result of [`ChatStore::mark_read`].
#[derive(Debug, Clone)]
pub struct ReadMarked {
    pub thread: Thread,
    /// The reader's marker after the call (never moves backwards).
    pub up_to: String,
    /// False when the marker was already at or past the requested message.
    pub moved: bool,
}

#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// A cheap round trip that proves the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    async fn put_user(&self, user: &User) -> StoreResult<()>;
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    async fn put_product(&self, product: &Product) -> StoreResult<()>;
    async fn product(&self, id: &str) -> StoreResult<Option<Product>>;
    async fn put_order(&self, order: &Order) -> StoreResult<()>;
    async fn order(&self, id: &str) -> StoreResult<Option<Order>>;

    /// Registers (or refreshes) a push token for `device.user_id`, taking
    /// it from any other user it was registered to.
    async fn put_device(&self, device: &Device) -> StoreResult<()>;
    /// The user's registered devices.
    async fn devices_of(&self, user_id: &str) -> StoreResult<Vec<Device>>;
    /// Removes `token` if it is registered to `user_id`; false otherwise.
    async fn delete_device(&self, user_id: &str, token: &str) -> StoreResult<bool>;
    /// Removes `token` whoever holds it (tokens FCM/APNs reject).
    async fn prune_device(&self, token: &str) -> StoreResult<()>;

    /// Appends to the notification log (kept 30 days on ScyllaDB).
    async fn log_notification(&self, attempt: &NotificationAttempt) -> StoreResult<()>;
    /// A user's latest notification attempts, newest first.
    async fn notifications_of(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<NotificationAttempt>>;

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
    /// Records an upload slot.
    async fn create_upload(&self, upload: &Upload) -> StoreResult<()>;
    async fn upload(&self, id: &str) -> StoreResult<Option<Upload>>;
    /// Moves a `pending` upload to `status` (`used` with its image card,
    /// `rejected`, `expired`); false if it was not pending.
    async fn finish_upload(&self, id: &str, status: &str, card: Option<&str>) -> StoreResult<bool>;
    /// Uploads still pending that were created before `before` (ms).
    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<Upload>>;

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

    /// `blocker` blocks (`on`) or unblocks `blocked`.
    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()>;
    /// Which of `a` and `b` blocked the other (none, one or both).
    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>>;

    /// The admin keyword lists: `(list, keyword)` with list `block`/`flag`.
    async fn keywords(&self) -> StoreResult<Vec<(String, String)>>;
    /// Adds (`present`) or removes a keyword of a list.
    async fn set_keyword(&self, list: &str, keyword: &str, present: bool) -> StoreResult<()>;

    /// The newest message of `thread_id` that `user_id` was notified about
    /// on `channel` (`email`, or `push:<token>`): the deduplication mark
    /// of the at-least-once notification queue.
    async fn notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &str,
    ) -> StoreResult<Option<String>>;
    /// Moves that mark forward to `message_id` (never back).
    async fn set_notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &str,
        message_id: &str,
    ) -> StoreResult<()>;

    /// The thread for `key`, if it exists (no creation).
    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>>;

    /// Finds the thread for `spec.key`, creating it if absent. Idempotent,
    /// also under concurrent calls.
    async fn open_thread(&self, spec: &OpenThread) -> StoreResult<Opened>;
    async fn thread(&self, id: &str) -> StoreResult<Option<Thread>>;

    /// `(buyer, seller)` of a thread, for authorisation. Backends that
    /// derive unread counts on read override it with something cheaper
    /// than [`ChatStore::thread`].
    async fn participants(&self, id: &str) -> StoreResult<Option<(String, String)>> {
        Ok(self.thread(id).await?.map(|t| (t.buyer_id, t.seller_id)))
    }

    /// Durably stores a message and updates the thread's preview and the
    /// recipient's unread count, all or nothing. Returns only after the
    /// write is durable. A message whose `(thread, from, client_msg_id)`
    /// exists already is not stored again.
    async fn append_message(&self, message: &NewMessage) -> StoreResult<Appended>;

    /// Bulk-loads history that happened elsewhere (migrating from another
    /// chat system; seeding benchmarks): stores `messages`, all of thread
    /// `thread_id`, as they are, and moves the thread's preview to the
    /// newest. No idempotency keys, unread counting or events; importing
    /// the same messages again changes nothing.
    async fn import_history(&self, thread_id: &str, messages: &[Message]) -> StoreResult<()>;

    /// Moves `user_id`'s read marker forward to `up_to` (a message of the
    /// thread) and recomputes that user's unread count.
    async fn mark_read(
        &self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
    ) -> StoreResult<ReadMarked>;

    /// The read markers of a thread (at most one per participant; none for
    /// a participant who has neither read nor sent anything), in no
    /// particular order. An unknown thread has none.
    async fn read_markers(&self, thread_id: &str) -> StoreResult<Vec<ReadMarker>>;

    /// A user's threads, most recent activity first, after `cursor`.
    async fn threads_of(
        &self,
        user_id: &str,
        cursor: Option<&InboxCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Thread>>;

    /// Up to `limit` messages of a thread within `range`, oldest first.
    /// With only `after`, the page starts right after it; otherwise the
    /// page ends right before `before` (or at the newest message).
    async fn messages(
        &self,
        thread_id: &str,
        range: &MessageRange,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;
}
