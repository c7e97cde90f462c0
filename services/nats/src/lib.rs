//! NATS JetStream adapters. Today: the notification queue of a scaled-out
//! deployment, where gateways (or persistence workers) publish push jobs
//! and any number of `chatd push` replicas share them.
//!
//! - One stream (`CHAT_NOTIFY` by default) with work-queue retention: a
//!   job is deleted once a worker acknowledges it; file storage, so a
//!   restart of `nats-server` keeps the jobs.
//! - Publishes carry `Nats-Msg-Id` = the job's dedup key: a retried send
//!   (the sender lost its ack and sends again) publishes nothing new within
//!   the stream's duplicate window; later redeliveries are absorbed by the
//!   notified marks in the store.
//! - One durable pull consumer (`push`) shared by every worker: JetStream
//!   hands each job to one of them; a job not acknowledged within
//!   `ack_wait` (its worker died) goes to another.
//! - Delays (a digest due in 15 minutes, a retry after an outage) are
//!   negative acknowledgements with a delay: JetStream redelivers the job
//!   then; a job taken before its `Chat-Not-Before` time is put back the
//!   same way.

pub mod cluster;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, message::Acker, stream};
use async_trait::async_trait;
use chat_core::notify::{Job, JobSink, NotificationQueue, QueueError, Taken};
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Section `[nats]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    /// `nats://host:4222` (several, comma-separated); NATS is off when unset.
    pub url: Option<String>,
    /// Optional credentials: a `.creds` file (NGS / operator mode).
    pub credentials_file: Option<std::path::PathBuf>,
    pub notify_stream: String,
    pub notify_consumer: String,
    /// Copies of the stream in a NATS cluster (1 for a single server).
    pub replicas: usize,
    /// A job a worker took and did not finish within this goes to another.
    pub ack_wait_secs: u64,
    /// Within this, a second publish of the same job is dropped by NATS.
    pub duplicate_window_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            credentials_file: None,
            notify_stream: "CHAT_NOTIFY".into(),
            notify_consumer: "push".into(),
            replicas: 1,
            ack_wait_secs: 120,
            duplicate_window_secs: 120,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS is not configured (nats.url)")]
    NotConfigured,
    #[error("connecting to NATS: {0}")]
    Connect(String),
    #[error("JetStream setup: {0}")]
    Setup(String),
}

const NOT_BEFORE: &str = "Chat-Not-Before";
const SUBJECT_PREFIX: &str = "chat.notify";

fn backend(e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(e.to_string())
}

pub struct JetStreamQueue {
    /// The connection, for readiness (`connection_state`).
    client: async_nats::Client,
    context: jetstream::Context,
    consumer: consumer::Consumer<consumer::pull::Config>,
    /// Jobs handed out and not yet completed, by handle.
    pending: Mutex<HashMap<String, Acker>>,
    /// The consumer's message stream, opened on first use.
    messages: tokio::sync::Mutex<Option<consumer::pull::Stream>>,
}

/// Connects to `nats.url` with `options` plus the configured credentials,
/// retrying until the server answers, for at most 30 s.
pub(crate) async fn connect_with(
    config: &NatsConfig,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, NatsError> {
    let url = config.url.as_deref().ok_or(NatsError::NotConfigured)?;
    let mut options = options.retry_on_initial_connect();
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
    }
    tokio::time::timeout(Duration::from_secs(30), options.connect(url))
        .await
        .map_err(|_| NatsError::Connect(format!("{url}: timed out")))?
        .map_err(|e| NatsError::Connect(format!("{url}: {e}")))
}

/// Jobs one worker pulls ahead of handling them.
const PREFETCH: usize = 16;

