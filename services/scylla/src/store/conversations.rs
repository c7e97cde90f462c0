//! ScyllaDB: the `Conversations` role of the store.

use async_trait::async_trait;
use chat_core::store::Conversations;

use super::*;

#[async_trait]
impl Conversations for ScyllaStore {
    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>> {
        let found = match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => {
                self.first::<(String,)>(&self.statements.pair_thread, (buyer_id, seller_id))
                    .await?
            }
            ThreadKey::Order { order_id } => {
                self.first::<(String,)>(&self.statements.order_thread, (order_id,))
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
                        &self.statements.claim_key,
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
                    .first(&self.statements.get_key, (&m.thread_id, &m.from, key))
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
            vec![self.statements.insert_message.clone().into(); IMPORT_BATCH],
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
                &self.statements.message_exists,
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
                &self.statements.set_marker,
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
            .rows(&self.statements.list_markers, (thread_id,))
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
                    self.rows(&self.statements.inbox_first, (user_id, fetch))
                        .await?
                }
                Some((at, id)) => {
                    self.rows(&self.statements.inbox_after, (user_id, *at, id, fetch))
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
