//! Threads, their messages and read markers.

use async_trait::async_trait;

use super::*;

/// Threads, their messages and read markers.
#[async_trait]
pub trait Conversations: Send + Sync {
    /// The thread for `key`, if it exists (no creation).
    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>>;

    /// Finds the thread for `spec.key`, creating it if absent. Idempotent,
    /// also under concurrent calls.
    async fn open_thread(&self, spec: &OpenThread) -> StoreResult<Opened>;

    async fn thread(&self, id: &str) -> StoreResult<Option<Thread>>;

    /// `(buyer, seller)` of a thread, for authorisation. Backends that
    /// derive unread counts on read override it with something cheaper
    /// than [`Conversations::thread`].
    async fn participants(&self, id: &str) -> StoreResult<Option<(String, String)>> {
        Ok(self.thread(id).await?.map(|t| (t.buyer_id, t.seller_id)))
    }

    /// Durably stores a message and updates the thread's preview and the
    /// recipient's unread count, all or nothing. Returns only after the
    /// write is durable. A message whose `(thread, from, client_msg_id)`
    /// exists already is not stored again.
    async fn append_message(&self, message: &NewMessage) -> StoreResult<Appended>;

    /// Whether [`Conversations::append_message`] takes its place in the
    /// store's write order when its future is first polled, so that a
    /// connection's next message may be appended before this one commits
    /// and still come after it (`crate::pipeline`). A store without such
    /// an order appends a connection's messages one at a time.
    fn appends_in_order_of_first_poll(&self) -> bool {
        false
    }

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
