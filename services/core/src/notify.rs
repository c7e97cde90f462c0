//! The durable work queue of the notification service.
//!
//! A stored message owes its offline recipient a push now and, if it stays
//! unread, a digest e-mail later. Those debts must survive a crash of any
//! process, so they live in a queue with at-least-once hand-out: a job
//! taken and never completed comes back (after a restart, or after a
//! lease). Two backends implement [`NotificationQueue`]: an outbox table
//! written in the same SQLite transaction as the message (the embedded
//! default), and NATS JetStream with a durable consumer (scaled out).
//!
//! At-least-once needs deduplication downstream: the dispatcher keeps, per
//! user, thread and channel, the newest message it has notified about
//! ([`crate::store::ChatStore::notified_up_to`]); a job for an older or
//! equal message is skipped.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::bus::MessageSent;

/// A debt of the notification service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Job {
    /// A message was stored for a recipient who may be offline.
    Push(MessageSent),
    /// Check, at the job's due time, whether the user still has unread
    /// messages in the thread, and e-mail them a digest if so.
    #[serde(rename_all = "camelCase")]
    Digest { user_id: String, thread_id: String },
}

impl Job {
    /// At most one queued job per key: a second enqueue of the same key is
    /// a no-op (a retried publish, or one digest per thread per window).
    pub fn dedup_key(&self) -> String {
        match self {
            Job::Push(sent) => format!("push:{}:{}", sent.message_id, sent.to_user_id),
            Job::Digest { user_id, thread_id } => format!("digest:{user_id}:{thread_id}"),
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            Job::Push(sent) => &sent.to_user_id,
            Job::Digest { user_id, .. } => user_id,
        }
    }

    pub fn thread_id(&self) -> &str {
        match self {
            Job::Push(sent) => &sent.thread_id,
            Job::Digest { thread_id, .. } => thread_id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Job, QueueError> {
        serde_json::from_slice(bytes).map_err(|e| QueueError::Malformed(e.to_string()))
    }
}

/// A job handed out by a queue; `handle` is the queue's own reference
/// (an outbox row, a JetStream message) used to complete or retry it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub job: Job,
    /// Times this job was handed out before (0 the first time).
    pub attempts: u32,
    /// When the job was first enqueued, in milliseconds.
    pub enqueued_at: i64,
    pub handle: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue backend: {0}")]
    Backend(String),
    #[error("malformed job: {0}")]
    Malformed(String),
}

#[async_trait]
pub trait NotificationQueue: Send + Sync + 'static {
    /// Waits until at least one job is due (or a short poll interval
    /// passes), then hands out up to `max` of them. A job is handed out to
    /// one taker at a time; a taker that dies without completing it only
    /// delays it.
    async fn take(&self, max: usize) -> Result<Vec<Taken>, QueueError>;

    /// The job is done; `then` is enqueued in the same step (so a crash
    /// cannot drop the follow-up of a completed job): a job and the time,
    /// in milliseconds, before which it must not be handed out.
    async fn complete(&self, taken: &Taken, then: Option<(Job, i64)>) -> Result<(), QueueError>;

    /// Hands the job out again, not before `not_before` (milliseconds).
    async fn retry(&self, taken: &Taken, not_before: i64) -> Result<(), QueueError>;

    /// Jobs queued and not completed, when the queue can tell cheaply
    /// (the `chat_queue_depth` metric).
    async fn queued_jobs(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }
}

/// Where a process that stores messages enqueues the jobs they owe, when
/// the store does not write them itself in the message's transaction (the
/// SQLite outbox does; JetStream needs a publish before the sender's ack).
#[async_trait]
pub trait JobSink: Send + Sync + 'static {
    /// Durable once it returns; enqueueing the same job twice is harmless.
    async fn enqueue(&self, job: &Job) -> Result<(), QueueError>;
}

/// A queue in memory: jobs are lost with the process. For a ScyllaDB
/// deployment without NATS (where no durable queue is configured; the
/// service warns at start) and for tests.
pub struct MemoryQueue {
    sender: tokio::sync::mpsc::UnboundedSender<Taken>,
    receiver: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Taken>>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        MemoryQueue {
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
        }
    }
}

impl MemoryQueue {
    fn hand_out_at(&self, taken: Taken, not_before: i64) {
        let sender = self.sender.clone();
        let wait = (not_before - crate::now_millis()).max(0) as u64;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            let _ = sender.send(taken);
        });
    }
}

#[async_trait]
impl JobSink for MemoryQueue {
    async fn enqueue(&self, job: &Job) -> Result<(), QueueError> {
        let taken = Taken {
            handle: job.dedup_key(),
            job: job.clone(),
            attempts: 0,
            enqueued_at: crate::now_millis(),
        };
        self.sender
            .send(taken)
            .map_err(|_| QueueError::Backend("memory queue closed".into()))
    }
}

#[async_trait]
impl NotificationQueue for MemoryQueue {
    async fn take(&self, max: usize) -> Result<Vec<Taken>, QueueError> {
        let mut receiver = self.receiver.lock().await;
        let mut out = Vec::new();
        match receiver.recv().await {
            Some(first) => out.push(first),
            None => return Err(QueueError::Backend("memory queue closed".into())),
        }
        while out.len() < max {
            match receiver.try_recv() {
                Ok(next) => out.push(next),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn complete(&self, _taken: &Taken, then: Option<(Job, i64)>) -> Result<(), QueueError> {
        if let Some((job, not_before)) = then {
            let taken = Taken {
                handle: job.dedup_key(),
                job,
                attempts: 0,
                enqueued_at: crate::now_millis(),
            };
            self.hand_out_at(taken, not_before);
        }
        Ok(())
    }

    async fn retry(&self, taken: &Taken, not_before: i64) -> Result<(), QueueError> {
        let mut again = taken.clone();
        again.attempts += 1;
        self.hand_out_at(again, not_before);
        Ok(())
    }

    /// Jobs waiting to be taken (not those waiting for their delay). A
    /// taker holds the receiver only while the queue is empty.
    async fn queued_jobs(&self) -> Result<Option<u64>, QueueError> {
        Ok(Some(match self.receiver.try_lock() {
            Ok(receiver) => receiver.len() as u64,
            Err(_) => 0,
        }))
    }
}
