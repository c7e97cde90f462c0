//! The store in memory: every role behind one mutex, nothing durable. For
//! tests of the domain (a [`crate::service::ChatService`] without a
//! database) and for tools that want a throwaway store.
//!
//! It answers exactly as the SQLite backend (`chat-store`) does, down to
//! which calls give `NotFound("thread")` and which keys are compared as
//! strings; `contract_tests!` runs the same checks against both. Ids are
//! compared as strings throughout, as SQLite's `BINARY` collation does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use async_trait::async_trait;
use chat_protocol::{Message, MessageType};
use parking_lot::Mutex;

use super::*;
use crate::model::{Side, UNREAD_CAP, preview_of};

/// Messages imported in one go, as SQLite commits them (one transaction
/// per chunk: a failing chunk leaves the earlier ones stored).
const IMPORT_CHUNK: usize = 5_000;

/// Every role of [`ChatStore`], in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// How long each append takes at least: a slow store, for tests of
    /// what waits on one.
    append_delay: Mutex<std::time::Duration>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Makes every append take at least `delay` from now on.
    pub fn slow_appends(&self, delay: std::time::Duration) {
        *self.append_delay.lock() = delay;
    }
}

#[derive(Default)]
struct State {
    users: HashMap<String, User>,
    products: HashMap<String, Product>,
    orders: HashMap<String, Order>,
    threads: HashMap<String, ThreadRow>,
    /// The general thread of a `(buyer, seller)` pair, by [`pair_key`].
    pairs: HashMap<String, String>,
    /// The thread of an order, by order id.
    order_threads: HashMap<String, String>,
    /// Every stored message id, of whichever thread: ids are unique in
    /// the whole store (SQLite's primary key).
    message_ids: HashSet<String>,
    /// By token: one owner per token.
    devices: BTreeMap<String, Device>,
    /// By id (time-ordered).
    notifications: BTreeMap<String, NotificationAttempt>,
    /// `(user, thread, channel)` → message id.
    notified: HashMap<(String, String, String), String>,
    /// By id (time-ordered).
    moderation: BTreeMap<String, ModerationRecord>,
    /// `(list, keyword)`.
    keywords: BTreeSet<(KeywordList, String)>,
    /// `(blocker, blocked)`.
    blocks: BTreeSet<(String, String)>,
    /// By id (time-ordered).
    audit: BTreeMap<String, AuditEntry>,
    /// By id, with the order they were created in (SQLite's rowid, which
    /// breaks ties between uploads of the same millisecond).
    uploads: HashMap<String, (u64, Upload)>,
    next_upload: u64,
}

struct ThreadRow {
    thread: Thread,
    /// Id of the message the preview shows: only a newer one replaces it.
    last_message_id: Option<String>,
    /// By id: oldest first.
    messages: BTreeMap<String, Message>,
    /// `(from, client_msg_id)` → message id.
    idempotency: HashMap<(String, String), String>,
    /// By participant.
    markers: HashMap<String, ReadMarker>,
}

fn pair_key(buyer_id: &str, seller_id: &str) -> String {
    // `/` cannot occur in ids, so the key is unambiguous.
    format!("{buyer_id}/{seller_id}")
}