impl JetStreamQueue {
    /// Connects and creates the stream and the shared consumer if absent.
    pub async fn connect(config: &NatsConfig) -> Result<JetStreamQueue, NatsError> {
        let client = connect_with(config, async_nats::ConnectOptions::new().name("chatd")).await?;
        let context = jetstream::new(client.clone());
        let stream = context
            .get_or_create_stream(stream::Config {
                name: config.notify_stream.clone(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: Duration::from_secs(config.duplicate_window_secs),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Setup(e.to_string()))?;
        let consumer = stream
            .get_or_create_consumer(
                &config.notify_consumer,
                consumer::pull::Config {
                    durable_name: Some(config.notify_consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(config.ack_wait_secs),
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| NatsError::Setup(e.to_string()))?;
        Ok(JetStreamQueue {
            client,
            context,
            consumer,
            pending: Mutex::new(HashMap::new()),
            messages: tokio::sync::Mutex::new(None),
        })
    }

    async fn publish(&self, job: &Job, not_before: Option<i64>) -> Result<(), QueueError> {
        let subject = match job {
            Job::Push(_) => format!("{SUBJECT_PREFIX}.push"),
            Job::Digest { .. } => format!("{SUBJECT_PREFIX}.digest"),
        };
        let mut publish = jetstream::context::Publish::build()
            .payload(job.encode().into())
            .message_id(match not_before {
                // One digest per thread per due time.
                Some(at) => format!("{}:{at}", job.dedup_key()),
                None => job.dedup_key(),
            });
        if let Some(at) = not_before {
            publish = publish.header(NOT_BEFORE, at.to_string().as_str());
        }
        // The second await is JetStream's acknowledgement: stored.
        self.context
            .send_publish(subject, publish)
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// A delivered message as a job, or `None` when it is not due yet
    /// (put back with a delay) or unreadable (terminated).
    async fn accept(&self, message: jetstream::Message) -> Result<Option<Taken>, QueueError> {
        let (attempts, enqueued_at, handle) = match message.info() {
            Ok(info) => (
                (info.delivered.max(1) - 1) as u32,
                (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
                format!("{}:{}", info.stream_sequence, info.delivered),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "JetStream message without metadata");
                return Ok(None);
            }
        };
        let due = not_before(message.headers.as_ref());
        let (message, acker) = message.split();
        if let Some(due) = due {
            let wait = due - chat_core::now_millis();
            if wait > 0 {
                let delay = Duration::from_millis(wait as u64);
                acker
                    .ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(backend)?;
                return Ok(None);
            }
        }
        match Job::decode(&message.payload) {
            Ok(job) => {
                self.pending.lock().insert(handle.clone(), acker);
                Ok(Some(Taken {
                    job,
                    attempts,
                    enqueued_at,
                    handle,
                }))
            }
            Err(e) => {
                // Never decodable: terminated rather than redelivered forever.
                tracing::error!(error = %e, "unreadable job dropped from JetStream");
                let _ = acker.ack_with(AckKind::Term).await;
                Ok(None)
            }
        }
    }

    /// Readiness: connected to a NATS server now (the client reconnects
    /// by itself; until then publishes wait and sends are refused).
    pub fn check_connected(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("nats {state}")),
        }
    }

    fn acker(&self, taken: &Taken) -> Result<Acker, QueueError> {
        self.pending
            .lock()
            .remove(&taken.handle)
            .ok_or_else(|| QueueError::Malformed(format!("unknown handle {}", taken.handle)))
    }
}

fn not_before(headers: Option<&HeaderMap>) -> Option<i64> {
    headers?.get(NOT_BEFORE)?.as_str().parse().ok()
}

#[async_trait]
impl JobSink for JetStreamQueue {
    async fn enqueue(&self, job: &Job) -> Result<(), QueueError> {
        self.publish(job, None).await
    }
}

#[async_trait]
impl NotificationQueue for JetStreamQueue {
    async fn take(&self, max: usize) -> Result<Vec<Taken>, QueueError> {
        let mut messages = self.messages.lock().await;
        loop {
            if messages.is_none() {
                // A small prefetch: what this worker holds, the others
                // cannot take.
                let stream = self
                    .consumer
                    .stream()
                    .max_messages_per_batch(PREFETCH)
                    .messages()
                    .await
                    .map_err(backend)?;
                *messages = Some(stream);
            }
            let stream = messages.as_mut().expect("just set");
            let first = match stream.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "JetStream consumer: reconnecting");
                    *messages = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => {
                    *messages = None;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < max {
                match stream.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    _ => break,
                }
            }
            let mut out = Vec::new();
            for message in batch {
                if let Some(taken) = self.accept(message).await? {
                    out.push(taken);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    async fn complete(&self, taken: &Taken, then: Option<(Job, i64)>) -> Result<(), QueueError> {
        // The follow-up first: a crash in between redelivers this job,
        // whose follow-up is then deduplicated, instead of losing it.
        if let Some((job, at)) = then {
            self.publish(&job, Some(at)).await?;
        }
        let acker = self.acker(taken)?;
        acker.double_ack().await.map_err(backend)
    }

    async fn retry(&self, taken: &Taken, not_before: i64) -> Result<(), QueueError> {
        let acker = self.acker(taken)?;
        let wait = (not_before - chat_core::now_millis()).max(0) as u64;
        acker
            .ack_with(AckKind::Nak(Some(Duration::from_millis(wait))))
            .await
            .map_err(backend)
    }

    /// Jobs in the shared consumer not yet delivered plus those delivered
    /// and not yet acknowledged (one request to the server).
    async fn queued_jobs(&self) -> Result<Option<u64>, QueueError> {
        let mut consumer = self.consumer.clone();
        let info = consumer.info().await.map_err(backend)?;
        Ok(Some(info.num_pending + info.num_ack_pending as u64))
    }
}
