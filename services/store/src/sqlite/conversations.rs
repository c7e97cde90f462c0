//! SQLite: the `Conversations` role of the store.

use async_trait::async_trait;
use chat_core::store::Conversations;

use super::*;

#[async_trait]
impl Conversations for SqliteStore {
    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>> {
        let (pair, order) = match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => (Some(pair_key(buyer_id, seller_id)), None),
            ThreadKey::Order { order_id } => (None, Some(order_id.clone())),
        };
        self.read(move |c| {
            select_text(
                c,
                "SELECT id FROM threads WHERE pair_key = ?1 OR order_id = ?2",
                params![pair, order],
            )
        })
        .await
    }

    async fn open_thread(&self, spec: &OpenThread) -> StoreResult<Opened> {
        let spec = spec.clone();
        self.write(move |c| {
            let tx = c;
            let (pair, order) = match &spec.key {
                ThreadKey::Pair {
                    buyer_id,
                    seller_id,
                } => (Some(pair_key(buyer_id, seller_id)), None),
                ThreadKey::Order { order_id } => (None, Some(order_id.clone())),
            };
            let existing = select_text(
                tx,
                "SELECT id FROM threads WHERE pair_key = ?1 OR order_id = ?2",
                params![pair, order],
            )?;
            let (id, created) = match existing {
                Some(id) => (id, false),
                None => {
                    let id = chat_core::new_id();
                    let now = chat_core::now_millis();
                    tx.execute(
                        "INSERT INTO threads (id, buyer_id, seller_id, pair_key, order_id, \
                         activity_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
                        params![id, spec.buyer_id, spec.seller_id, pair, order, now],
                    )
                    .map_err(backend)?;
                    (id, true)
                }
            };
            let thread = load_thread(tx, &id)
                .map_err(backend)?
                .ok_or(StoreError::NotFound("thread"))?;
            Ok(Opened { thread, created })
        })
        .await
    }

    async fn thread(&self, id: &str) -> StoreResult<Option<Thread>> {
        let id = id.to_owned();
        self.read(move |c| load_thread(c, &id).map_err(backend))
            .await
    }

    /// The first poll sends the write to the writer thread's queue, which
    /// it commits in order.
    fn appends_in_order_of_first_poll(&self) -> bool {
        true
    }

    async fn append_message(&self, message: &NewMessage) -> StoreResult<Appended> {
        let m = message.clone();
        // Unguarded: `append_in` refuses (unknown thread, a duplicate's
        // lookup) before it changes anything; its thread's row and the
        // sender's read marker are written once per batch.
        let appended = self
            .write_coalesced(move |c, pending| append_in(c, pending, m))
            .await?;
        if message.owes_push && !appended.duplicate {
            self.outbox_wake.notify_one();
        }
        Ok(appended)
    }

    async fn import_history(&self, thread_id: &str, messages: &[Message]) -> StoreResult<()> {
        // An empty import still reports a missing thread.
        let chunks: Vec<&[Message]> = if messages.is_empty() {
            vec![&[]]
        } else {
            messages.chunks(5_000).collect()
        };
        for chunk in chunks {
            let (thread_id, chunk) = (thread_id.to_owned(), chunk.to_vec());
            self.write(move |c| import_in(c, &thread_id, &chunk))
                .await?;
        }
        Ok(())
    }

    async fn mark_read(
        &self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
    ) -> StoreResult<ReadMarked> {
        let (thread_id, user_id, up_to) =
            (thread_id.to_owned(), user_id.to_owned(), up_to.to_owned());
        self.write(move |c| mark_read_in(c, &thread_id, &user_id, &up_to))
            .await
    }

    async fn read_markers(&self, thread_id: &str) -> StoreResult<Vec<ReadMarker>> {
        let thread_id = thread_id.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT user_id, up_to, read_at FROM read_markers WHERE thread_id = ?1",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![thread_id], |r| {
                    Ok(ReadMarker {
                        user_id: r.get(0)?,
                        up_to: r.get(1)?,
                        read_at: r.get(2)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn threads_of(
        &self,
        user_id: &str,
        cursor: Option<&InboxCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Thread>> {
        let user_id = user_id.to_owned();
        let (at, id) = match cursor {
            Some(c) => (c.activity_at, c.thread_id.clone()),
            // Sorts after every UUID, so the first page starts at the top.
            None => (i64::MAX, "~".to_owned()),
        };
        self.read(move |c| {
            let sql = format!(
                "SELECT {THREAD_COLUMNS} FROM (
                    SELECT * FROM threads WHERE buyer_id = ?1 AND (activity_at, id) < (?2, ?3)
                    UNION ALL
                    SELECT * FROM threads WHERE seller_id = ?1 AND buyer_id != ?1
                        AND (activity_at, id) < (?2, ?3)
                 ) ORDER BY activity_at DESC, id DESC LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(params![user_id, at, id, limit as i64], thread_from_row)
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn messages(
        &self,
        thread_id: &str,
        range: &MessageRange,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let thread_id = thread_id.to_owned();
        let range = range.clone();
        self.read(move |c| {
            let forward = range.after.is_some() && range.before.is_none();
            let order = if forward { "ASC" } else { "DESC" };
            // Only the bounds actually given appear in the SQL: an
            // `?2 IS NULL OR id < ?2` form hides the range from the planner,
            // which then walks the thread from its newest end (measured:
            // 42 ms for a page in the middle of 1 M messages, 0.5 ms after).
            let before = if range.before.is_some() {
                "AND id < ?2"
            } else {
                "AND ?2 IS NULL"
            };
            let after = if range.after.is_some() {
                "AND id > ?3"
            } else {
                "AND ?3 IS NULL"
            };
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ?1 \
                 {before} {after} ORDER BY id {order} LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![thread_id, range.before, range.after, limit as i64],
                    message_from_row,
                )
                .map_err(backend)?;
            let mut messages = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
            if !forward {
                messages.reverse();
            }
            Ok(messages)
        })
        .await
    }
}
