//! ScyllaDB: the `Conversations` role of the store, with its prepared statements
//! beside the queries that bind them, so a CQL text and its values change
//! together.

use async_trait::async_trait;
use chat_core::store::Conversations;

use super::*;

/// Prepared once when the store opens.
pub(super) struct Statements {
    get_thread: PreparedStatement,
    create_thread: PreparedStatement,
    pair_thread: PreparedStatement,
    claim_pair: PreparedStatement,
    order_thread: PreparedStatement,
    claim_order: PreparedStatement,
    claim_key: PreparedStatement,
    get_key: PreparedStatement,
    insert_message: PreparedStatement,
    set_last_message: PreparedStatement,
    set_product: PreparedStatement,
    insert_inbox: PreparedStatement,
    delete_inbox: PreparedStatement,
    move_inbox: Batch,
    set_marker: PreparedStatement,
    get_markers: PreparedStatement,
    list_markers: PreparedStatement,
    message_exists: PreparedStatement,
    page_newest: PreparedStatement,
    page_before: PreparedStatement,
    page_between: PreparedStatement,
    page_after: PreparedStatement,
    unread_scan: PreparedStatement,
    inbox_first: PreparedStatement,
    inbox_after: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(prepare: &Prepare<'_>) -> StoreResult<Statements> {
        let ks = prepare.keyspace;
        let page = |bounds: &str, order: &str| {
            format!(
                "SELECT body FROM {ks}.messages WHERE thread_id = ? AND bucket = ? {bounds} \
                 ORDER BY id {order} LIMIT ?"
            )
        };
        let insert_inbox = prepare.cql(format!("INSERT INTO {ks}.inbox (user_id, activity_at, thread_id, last_message) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"), true).await?;
        let delete_inbox = prepare.cql(format!("DELETE FROM {ks}.inbox USING TIMESTAMP ? WHERE user_id = ? AND activity_at = ? AND thread_id = ?"), true).await?;
        let mut move_inbox = Batch::new_with_statements(
            BatchType::Unlogged,
            vec![insert_inbox.clone().into(), delete_inbox.clone().into()],
        );
        move_inbox.set_is_idempotent(true);
        Ok(Statements {
            get_thread: prepare.cql(format!("SELECT id, buyer_id, seller_id, product_id, order_id, created_at, last_message, last_message_at, updated_at FROM {ks}.threads WHERE id = ?"), true).await?,
            create_thread: prepare.cql(format!("INSERT INTO {ks}.threads (id, buyer_id, seller_id, order_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"), false).await?,
            pair_thread: prepare.cql(format!("SELECT thread_id FROM {ks}.threads_by_pair WHERE buyer_id = ? AND seller_id = ?"), true).await?,
            claim_pair: prepare.cql(format!("INSERT INTO {ks}.threads_by_pair (buyer_id, seller_id, thread_id) VALUES (?, ?, ?) IF NOT EXISTS"), false).await?,
            order_thread: prepare.cql(format!("SELECT thread_id FROM {ks}.threads_by_order WHERE order_id = ?"), true).await?,
            claim_order: prepare.cql(format!("INSERT INTO {ks}.threads_by_order (order_id, thread_id) VALUES (?, ?) IF NOT EXISTS"), false).await?,
            claim_key: prepare.cql(format!("INSERT INTO {ks}.message_keys (thread_id, from_user, client_msg_id, message_id, body) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"), false).await?,
            get_key: {
                let mut s = prepare.cql(format!("SELECT message_id, body FROM {ks}.message_keys WHERE thread_id = ? AND from_user = ? AND client_msg_id = ?"), true).await?;
                // Sees a claim whose Paxos round is still in flight.
                s.set_consistency(Consistency::LocalSerial);
                s
            },
            insert_message: prepare.cql(format!("INSERT INTO {ks}.messages (thread_id, bucket, id, from_user, kind, body) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"), true).await?,
            set_last_message: prepare.cql(format!("UPDATE {ks}.threads USING TIMESTAMP ? SET last_message = ?, last_message_at = ?, updated_at = ? WHERE id = ?"), true).await?,
            set_product: prepare.cql(format!("UPDATE {ks}.threads USING TIMESTAMP ? SET product_id = ? WHERE id = ?"), true).await?,
            insert_inbox,
            delete_inbox,
            move_inbox,
            set_marker: prepare.cql(format!("UPDATE {ks}.read_markers USING TIMESTAMP ? SET up_to = ?, read_at = ? WHERE thread_id = ? AND user_id = ?"), true).await?,
            get_markers: prepare.cql(format!("SELECT user_id, up_to FROM {ks}.read_markers WHERE thread_id = ?"), true).await?,
            list_markers: prepare.cql(format!("SELECT user_id, up_to, read_at FROM {ks}.read_markers WHERE thread_id = ?"), true).await?,
            message_exists: prepare.cql(format!("SELECT id FROM {ks}.messages WHERE thread_id = ? AND bucket = ? AND id = ?"), true).await?,
            page_newest: prepare.cql(page("", "DESC"), true).await?,
            page_before: prepare.cql(page("AND id < ?", "DESC"), true).await?,
            page_between: prepare.cql(page("AND id < ? AND id > ?", "DESC"), true).await?,
            page_after: prepare.cql(page("AND id > ?", "ASC"), true).await?,
            unread_scan: prepare.cql(format!("SELECT from_user, kind FROM {ks}.messages WHERE thread_id = ? AND bucket = ? AND id > ? LIMIT ?"), true).await?,
            inbox_first: prepare.cql(format!("SELECT activity_at, thread_id FROM {ks}.inbox WHERE user_id = ? LIMIT ?"), true).await?,
            inbox_after: prepare.cql(format!("SELECT activity_at, thread_id FROM {ks}.inbox WHERE user_id = ? AND (activity_at, thread_id) < (?, ?) LIMIT ?"), true).await?,
        })
    }
}