impl State {
    fn thread_id_of(&self, key: &ThreadKey) -> Option<&String> {
        match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => self.pairs.get(&pair_key(buyer_id, seller_id)),
            ThreadKey::Order { order_id } => self.order_threads.get(order_id),
        }
    }

    fn open_thread(&mut self, spec: &OpenThread) -> Opened {
        if let Some(row) = self
            .thread_id_of(&spec.key)
            .and_then(|id| self.threads.get(id))
        {
            return Opened {
                thread: row.thread.clone(),
                created: false,
            };
        }
        let id = crate::new_id();
        let now = crate::now_millis();
        let order_id = match &spec.key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => {
                self.pairs.insert(pair_key(buyer_id, seller_id), id.clone());
                None
            }
            ThreadKey::Order { order_id } => {
                self.order_threads.insert(order_id.clone(), id.clone());
                Some(order_id.clone())
            }
        };
        let thread = Thread {
            id: id.clone(),
            buyer_id: spec.buyer_id.clone(),
            seller_id: spec.seller_id.clone(),
            product_id: None,
            order_id,
            last_message: None,
            last_message_at: None,
            unread_buyer: 0,
            unread_seller: 0,
            created_at: now,
            updated_at: now,
        };
        self.threads.insert(
            id,
            ThreadRow {
                thread: thread.clone(),
                last_message_id: None,
                messages: BTreeMap::new(),
                idempotency: HashMap::new(),
                markers: HashMap::new(),
            },
        );
        Opened {
            thread,
            created: true,
        }
    }

    /// SQLite's `append_in`: the message, the preview if it is the newest,
    /// both unread counts, the sender's read marker; or the earlier
    /// message under the same key.
    fn append(&mut self, m: &NewMessage) -> StoreResult<Appended> {
        let row = self
            .threads
            .get_mut(&m.thread_id)
            .ok_or(StoreError::NotFound("thread"))?;
        if let Some(client_msg_id) = &m.client_msg_id
            && let Some(id) = row
                .idempotency
                .get(&(m.from.clone(), client_msg_id.clone()))
        {
            return Ok(Appended {
                message: row.messages[id].clone(),
                thread: row.thread.clone(),
                duplicate: true,
            });
        }
        if self.message_ids.contains(&m.id) {
            // SQLite reports every constraint violation of this insert
            // (the missing thread's foreign key, a taken id) alike.
            return Err(StoreError::NotFound("thread"));
        }
        let message = m.clone().into_message();
        self.message_ids.insert(m.id.clone());
        if let Some(client_msg_id) = &m.client_msg_id {
            row.idempotency
                .insert((m.from.clone(), client_msg_id.clone()), m.id.clone());
        }
        row.messages.insert(m.id.clone(), message.clone());

        // Writes can land out of id order: the preview stays on the newest.
        let newest = row.last_message_id.as_ref().is_none_or(|last| m.id > *last);
        let counts = u32::from(m.counts_as_unread());
        let t = &mut row.thread;
        if newest {
            t.last_message = Some(preview_of(&message));
            t.last_message_at = Some(m.created_at);
            row.last_message_id = Some(m.id.clone());
        }
        t.unread_buyer = if t.buyer_id == m.from {
            0
        } else {
            let add = counts * u32::from(t.seller_id == m.from);
            t.unread_buyer.saturating_add(add).min(UNREAD_CAP)
        };
        t.unread_seller = if t.seller_id == m.from {
            0
        } else {
            let add = counts * u32::from(t.buyer_id == m.from);
            t.unread_seller.saturating_add(add).min(UNREAD_CAP)
        };
        if let Some(product_id) = &m.sets_product {
            t.product_id = Some(product_id.clone());
        }
        t.updated_at = m.created_at;
        let thread = t.clone();
        if thread.is_participant(&m.from) {
            // Answering a thread means having read it.
            let moves = row
                .markers
                .get(&m.from)
                .is_none_or(|marker| m.id > marker.up_to);
            if moves {
                row.markers.insert(
                    m.from.clone(),
                    ReadMarker {
                        user_id: m.from.clone(),
                        up_to: m.id.clone(),
                        read_at: m.created_at,
                    },
                );
            }
        }
        Ok(Appended {
            message,
            thread,
            duplicate: false,
        })
    }

    /// SQLite's `import_in`, for one chunk: all of it or nothing.
    fn import(&mut self, thread_id: &str, messages: &[Message]) -> StoreResult<()> {
        let row = self
            .threads
            .get_mut(thread_id)
            .ok_or(StoreError::NotFound("thread"))?;
        if let Some(m) = messages.iter().find(|m| m.thread_id != thread_id) {
            return Err(StoreError::refused(
                Backend::Memory,
                format!("message {} is not of thread {thread_id}", m.id),
            ));
        }
        for m in messages {
            // `INSERT OR IGNORE`: a taken id or idempotency key is skipped.
            let key = m.client_msg_id.clone().map(|c| (m.from.clone(), c));
            if self.message_ids.contains(&m.id)
                || key
                    .as_ref()
                    .is_some_and(|k| row.idempotency.contains_key(k))
            {
                continue;
            }
            self.message_ids.insert(m.id.clone());
            if let Some(key) = key {
                row.idempotency.insert(key, m.id.clone());
            }
            row.messages.insert(m.id.clone(), m.clone());
        }
        if let Some(newest) = messages.iter().max_by(|a, b| a.id.cmp(&b.id))
            && row
                .last_message_id
                .as_ref()
                .is_none_or(|last| *last < newest.id)
        {
            let t = &mut row.thread;
            t.last_message = Some(preview_of(newest));
            t.last_message_at = Some(newest.created_at);
            t.updated_at = newest.created_at;
            row.last_message_id = Some(newest.id.clone());
        }
        Ok(())
    }

    /// SQLite's `mark_read_in`.
    fn mark_read(
        &mut self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
    ) -> StoreResult<ReadMarked> {
        let row = self
            .threads
            .get_mut(thread_id)
            .ok_or(StoreError::NotFound("thread"))?;
        let side = row
            .thread
            .side_of(user_id)
            .ok_or(StoreError::NotFound("thread"))?;
        if !row.messages.contains_key(up_to) {
            return Err(StoreError::NotFound("message"));
        }
        let current = row.markers.get(user_id).map(|m| m.up_to.clone());
        let moved = current.as_deref().is_none_or(|c| up_to > c);
        let marker = if moved {
            up_to.to_owned()
        } else {
            current.unwrap_or_default()
        };
        let unread = row
            .messages
            .range::<str, _>((Bound::Excluded(marker.as_str()), Bound::Unbounded))
            .filter(|(_, m)| m.from != user_id && m.kind != MessageType::System)
            .take(UNREAD_CAP as usize)
            .count() as u32;
        match side {
            Side::Buyer => row.thread.unread_buyer = unread,
            Side::Seller => row.thread.unread_seller = unread,
        }
        if moved {
            row.markers.insert(
                user_id.to_owned(),
                ReadMarker {
                    user_id: user_id.to_owned(),
                    up_to: marker.clone(),
                    read_at: crate::now_millis(),
                },
            );
        }
        Ok(ReadMarked {
            thread: row.thread.clone(),
            up_to: marker,
            moved,
        })
    }

    /// SQLite's `threads_of`: keyset on `(activity_at, id)`, newest first.
    fn threads_of(&self, user_id: &str, cursor: Option<&InboxCursor>, limit: usize) -> Vec<Thread> {
        let (at, id) = match cursor {
            Some(c) => (c.activity_at, c.thread_id.as_str()),
            // Sorts after every UUID, so the first page starts at the top.
            None => (i64::MAX, "~"),
        };
        // `activity_at` is the last message's time, or the creation's.
        let mut threads: Vec<&Thread> = self
            .threads
            .values()
            .map(|row| &row.thread)
            .filter(|t| t.buyer_id == user_id || t.seller_id == user_id)
            .filter(|t| (t.activity_at(), t.id.as_str()) < (at, id))
            .collect();
        threads.sort_unstable_by(|a, b| (b.activity_at(), &b.id).cmp(&(a.activity_at(), &a.id)));
        threads.into_iter().take(limit).cloned().collect()
    }

    /// SQLite's `messages`: oldest first, the page right after `after`
    /// when only it is given, else the page ending right before `before`
    /// (or at the newest).
    fn messages(&self, thread_id: &str, range: &MessageRange, limit: usize) -> Vec<Message> {
        let Some(row) = self.threads.get(thread_id) else {
            return Vec::new();
        };
        fn bound(id: &Option<String>) -> Bound<&str> {
            id.as_deref().map_or(Bound::Unbounded, Bound::Excluded)
        }
        let (lower, upper) = (bound(&range.after), bound(&range.before));
        if let (Some(after), Some(before)) = (&range.after, &range.before)
            && after >= before
        {
            // An empty range (which `BTreeMap::range` would refuse).
            return Vec::new();
        }
        let within = row.messages.range::<str, _>((lower, upper));
        if range.after.is_some() && range.before.is_none() {
            within.take(limit).map(|(_, m)| m.clone()).collect()
        } else {
            let mut page: Vec<Message> = within.rev().take(limit).map(|(_, m)| m.clone()).collect();
            page.reverse();
            page
        }
    }
}

