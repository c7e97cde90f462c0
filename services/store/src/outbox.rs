//! The embedded notification queue: the `notify_outbox` table of the chat
//! database. A push job is inserted by the same transaction that stores
//! the message (when the chat service says it owes one), so "acknowledged to the sender" implies "owed to the
//! recipient", crash or not. One process owns the queue (the embedded
//! deployment is one process), so a lease is a flag that is cleared when
//! the queue is opened again after a restart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::notify::{Job, NotificationQueue, QueueError, Taken};
use chat_core::store::StoreError;
use rusqlite::params;

use crate::SqliteStore;
use crate::sqlite::{backend, enqueue_job_in};

/// How often due jobs are looked for when nothing wakes the queue (digest
/// jobs become due by time alone).
const POLL: Duration = Duration::from_millis(500);

pub struct SqliteOutbox {
    store: Arc<SqliteStore>,
}

fn queue_error(e: StoreError) -> QueueError {
    QueueError::Backend(e.to_string())
}

impl SqliteOutbox {
    /// Hands out again every job a previous process had taken and not
    /// finished. Jobs are written by the appends of messages that owe a
    /// push (`NewMessage::owes_push`, set by the chat service).
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteOutbox, QueueError> {
        store
            .write(|c| {
                c.execute("UPDATE notify_outbox SET leased = 0 WHERE leased = 1", [])
                    .map(|_| ())
                    .map_err(backend)
            })
            .await
            .map_err(queue_error)?;
        Ok(SqliteOutbox { store })
    }

    /// Jobs queued and not completed (for tests and metrics).
    pub async fn depth(&self) -> Result<u64, QueueError> {
        self.store
            .read(|c| {
                c.query_row("SELECT count(*) FROM notify_outbox", [], |r| r.get(0))
                    .map_err(backend)
            })
            .await
            .map_err(queue_error)
    }

    async fn lease_due(&self, max: usize) -> Result<Vec<Taken>, QueueError> {
        let now = chat_core::now_millis();
        let rows = self
            .store
            .write(move |c| {
                let mut select = c
                    .prepare_cached(
                        "UPDATE notify_outbox SET leased = 1 WHERE seq IN \
                         (SELECT seq FROM notify_outbox WHERE leased = 0 AND due_at <= ?1 \
                          ORDER BY due_at, seq LIMIT ?2) \
                         RETURNING seq, job, attempts, enqueued_at",
                    )
                    .map_err(backend)?;
                let rows = select
                    .query_map(params![now, max as i64], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, u32>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .map_err(backend)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(backend)?;
                Ok(rows)
            })
            .await
            .map_err(queue_error)?;
        let mut taken = Vec::with_capacity(rows.len());
        for (seq, job, attempts, enqueued_at) in rows {
            match Job::decode(&job) {
                Ok(job) => taken.push(Taken {
                    job,
                    attempts,
                    enqueued_at,
                    handle: seq.to_string(),
                }),
                Err(e) => {
                    // Kept leased (not handed out again) for a human to see.
                    tracing::error!(seq, error = %e, "unreadable outbox job left aside");
                }
            }
        }
        Ok(taken)
    }
}

fn seq_of(taken: &Taken) -> Result<i64, QueueError> {
    taken
        .handle
        .parse()
        .map_err(|_| QueueError::Malformed(format!("outbox handle {}", taken.handle)))
}

#[async_trait]
impl NotificationQueue for SqliteOutbox {
    async fn take(&self, max: usize) -> Result<Vec<Taken>, QueueError> {
        loop {
            // Registered before looking, so a commit in between still wakes.
            let woken = self.store.outbox_wake.notified();
            let taken = self.lease_due(max).await?;
            if !taken.is_empty() {
                return Ok(taken);
            }
            let _ = tokio::time::timeout(POLL, woken).await;
        }
    }

    async fn complete(&self, taken: &Taken, then: Option<(Job, i64)>) -> Result<(), QueueError> {
        let seq = seq_of(taken)?;
        self.store
            .write(move |c| {
                c.prepare_cached("DELETE FROM notify_outbox WHERE seq = ?1")
                    .and_then(|mut stmt| stmt.execute([seq]))
                    .map_err(backend)?;
                if let Some((job, due_at)) = then {
                    enqueue_job_in(c, &job, due_at)?;
                }
                Ok(())
            })
            .await
            .map_err(queue_error)
    }