#[async_trait]
impl Conversations for ScyllaStore {
    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>> {
        let found = match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => {
                self.first::<(String,)>(
                    &self.statements.conversations.pair_thread,
                    (buyer_id, seller_id),
                )
                .await?
            }
            ThreadKey::Order { order_id } => {
                self.first::<(String,)>(&self.statements.conversations.order_thread, (order_id,))
                    .await?
            }
        };
        Ok(found.map(|(id,)| id))
    }

    async fn open_thread(&self, spec: &OpenThread) -> StoreResult<Opened> {
        let candidate = chat_core::new_id();
        let id = self.claim_thread_key(&spec.key, &candidate).await?;
        let (row, created) = self.ensure_thread(&id, spec).await?;
        let thread = self.with_counts(row).await?;
        Ok(Opened { thread, created })
    }

    async fn thread(&self, id: &str) -> StoreResult<Option<Thread>> {
        self.full_thread(id).await
    }

    async fn participants(&self, id: &str) -> StoreResult<Option<(String, String)>> {
        Ok(self
            .thread_row(id)
            .await?
            .map(|row| (row.buyer_id, row.seller_id)))
    }

    /// Three steps, each a set of concurrent requests: read the thread,
    /// the markers and claim the idempotency key; write the message and
    /// what it changes; count the recipient's unread messages.
    async fn append_message(&self, m: &NewMessage) -> StoreResult<Appended> {
        if m.owes_push {
            // No outbox here: the push goes through a JobSink instead.
            return Err(StoreError::refused(
                Backend::Scylla,
                "the ScyllaDB store keeps no notification outbox",
            ));
        }
        let message = m.clone().into_message();
        let body = encode(&message)?;
        let claim = async {
            match (&m.client_msg_id, m.from.is_empty()) {
                (Some(key), false) => self
                    .claim(
                        &self.statements.conversations.claim_key,
                        (&m.thread_id, &m.from, key, &m.id, &body),
                    )
                    .await
                    .map(Some),
                _ => Ok(None),
            }
        };
        // Claiming before knowing the thread exists is harmless: a key of
        // a thread that does not exist is never looked up again.
        let (row, claimed, markers) = futures::try_join!(
            self.thread_row(&m.thread_id),
            claim,
            self.markers(&m.thread_id)
        )?;
        let row = row.ok_or(StoreError::NotFound("thread"))?;
        let (message, body, duplicate) = match (claimed, &m.client_msg_id) {
            (Some(false), Some(key)) => {
                let (_, first_body): (String, Vec<u8>) = self
                    .first(
                        &self.statements.conversations.get_key,
                        (&m.thread_id, &m.from, key),
                    )
                    .await?
                    .ok_or(StoreError::Inconsistent("idempotency key lost".into()))?;
                (decode::<Message>(&first_body)?, first_body, true)
            }
            _ => (message, body, false),
        };
        let sets_product = if duplicate {
            None
        } else {
            m.sets_product.as_deref()
        };
        self.apply_message(&row, &message, &body, sets_product)
            .await?;

        // The thread as these writes left it (a newer message written
        // concurrently keeps its preview: the timestamps decide).
        let mut after = row;
        let is_newest = after
            .last_message
            .as_ref()
            .is_none_or(|last| message.id >= last.message_id);
        if is_newest {
            after.last_message = Some(preview_of(&message));
            after.last_message_at = Some(message.created_at);
            after.updated_at = message.created_at;
        }
        if let Some(product) = sets_product {
            after.product_id = Some(product.to_owned());
        }
        let marker_of = |user: &str| {
            markers
                .iter()
                .find(|(u, _)| u == user)
                .and_then(|(_, marker)| marker.clone())
        };
        let unread = |user: String| {
            let marker = marker_of(&user);
            let after = &after;
            let from = &message.from;
            async move {
                if user == *from {
                    // The send moved the sender's marker to this message.
                    Ok(0)
                } else {
                    self.unread_for(after, &user, marker.as_deref()).await
                }
            }
        };
        let (unread_buyer, unread_seller) = futures::try_join!(
            unread(after.buyer_id.clone()),
            unread(after.seller_id.clone())
        )?;
        Ok(Appended {
            thread: after.clone().with_unread(unread_buyer, unread_seller),
            message,
            duplicate,
        })
    }

    /// Unlogged batches of rows of one partition (cheap: one replica set,
    /// one mutation), many in flight; then the newest message becomes the
    /// preview through the same writes a send makes.
    async fn import_history(&self, thread_id: &str, messages: &[Message]) -> StoreResult<()> {
        use futures::StreamExt;
        let row = self
            .thread_row(thread_id)
            .await?
            .ok_or(StoreError::NotFound("thread"))?;
        let mut by_bucket: std::collections::BTreeMap<i32, Vec<&Message>> = Default::default();
        for m in messages {
            if m.thread_id != thread_id {
                return Err(StoreError::refused(
                    Backend::Scylla,
                    format!("message {} is not of thread {thread_id}", m.id),
                ));
            }
            by_bucket
                .entry(bucket_of_millis(m.created_at))
                .or_default()
                .push(m);
        }
        let mut batches = Vec::new();
        for (bucket, rows) in &by_bucket {
            for chunk in rows.chunks(IMPORT_BATCH) {
                let mut values = Vec::with_capacity(chunk.len());
                for m in chunk {
                    // Owned values: borrowed ones trip async_trait's
                    // lifetime inference in the stream below.
                    values.push((
                        thread_id.to_owned(),
                        *bucket,
                        m.id.clone(),
                        m.from.clone(),
                        m.kind.as_str().to_owned(),
                        encode(*m)?,
                        write_timestamp(&m.id, m.created_at),
                    ));
                }
                batches.push(values);
            }
        }
        let batch = Batch::new_with_statements(
            BatchType::Unlogged,
            vec![self.statements.conversations.insert_message.clone().into(); IMPORT_BATCH],
        );
        let mut writes = futures::stream::iter(batches.into_iter().map(|values| {
            let mut batch = batch.clone();
            batch.statements.truncate(values.len());
            batch.set_is_idempotent(true);
            async move { self.session.batch(&batch, values).await.map_err(backend) }
        }))
        .buffer_unordered(16);
        while let Some(done) = writes.next().await {
            done?;
        }
        if let Some(newest) = messages.iter().max_by(|a, b| a.id.cmp(&b.id)) {
            let body = encode(newest)?;
            self.apply_message(&row, newest, &body, None).await?;
        }
        Ok(())
    }

    async fn mark_read(
        &self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
    ) -> StoreResult<ReadMarked> {
        let row = self
            .thread_row(thread_id)
            .await?
            .ok_or(StoreError::NotFound("thread"))?;
        if !row.participants().contains(&user_id) {
            return Err(StoreError::NotFound("thread"));
        }
        let millis = millis_of_id(up_to).ok_or(StoreError::NotFound("message"))?;
        let exists: Option<(String,)> = self
            .first(
                &self.statements.conversations.message_exists,
                (thread_id, bucket_of_millis(millis), up_to),
            )
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("message"));
        }
        let current = self
            .markers(thread_id)
            .await?
            .into_iter()
            .find(|(u, _)| u == user_id)
            .and_then(|(_, m)| m);
        let moved = current.as_deref().is_none_or(|c| up_to > c);
        if moved {
            self.exec(
                &self.statements.conversations.set_marker,
                (
                    write_timestamp(up_to, millis),
                    up_to,
                    self.clock.now_millis(),
                    thread_id,
                    user_id,
                ),
            )
            .await?;
        }
        let thread = self.with_counts(row).await?;
        Ok(ReadMarked {
            thread,
            up_to: if moved {
                up_to.to_owned()
            } else {
                current.unwrap_or_default()
            },
            moved,
        })
    }

    async fn read_markers(&self, thread_id: &str) -> StoreResult<Vec<ReadMarker>> {
        let rows: Vec<(String, Option<String>, Option<i64>)> = self
            .rows(&self.statements.conversations.list_markers, (thread_id,))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(user_id, up_to, read_at)| {
                Some(ReadMarker {
                    user_id,
                    up_to: up_to?,
                    read_at: read_at.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn threads_of(
        &self,
        user_id: &str,
        cursor: Option<&InboxCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Thread>> {
        let mut position = cursor.map(|c| (c.activity_at, c.thread_id.clone()));
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(limit);
        let mut stale = Vec::new();
        let fetch = (limit * 2 + 8) as i32;
        while out.len() < limit {
            let entries: Vec<(i64, String)> = match &position {
                None => {
                    self.rows(&self.statements.conversations.inbox_first, (user_id, fetch))
                        .await?
                }
                Some((at, id)) => {
                    self.rows(
                        &self.statements.conversations.inbox_after,
                        (user_id, *at, id, fetch),
                    )
                    .await?
                }
            };
            let exhausted = (entries.len() as i32) < fetch;
            let Some(last) = entries.last() else { break };
            position = Some(last.clone());
            let fresh: Vec<(i64, String)> = entries
                .into_iter()
                .filter(|(_, id)| seen.insert(id.clone()))
                .collect();
            let rows = try_join_all(fresh.iter().map(|(_, id)| self.thread_row(id))).await?;
            let mut live = Vec::new();
            for ((at, id), row) in fresh.into_iter().zip(rows) {
                match row {
                    // An entry older than its thread's activity was
                    // superseded; the newer one was listed (or is on an
                    // earlier page).
                    Some(row) if at >= row.activity_at() => live.push(row),
                    Some(row) => stale.push((at, id, row.activity_at())),
                    None => {}
                }
            }
            let room = limit - out.len();
            live.truncate(room);
            out.extend(try_join_all(live.into_iter().map(|row| self.with_counts(row))).await?);
            if exhausted {
                break;
            }
        }
        self.clean_inbox_rows(user_id, stale);
        Ok(out)
    }

    async fn messages(
        &self,
        thread_id: &str,
        range: &MessageRange,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let Some(row) = self.thread_row(thread_id).await? else {
            return Ok(Vec::new());
        };
        let bound =
            |id: &Option<String>| id.as_deref().and_then(millis_of_id).map(bucket_of_millis);
        let forward = range.after.is_some() && range.before.is_none();
        let lowest = bound(&range.after)
            .unwrap_or(row.oldest_bucket())
            .max(row.oldest_bucket());
        let newest = row.newest_bucket(self.clock.now_millis());
        let highest = bound(&range.before).unwrap_or(newest).min(newest);
        let mut out: Vec<Message> = Vec::with_capacity(limit);
        let buckets: Vec<i32> = if forward {
            (lowest..=highest).collect()
        } else {
            (lowest..=highest).rev().collect()
        };
        for bucket in buckets {
            let room = (limit - out.len()) as i32;
            let page = self.page_in_bucket(thread_id, bucket, range, room).await?;
            out.extend(page);
            if out.len() >= limit {
                break;
            }
        }
        if !forward {
            out.reverse();
        }
        Ok(out)
    }
}

/// The `threads` row: a thread without its unread counts.
#[derive(Debug, Clone)]
struct ThreadRow {
    id: String,
    buyer_id: String,
    seller_id: String,
    product_id: Option<String>,
    order_id: Option<String>,
    created_at: i64,
    last_message: Option<MessagePreview>,
    last_message_at: Option<i64>,
    updated_at: i64,
}

impl ThreadRow {
    fn activity_at(&self) -> i64 {
        self.last_message_at.unwrap_or(self.created_at)
    }

    fn participants(&self) -> [&str; 2] {
        [&self.buyer_id, &self.seller_id]
    }

    fn with_unread(self, unread_buyer: u32, unread_seller: u32) -> Thread {
        Thread {
            id: self.id,
            buyer_id: self.buyer_id,
            seller_id: self.seller_id,
            product_id: self.product_id,
            order_id: self.order_id,
            last_message: self.last_message,
            last_message_at: self.last_message_at,
            unread_buyer,
            unread_seller,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Newest bucket worth reading: messages are never dated after the
    /// later of "now" and the thread's last message.
    fn newest_bucket(&self, now: i64) -> i32 {
        bucket_of_millis(now.max(self.last_message_at.unwrap_or(i64::MIN)))
    }

    /// Messages are never dated before their thread.
    fn oldest_bucket(&self) -> i32 {
        bucket_of_millis(self.created_at)
    }
}

type ThreadColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
);

/// Queries that several methods above share.
impl ScyllaStore {
    async fn thread_row(&self, id: &str) -> StoreResult<Option<ThreadRow>> {
        let row: Option<ThreadColumns> = self
            .first(&self.statements.conversations.get_thread, (id,))
            .await?;
        let Some((id, buyer, seller, product, order, created, last, last_at, updated)) = row else {
            return Ok(None);
        };
        // A row with only preview cells is a send racing a thread that was
        // never created; treat it as absent.
        let (Some(buyer_id), Some(seller_id), Some(created_at)) = (buyer, seller, created) else {
            return Ok(None);
        };
        Ok(Some(ThreadRow {
            id,
            buyer_id,
            seller_id,
            product_id: product,
            order_id: order,
            created_at,
            last_message: last.as_deref().map(decode).transpose()?,
            last_message_at: last_at,
            updated_at: updated.unwrap_or(created_at),
        }))
    }

    async fn markers(&self, thread_id: &str) -> StoreResult<Vec<(String, Option<String>)>> {
        self.rows(&self.statements.conversations.get_markers, (thread_id,))
            .await
    }

    /// Non-system messages from others after `marker`, stopping at the cap.
    async fn unread_for(
        &self,
        row: &ThreadRow,
        user_id: &str,
        marker: Option<&str>,
    ) -> StoreResult<u32> {
        let lowest = marker
            .and_then(millis_of_id)
            .map(bucket_of_millis)
            .unwrap_or(row.oldest_bucket())
            .max(row.oldest_bucket());
        let after = marker.unwrap_or("");
        let mut unread = 0u32;
        let scan_limit = (UNREAD_CAP * 2) as i32;
        for bucket in (lowest..=row.newest_bucket(self.clock.now_millis())).rev() {
            let rows: Vec<(Option<String>, Option<String>)> = self
                .rows(
                    &self.statements.conversations.unread_scan,
                    (&row.id, bucket, after, scan_limit),
                )
                .await?;
            unread += rows
                .iter()
                .filter(|(from, kind)| {
                    from.as_deref() != Some(user_id) && kind.as_deref() != Some("system")
                })
                .count() as u32;
            if unread >= UNREAD_CAP || rows.len() as i32 == scan_limit {
                return Ok(unread.min(UNREAD_CAP));
            }
        }
        Ok(unread)
    }

    /// The thread with both unread counts, derived from the read markers.
    async fn with_counts(&self, row: ThreadRow) -> StoreResult<Thread> {
        let markers = self.markers(&row.id).await?;
        let marker_of = |user: &str| {
            markers
                .iter()
                .find(|(u, _)| u == user)
                .and_then(|(_, m)| m.clone())
        };
        let (buyer_marker, seller_marker) = (marker_of(&row.buyer_id), marker_of(&row.seller_id));
        let (buyer, seller) = futures::try_join!(
            self.unread_for(&row, &row.buyer_id, buyer_marker.as_deref()),
            self.unread_for(&row, &row.seller_id, seller_marker.as_deref()),
        )?;
        Ok(row.with_unread(buyer, seller))
    }

    async fn full_thread(&self, id: &str) -> StoreResult<Option<Thread>> {
        match self.thread_row(id).await? {
            Some(row) => Ok(Some(self.with_counts(row).await?)),
            None => Ok(None),
        }
    }

    /// Makes sure the thread row and both inbox entries exist; every
    /// opener of the same key converges on the same row.
    async fn ensure_thread(&self, id: &str, spec: &OpenThread) -> StoreResult<(ThreadRow, bool)> {
        if let Some(row) = self.thread_row(id).await? {
            return Ok((row, false));
        }
        let now = self.clock.now_millis();
        let order_id = match &spec.key {
            ThreadKey::Order { order_id } => Some(order_id.clone()),
            ThreadKey::Pair { .. } => None,
        };
        let created = self
            .claim(
                &self.statements.conversations.create_thread,
                (id, &spec.buyer_id, &spec.seller_id, order_id, now, now),
            )
            .await?;
        let row = self.thread_row(id).await?.ok_or(StoreError::Inconsistent(
            "thread row vanished after creation".into(),
        ))?;
        let ts = row.created_at * 1000;
        try_join_all(row.participants().map(|user| {
            self.exec(
                &self.statements.conversations.insert_inbox,
                (user, row.created_at, &row.id, None::<Vec<u8>>, ts),
            )
        }))
        .await?;
        Ok((row, created))
    }

    /// Claims the find-or-create key, returning the thread id it names.
    async fn claim_thread_key(&self, key: &ThreadKey, candidate: &str) -> StoreResult<String> {
        if let Some(id) = self.find_thread(key).await? {
            return Ok(id);
        }
        let applied = match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => {
                self.claim(
                    &self.statements.conversations.claim_pair,
                    (buyer_id, seller_id, candidate),
                )
                .await?
            }
            ThreadKey::Order { order_id } => {
                self.claim(
                    &self.statements.conversations.claim_order,
                    (order_id, candidate),
                )
                .await?
            }
        };
        if applied {
            return Ok(candidate.to_owned());
        }
        self.find_thread(key).await?.ok_or(StoreError::Inconsistent(
            "thread key claimed but not readable".into(),
        ))
    }

    /// Writes everything a stored message changes besides its key. Every
    /// write is idempotent, so the retry of a half-done send repeats it.
    async fn apply_message(
        &self,
        row: &ThreadRow,
        message: &Message,
        body: &[u8],
        sets_product: Option<&str>,
    ) -> StoreResult<()> {
        let s = &self.statements.conversations;
        let ts = write_timestamp(&message.id, message.created_at);
        let preview = encode(&preview_of(message))?;
        let mut writes = Vec::new();
        writes.push(
            self.exec(
                &s.insert_message,
                (
                    &message.thread_id,
                    bucket_of_millis(message.created_at),
                    &message.id,
                    &message.from,
                    message.kind.as_str(),
                    body,
                    ts,
                ),
            )
            .boxed(),
        );
        writes.push(
            self.exec(
                &s.set_last_message,
                (
                    ts,
                    &preview,
                    message.created_at,
                    message.created_at,
                    &message.thread_id,
                ),
            )
            .boxed(),
        );
        if let Some(product) = sets_product {
            writes.push(
                self.exec(&s.set_product, (ts, product, &message.thread_id))
                    .boxed(),
            );
        }
        let previous = row.activity_at();
        for user in row.participants() {
            if previous == message.created_at {
                writes.push(
                    self.exec(
                        &s.insert_inbox,
                        (user, message.created_at, &row.id, &preview, ts),
                    )
                    .boxed(),
                );
            } else {
                // One single-partition batch moves the entry. The delete
                // only removes an older entry: a newer one carries a newer
                // write timestamp than this delete.
                let (preview, row_id) = (&preview, &row.id);
                writes.push(
                    async move {
                        self.session
                            .batch(
                                &s.move_inbox,
                                (
                                    (user, message.created_at, row_id, preview, ts),
                                    (ts, user, previous, row_id),
                                ),
                            )
                            .await
                            .map_err(backend)
                    }
                    .boxed(),
                );
            }
        }
        if row.participants().contains(&message.from.as_str()) {
            // Answering a thread means having read it.
            writes.push(
                self.exec(
                    &s.set_marker,
                    (
                        ts,
                        &message.id,
                        message.created_at,
                        &message.thread_id,
                        &message.from,
                    ),
                )
                .boxed(),
            );
        }
        try_join_all(writes).await?;
        Ok(())
    }

    /// Up to `limit` messages of one bucket within `range`: newest first,
    /// except for an `after`-only range, which reads oldest first.
    async fn page_in_bucket(
        &self,
        thread_id: &str,
        bucket: i32,
        range: &MessageRange,
        limit: i32,
    ) -> StoreResult<Vec<Message>> {
        let s = &self.statements.conversations;
        let bodies: Vec<(Vec<u8>,)> = match (&range.before, &range.after) {
            (None, None) => {
                self.rows(&s.page_newest, (thread_id, bucket, limit))
                    .await?
            }
            (Some(before), None) => {
                self.rows(&s.page_before, (thread_id, bucket, before, limit))
                    .await?
            }
            (Some(before), Some(after)) => {
                self.rows(&s.page_between, (thread_id, bucket, before, after, limit))
                    .await?
            }
            (None, Some(after)) => {
                self.rows(&s.page_after, (thread_id, bucket, after, limit))
                    .await?
            }
        };
        bodies.iter().map(|(b,)| decode(b)).collect()
    }

    /// Removes inbox rows that a newer activity superseded (best effort).
    fn clean_inbox_rows(&self, user_id: &str, stale: Vec<(i64, String, i64)>) {
        if stale.is_empty() {
            return;
        }
        let session = self.session.clone();
        let delete = self.statements.conversations.delete_inbox.clone();
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            for (at, thread_id, newest) in stale {
                let ts = newest * 1000;
                if let Err(e) = session
                    .execute_unpaged(&delete, (ts, &user_id, at, &thread_id))
                    .await
                {
                    tracing::debug!(error = %e, "inbox cleanup failed; a later read retries");
                }
            }
        });
    }
}