#[async_trait]
impl Directory for MemoryStore {
    async fn put_user(&self, user: &User) -> StoreResult<()> {
        let mut state = self.state.lock();
        state.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.state.lock().users.get(id).cloned())
    }

    async fn put_product(&self, product: &Product) -> StoreResult<()> {
        let mut state = self.state.lock();
        state.products.insert(product.id.clone(), product.clone());
        Ok(())
    }

    async fn product(&self, id: &str) -> StoreResult<Option<Product>> {
        Ok(self.state.lock().products.get(id).cloned())
    }

    async fn put_order(&self, order: &Order) -> StoreResult<()> {
        let mut state = self.state.lock();
        state.orders.insert(order.id.clone(), order.clone());
        Ok(())
    }

    async fn order(&self, id: &str) -> StoreResult<Option<Order>> {
        Ok(self.state.lock().orders.get(id).cloned())
    }
}

#[async_trait]
impl Conversations for MemoryStore {
    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>> {
        Ok(self.state.lock().thread_id_of(key).cloned())
    }

    async fn open_thread(&self, spec: &OpenThread) -> StoreResult<Opened> {
        Ok(self.state.lock().open_thread(spec))
    }

    async fn thread(&self, id: &str) -> StoreResult<Option<Thread>> {
        Ok(self
            .state
            .lock()
            .threads
            .get(id)
            .map(|row| row.thread.clone()))
    }