    async fn retry(&self, taken: &Taken, not_before: i64) -> Result<(), QueueError> {
        let seq = seq_of(taken)?;
        self.store
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE notify_outbox SET leased = 0, due_at = ?2, attempts = attempts + 1 \
                     WHERE seq = ?1",
                )
                .and_then(|mut stmt| stmt.execute(params![seq, not_before]))
                .map(|_| ())
                .map_err(backend)
            })
            .await
            .map_err(queue_error)
    }

    async fn queued_jobs(&self) -> Result<Option<u64>, QueueError> {
        SqliteOutbox::depth(self).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::model::NewMessage;
    use chat_core::store::prelude::*;
    use chat_protocol::MessageType;

    async fn store_with_thread() -> (tempfile::TempDir, Arc<SqliteStore>, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let thread = chat_core::contract::open_pair(&*store, "b", "s").await;
        (dir, store, thread.id)
    }

    fn message(thread: &str, cmid: &str) -> NewMessage {
        NewMessage {
            owes_push: true,
            ..message_owing_nothing(thread, cmid)
        }
    }

    fn message_owing_nothing(thread: &str, cmid: &str) -> NewMessage {
        let (id, created_at) = chat_core::new_timed_id();
        NewMessage {
            id,
            thread_id: thread.into(),
            from: "s".into(),
            kind: MessageType::Text,
            content: "xin chào".into(),
            card: None,
            client_msg_id: Some(cmid.into()),
            created_at,
            sets_product: None,
            owes_push: false,
        }
    }

    #[tokio::test]
    async fn a_stored_message_owes_one_push_job_until_completed() {
        let (_dir, store, thread) = store_with_thread().await;
        // A message that owes nothing (the chat service decides) writes no job.
        store
            .append_message(&message_owing_nothing(&thread, "before"))
            .await
            .unwrap();
        let outbox = SqliteOutbox::open(store.clone()).await.unwrap();
        assert_eq!(outbox.depth().await.unwrap(), 0);

        let sent = store.append_message(&message(&thread, "c1")).await.unwrap();
        // A retry of the same send owes nothing more.
        store.append_message(&message(&thread, "c1")).await.unwrap();
        let taken = outbox.take(10).await.unwrap();
        assert_eq!(taken.len(), 1);
        match &taken[0].job {
            Job::Push(p) => {
                assert_eq!(p.message_id, sent.message.id);
                assert_eq!(p.to_user_id, "b");
                assert_eq!(p.from_user_id, "s");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Handed out once: not again while leased.
        assert!(
            tokio::time::timeout(Duration::from_millis(700), outbox.take(10))
                .await
                .is_err()
        );
        // Completing with a follow-up: the digest is due later, once.
        let digest = Job::Digest {
            user_id: "b".into(),
            thread_id: thread.clone(),
        };
        let due = chat_core::now_millis() + 300;
        outbox
            .complete(&taken[0], Some((digest.clone(), due)))
            .await
            .unwrap();
        assert_eq!(outbox.depth().await.unwrap(), 1);
        let later = outbox.take(10).await.unwrap();
        assert!(chat_core::now_millis() >= due);
        assert_eq!(later[0].job, digest);
        outbox
            .retry(&later[0], chat_core::now_millis())
            .await
            .unwrap();
        let again = outbox.take(10).await.unwrap();
        assert_eq!(again[0].attempts, 1);
        outbox.complete(&again[0], None).await.unwrap();
        assert_eq!(outbox.depth().await.unwrap(), 0);
    }

    /// Discards what the service publishes.
    struct Nowhere;

    #[async_trait]
    impl chat_core::outbound::Outbound for Nowhere {
        async fn publish(&self, _: String, _: Vec<u8>, _: chat_core::outbound::Qos) {}
    }

    /// The chat service decides what a message owes; the store writes it in
    /// the message's transaction. A sent text owes one push, a product card
    /// (a system message) none, and a service with notifications off owes
    /// nothing at all.
    #[tokio::test]
    async fn the_chat_service_decides_which_messages_owe_a_push() {
        use chat_core::membership::MembershipCache;
        use chat_core::service::{ChatService, Deps, Limits, PushRoute};
        let (_dir, store, thread) = store_with_thread().await;
        let outbox = SqliteOutbox::open(store.clone()).await.unwrap();
        let service = |push_in_store: bool| {
            let chat_store: Arc<dyn chat_core::store::ChatStore> = store.clone();
            ChatService::new(Deps {
                store: chat_store.clone(),
                membership: Arc::new(MembershipCache::new(chat_store.clone())),
                outbound: Arc::new(Nowhere),
                bus: Arc::new(chat_core::bus::InProcessBus::new(16)),
                limits: Limits::default(),
                presence: Arc::new(chat_core::presence::LocalPresence::new()),
                moderation: Arc::new(chat_core::moderation::Moderation::without_keywords(
                    Default::default(),
                    chat_store,
                )),
                limiter: Arc::new(chat_core::ratelimit::RateLimiter::new(Default::default())),
                attachments: None,
                push: if push_in_store {
                    PushRoute::WithTheMessage
                } else {
                    PushRoute::Nowhere
                },
                sandbox_prefix: None,
                protocol_v1: true,
            })
        };
        let send = |cmid: &str| {
            chat_protocol::encode(&chat_protocol::ClientEvent::SendMessage {
                client_msg_id: cmid.into(),
                kind: MessageType::Text,
                content: "còn hàng không shop?".into(),
            })
        };
        service(false)
            .handle_inbound("b", Some("b:phone"), &thread, &send("off"))
            .await;
        assert_eq!(outbox.depth().await.unwrap(), 0, "notifications off");
        let on = service(true);
        on.handle_inbound("b", Some("b:phone"), &thread, &send("on"))
            .await;
        let history = store
            .messages(&thread, &chat_core::model::MessageRange::default(), 10)
            .await
            .unwrap();
        assert_eq!(history.len(), 2, "both sends stored");
        let taken = outbox.take(10).await.unwrap();
        assert_eq!(taken.len(), 1, "one push owed, for the second send");
        match &taken[0].job {
            Job::Push(p) => {
                assert_eq!((p.from_user_id.as_str(), p.to_user_id.as_str()), ("b", "s"));
                assert_eq!(p.message_id, history[1].id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn jobs_taken_by_a_dead_process_are_handed_out_again() {
        let (dir, store, thread) = store_with_thread().await;
        let outbox = SqliteOutbox::open(store.clone()).await.unwrap();
        store.append_message(&message(&thread, "c1")).await.unwrap();
        assert_eq!(outbox.take(10).await.unwrap().len(), 1);
        drop(outbox);
        drop(store);
        // The "restart": the same database opened again.
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let outbox = SqliteOutbox::open(store).await.unwrap();
        let taken = outbox.take(10).await.unwrap();
        assert_eq!(taken.len(), 1, "the unfinished job comes back");
    }
}