    /// Every append completes when first polled.
    fn appends_in_order_of_first_poll(&self) -> bool {
        true
    }

    async fn append_message(&self, message: &NewMessage) -> StoreResult<Appended> {
        let delay = *self.append_delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if message.owes_push {
            // No outbox here: refuse rather than drop the obligation.
            return Err(StoreError::refused(
                Backend::Memory,
                "the memory store keeps no notification outbox",
            ));
        }
        self.state.lock().append(message)
    }

    async fn import_history(&self, thread_id: &str, messages: &[Message]) -> StoreResult<()> {
        // An empty import still reports a missing thread.
        let chunks: Vec<&[Message]> = if messages.is_empty() {
            vec![&[]]
        } else {
            messages.chunks(IMPORT_CHUNK).collect()
        };
        for chunk in chunks {
            self.state.lock().import(thread_id, chunk)?;
        }
        Ok(())
    }

    async fn mark_read(
        &self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
    ) -> StoreResult<ReadMarked> {
        self.state.lock().mark_read(thread_id, user_id, up_to)
    }

    async fn read_markers(&self, thread_id: &str) -> StoreResult<Vec<ReadMarker>> {
        Ok(self
            .state
            .lock()
            .threads
            .get(thread_id)
            .map(|row| row.markers.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn threads_of(
        &self,
        user_id: &str,
        cursor: Option<&InboxCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Thread>> {
        Ok(self.state.lock().threads_of(user_id, cursor, limit))
    }

    async fn messages(
        &self,
        thread_id: &str,
        range: &MessageRange,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        Ok(self.state.lock().messages(thread_id, range, limit))
    }
}

#[async_trait]
impl Devices for MemoryStore {
    async fn put_device(&self, device: &Device) -> StoreResult<()> {
        let mut state = self.state.lock();
        state.devices.insert(device.token.clone(), device.clone());
        Ok(())
    }

    async fn devices_of(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        Ok(self
            .state
            .lock()
            .devices
            .values()
            .filter(|d| d.user_id == user_id)
            .cloned()
            .collect())
    }

    async fn delete_device(&self, user_id: &str, token: &str) -> StoreResult<bool> {
        let mut state = self.state.lock();
        if state
            .devices
            .get(token)
            .is_some_and(|d| d.user_id == user_id)
        {
            state.devices.remove(token);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn prune_device(&self, token: &str) -> StoreResult<()> {
        self.state.lock().devices.remove(token);
        Ok(())
    }

    async fn log_notification(&self, attempt: &NotificationAttempt) -> StoreResult<()> {
        let mut state = self.state.lock();
        state
            .notifications
            .entry(attempt.id.clone())
            .or_insert_with(|| attempt.clone());
        Ok(())
    }

    async fn notifications_of(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<NotificationAttempt>> {
        Ok(self
            .state
            .lock()
            .notifications
            .values()
            .rev()
            .filter(|a| a.user_id == user_id)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &crate::model::MarkChannel,
    ) -> StoreResult<Option<String>> {
        let key = (user_id.to_owned(), thread_id.to_owned(), channel.key());
        Ok(self.state.lock().notified.get(&key).cloned())
    }

    async fn set_notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &crate::model::MarkChannel,
        message_id: &str,
    ) -> StoreResult<()> {
        let key = (user_id.to_owned(), thread_id.to_owned(), channel.key());
        let mut state = self.state.lock();
        // Never back: a late worker may finish an older job.
        match state.notified.get_mut(&key) {
            Some(mark) if message_id > mark.as_str() => *mark = message_id.to_owned(),
            Some(_) => {}
            None => {
                state.notified.insert(key, message_id.to_owned());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Safety for MemoryStore {
    async fn record_moderation(&self, record: &ModerationRecord) -> StoreResult<()> {
        let mut state = self.state.lock();
        state
            .moderation
            .entry(record.id.clone())
            .or_insert_with(|| record.clone());
        Ok(())
    }

    async fn moderation_record(&self, id: &str) -> StoreResult<Option<ModerationRecord>> {
        Ok(self.state.lock().moderation.get(id).cloned())
    }

    async fn moderation_queue(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ModerationRecord>> {
        let after = after.unwrap_or("");
        Ok(self
            .state
            .lock()
            .moderation
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| r.needs_review && r.resolution.is_none())
            .take(limit)
            .cloned()
            .collect())
    }

    async fn resolve_moderation(
        &self,
        id: &str,
        resolution: &str,
        by: &str,
        at: i64,
    ) -> StoreResult<bool> {
        let mut state = self.state.lock();
        match state.moderation.get_mut(id) {
            Some(r) if r.needs_review && r.resolution.is_none() => {
                r.resolution = Some(resolution.to_owned());
                r.resolved_by = Some(by.to_owned());
                r.resolved_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn keywords(&self) -> StoreResult<Vec<(KeywordList, String)>> {
        Ok(self.state.lock().keywords.iter().cloned().collect())
    }

    async fn set_keyword(
        &self,
        list: KeywordList,
        keyword: &str,
        present: bool,
    ) -> StoreResult<()> {
        let entry = (list, keyword.to_owned());
        let mut state = self.state.lock();
        if present {
            state.keywords.insert(entry);
        } else {
            state.keywords.remove(&entry);
        }
        Ok(())
    }

    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()> {
        let entry = (blocker.to_owned(), blocked.to_owned());
        let mut state = self.state.lock();
        if on {
            state.blocks.insert(entry);
        } else {
            state.blocks.remove(&entry);
        }
        Ok(())
    }

    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>> {
        let state = self.state.lock();
        let mut blockers = Vec::new();
        if state.blocks.contains(&(a.to_owned(), b.to_owned())) {
            blockers.push(a.to_owned());
        }
        // One row when a user is asked about themself.
        if a != b && state.blocks.contains(&(b.to_owned(), a.to_owned())) {
            blockers.push(b.to_owned());
        }
        blockers.sort();
        Ok(blockers)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut state = self.state.lock();
        state
            .audit
            .entry(entry.id.clone())
            .or_insert_with(|| entry.clone());
        Ok(())
    }

    async fn audit_log(
        &self,
        actor: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        // Ids are UUIDv7 text: "~" sorts after every one of them.
        let before = before.unwrap_or("~");
        Ok(self
            .state
            .lock()
            .audit
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(before)))
            .rev()
            .map(|(_, e)| e)
            .filter(|e| actor.is_none_or(|actor| e.actor == actor))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Uploads for MemoryStore {
    async fn create_upload(&self, upload: &Upload) -> StoreResult<()> {
        let mut state = self.state.lock();
        if state.uploads.contains_key(&upload.id) {
            return Err(StoreError::Exists("upload"));
        }
        let seq = state.next_upload;
        state.next_upload += 1;
        state
            .uploads
            .insert(upload.id.clone(), (seq, upload.clone()));
        Ok(())
    }

    async fn upload(&self, id: &str) -> StoreResult<Option<Upload>> {
        Ok(self.state.lock().uploads.get(id).map(|(_, u)| u.clone()))
    }

    async fn finish_upload(
        &self,
        id: &str,
        status: crate::attachments::UploadStatus,
        card: Option<&str>,
    ) -> StoreResult<bool> {
        let mut state = self.state.lock();
        match state.uploads.get_mut(id) {
            Some((_, u)) if u.status == crate::attachments::UploadStatus::Pending => {
                u.status = status;
                u.card = card.map(str::to_owned);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<Upload>> {
        let state = self.state.lock();
        let mut stale: Vec<&(u64, Upload)> = state
            .uploads
            .values()
            .filter(|(_, u)| {
                u.status == crate::attachments::UploadStatus::Pending && u.created_at < before
            })
            .collect();
        stale.sort_unstable_by_key(|(seq, u)| (u.created_at, *seq));
        Ok(stale
            .into_iter()
            .take(limit)
            .map(|(_, u)| u.clone())
            .collect())
    }
}

#[async_trait]
impl ChatStore for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod contract {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::store::ChatStore;

    fn fresh() -> ((), Arc<dyn ChatStore>) {
        ((), Arc::new(MemoryStore::new()))
    }

    // Nothing here is partitioned by date: the dated check runs against
    // a plain store, as for SQLite.
    crate::contract_tests!(fresh(), dated = |_clock| fresh(), long_history = 50_000);
}
