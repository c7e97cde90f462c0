//! The dispatcher in process: scripted fake senders in place of FCM and
//! APNs, the in-memory queue and store, local presence. No sockets; the
//! collapse window is real time, kept short.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_core::bus::MessageSent;
use chat_core::model::{Device, DevicePlatform};
use chat_core::notify::{Job, JobSink, MemoryQueue, NotificationQueue, QueueError, Taken};
use chat_core::presence::{LocalPresence, Presence};
use chat_core::store::memory::MemoryStore;
use chat_core::store::prelude::*;
use parking_lot::Mutex;

use super::{Dispatcher, PushConfig};
use crate::sender::{PushSender, Senders};
use crate::{Notification, Outcome};

const BUYER: &str = "buyer";
const SELLER: &str = "seller";
const THREAD: &str = "t1";

/// One call of a [`FakeSender`].
#[derive(Debug, Clone)]
struct Call {
    token: String,
    message_id: String,
    collapse_key: String,
    delivered: bool,
    at: Instant,
}

/// A push service whose answers are scripted per token; a token without
/// (or past the end of) a script is delivered to.
#[derive(Default)]
struct FakeSender {
    script: Mutex<HashMap<String, VecDeque<Result<Outcome, String>>>>,
    calls: Mutex<Vec<Call>>,
}

impl FakeSender {
    fn script(&self, token: &str, outcomes: impl IntoIterator<Item = Result<Outcome, String>>) {
        self.script
            .lock()
            .entry(token.to_owned())
            .or_default()
            .extend(outcomes);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    fn calls_to(&self, token: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.token == token)
            .collect()
    }
}

#[async_trait]
impl PushSender for FakeSender {
    async fn push(&self, device: &Device, n: &Notification) -> Result<Outcome, String> {
        let scripted = self
            .script
            .lock()
            .get_mut(&device.token)
            .and_then(|outcomes| outcomes.pop_front());
        let mut calls = self.calls.lock();
        let outcome = scripted.unwrap_or_else(|| {
            Ok(Outcome::Sent {
                id: format!("fake-{}", calls.len()),
            })
        });
        calls.push(Call {
            token: device.token.clone(),
            message_id: n
                .data
                .iter()
                .find(|(k, _)| k == "messageId")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            collapse_key: n.collapse_key.clone(),
            delivered: matches!(outcome, Ok(Outcome::Sent { .. })),
            at: Instant::now(),
        });
        outcome
    }
}

/// [`MemoryQueue`], recording what the dispatcher completes and retries.
/// A retried job is handed out again at once: the test need not sit out
/// the backoff (`requeue_delay` has its own test).
#[derive(Default)]
struct RecordingQueue {
    inner: MemoryQueue,
    /// Dedup keys of completed jobs, in order.
    completed: Mutex<Vec<String>>,
    /// Dedup keys of retried jobs, with the hand-outs they had before.
    retried: Mutex<Vec<(String, u32)>>,
}

#[async_trait]
impl NotificationQueue for RecordingQueue {
    async fn take(&self, max: usize) -> Result<Vec<Taken>, QueueError> {
        self.inner.take(max).await
    }

    async fn complete(&self, taken: &Taken, then: Option<(Job, i64)>) -> Result<(), QueueError> {
        self.completed.lock().push(taken.job.dedup_key());
        self.inner.complete(taken, then).await
    }

    async fn retry(&self, taken: &Taken, _not_before: i64) -> Result<(), QueueError> {
        self.retried
            .lock()
            .push((taken.job.dedup_key(), taken.attempts));
        self.inner.retry(taken, chat_core::now_millis()).await
    }
}

/// The queue key of the push job for message `message_id` to the buyer.
fn key(message_id: &str) -> String {
    format!("push:{message_id}:{BUYER}")
}

fn message_ids(calls: &[Call]) -> Vec<&str> {
    calls.iter().map(|c| c.message_id.as_str()).collect()
}

fn retry(after_ms: u64) -> Result<Outcome, String> {
    Ok(Outcome::Retry {
        after: Some(Duration::from_millis(after_ms)),
        reason: "503 UNAVAILABLE".into(),
    })
}

/// Polls `done` until it holds; fails the test after ten seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Harness {
    dispatcher: Arc<Dispatcher>,
    store: Arc<MemoryStore>,
    queue: Arc<RecordingQueue>,
    presence: Arc<LocalPresence>,
    fcm: Arc<FakeSender>,
    apns: Arc<FakeSender>,
    started: Option<Instant>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    fn new(collapse_window: Duration) -> Harness {
        let store = Arc::new(MemoryStore::new());
        let queue = Arc::new(RecordingQueue::default());
        let presence = Arc::new(LocalPresence::new());
        let fcm = Arc::new(FakeSender::default());
        let apns = Arc::new(FakeSender::default());
        let config = PushConfig {
            collapse_window_ms: collapse_window.as_millis() as u64,
            ..PushConfig::default()
        };
        let dispatcher = Dispatcher::with_senders(
            &config,
            Senders {
                fcm: Some(fcm.clone()),
                apns: Some(apns.clone()),
            },
            None,
            store.clone(),
            Some(presence.clone()),
            queue.clone(),
        );
        Harness {
            dispatcher,
            store,
            queue,
            presence,
            fcm,
            apns,
            started: None,
            stop: None,
            running: None,
        }
    }

    async fn device(&self, token: &str, platform: DevicePlatform) {
        self.store
            .put_device(&Device {
                token: token.into(),
                user_id: BUYER.into(),
                platform,
                app_id: "com.example.shop".into(),
                locale: "vi".into(),
                updated_at: chat_core::now_millis(),
            })
            .await
            .unwrap();
    }

    async fn tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = (self.store.devices_of(BUYER).await.unwrap())
            .into_iter()
            .map(|d| d.token)
            .collect();
        tokens.sort();
        tokens
    }

    /// The seller sends `message_id` to the buyer: its push job is queued
    /// (a second call with the same id is the queue handing it out again).
    async fn message(&self, message_id: &str) {
        let sent = MessageSent {
            thread_id: THREAD.into(),
            message_id: message_id.into(),
            from_user_id: SELLER.into(),
            to_user_id: BUYER.into(),
        };
        self.queue.inner.enqueue(&Job::Push(sent)).await.unwrap();
    }

    fn start(&mut self) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dispatcher = self.dispatcher.clone();
        self.started = Some(Instant::now());
        self.stop = Some(stop);
        self.running = Some(tokio::spawn(dispatcher.run_until(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        )));
    }

    async fn stop(&mut self) {
        let _ = self.stop.take().expect("started").send(());
        self.running.take().expect("started").await.unwrap();
    }

    fn completed(&self) -> Vec<String> {
        self.queue.completed.lock().clone()
    }

    fn is_completed(&self, message_id: &str) -> bool {
        self.completed().contains(&key(message_id))
    }

    fn retried(&self) -> Vec<(String, u32)> {
        self.queue.retried.lock().clone()
    }

    async fn mark(&self, token: &str) -> Option<String> {
        self.store
            .notified_up_to(
                BUYER,
                THREAD,
                &chat_core::model::MarkChannel::Push {
                    token: token.to_owned(),
                },
            )
            .await
            .unwrap()
    }

    /// Outcome labels of the notification log, sorted.
    async fn logged(&self) -> Vec<String> {
        let mut outcomes: Vec<String> = (self.store.notifications_of(BUYER, 100).await.unwrap())
            .into_iter()
            .map(|a| a.outcome.as_str().to_owned())
            .collect();
        outcomes.sort();
        outcomes
    }
}

#[tokio::test]
async fn messages_within_the_window_make_one_push_then_one_update() {
    let window = Duration::from_millis(1000);
    let mut h = Harness::new(window);
    h.device("phone", DevicePlatform::Fcm).await;
    for m in ["m1", "m2", "m3"] {
        h.message(m).await;
    }
    h.start();
    eventually("the first push", || h.is_completed("m1")).await;
    // Well inside the window: the later messages are folded, not sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        message_ids(&h.fcm.calls()),
        ["m1"],
        "one push for the first message only"
    );
    assert_eq!(h.completed(), [key("m1")], "m2 and m3 wait for the update");

    eventually("the folded update", || h.fcm.calls().len() >= 2).await;
    eventually("the folded jobs' completion", || h.completed().len() == 3).await;
    h.stop().await;
    let calls = h.fcm.calls();
    assert_eq!(
        message_ids(&calls),
        ["m1", "m3"],
        "one update, for the latest message"
    );
    assert!(
        calls[1].at >= h.started.unwrap() + window,
        "the update waits for the end of the window"
    );
    assert_eq!(calls[0].collapse_key, calls[1].collapse_key);
    let mut completed = h.completed();
    completed.sort();
    assert_eq!(completed, [key("m1"), key("m2"), key("m3")]);
    assert!(h.retried().is_empty());
    assert_eq!(h.mark("phone").await.as_deref(), Some("m3"));
}

#[tokio::test]
async fn stopping_sends_the_folded_update_at_once() {
    let mut h = Harness::new(Duration::from_secs(600));
    h.device("phone", DevicePlatform::Fcm).await;
    h.message("m1").await;
    h.message("m2").await;
    h.start();
    eventually("the first push", || h.is_completed("m1")).await;
    assert_eq!(message_ids(&h.fcm.calls()), ["m1"]);
    h.stop().await;
    assert_eq!(
        message_ids(&h.fcm.calls()),
        ["m1", "m2"],
        "the folded update goes out when the worker stops, not after the window"
    );
    assert_eq!(h.completed(), [key("m1"), key("m2")]);
}

#[tokio::test]
async fn a_transient_failure_is_retried_then_delivered_once() {
    let mut h = Harness::new(Duration::ZERO);
    h.device("phone", DevicePlatform::Fcm).await;
    h.fcm.script("phone", [retry(20)]);
    h.message("m1").await;
    h.start();
    eventually("the push job's completion", || h.is_completed("m1")).await;
    let calls = h.fcm.calls();
    assert_eq!(
        message_ids(&calls),
        ["m1", "m1"],
        "retried within the hand-out"
    );
    assert_eq!(calls.iter().filter(|c| c.delivered).count(), 1);
    assert!(h.retried().is_empty(), "no need to go back to the queue");
    assert_eq!(h.mark("phone").await.as_deref(), Some("m1"));
    assert_eq!(h.logged().await, ["retry", "sent"]);

    // The queue hands the job out again (at least once): nothing is sent.
    h.message("m1").await;
    eventually("the second hand-out", || h.completed().len() == 2).await;
    h.stop().await;
    assert_eq!(h.fcm.calls().len(), 2, "no duplicate push");
    assert_eq!(h.tokens().await, ["phone"]);
}

#[tokio::test]
async fn failures_past_the_quick_attempts_send_the_job_back_to_the_queue() {
    let mut h = Harness::new(Duration::ZERO);
    h.device("phone", DevicePlatform::Fcm).await;
    h.fcm.script(
        "phone",
        [Err("connection reset".into()), retry(10), retry(10)],
    );
    h.message("m1").await;
    h.start();
    eventually("the push job's completion", || h.is_completed("m1")).await;
    h.stop().await;
    assert_eq!(
        h.retried(),
        [(key("m1"), 0)],
        "requeued once, after its first hand-out"
    );
    let calls = h.fcm.calls();
    assert_eq!(calls.len(), 4, "three quick attempts, then one more");
    assert_eq!(
        calls.iter().map(|c| c.delivered).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(h.completed(), [key("m1")]);
    assert_eq!(
        h.tokens().await,
        ["phone"],
        "a transient failure prunes nothing"
    );
}

#[tokio::test]
async fn a_dead_token_is_pruned_and_not_retried() {
    let mut h = Harness::new(Duration::ZERO);
    h.device("old-phone", DevicePlatform::Fcm).await;
    h.device("browser", DevicePlatform::Web).await;
    h.device("iphone", DevicePlatform::Apns).await;
    h.fcm.script(
        "old-phone",
        [Ok(Outcome::TokenGone {
            reason: "404 UNREGISTERED".into(),
        })],
    );
    h.message("m1").await;
    h.start();
    eventually("the push job's completion", || h.is_completed("m1")).await;
    assert_eq!(h.fcm.calls_to("old-phone").len(), 1, "not retried");
    assert_eq!(message_ids(&h.fcm.calls_to("browser")), ["m1"]);
    assert_eq!(message_ids(&h.apns.calls()), ["m1"]);
    assert!(h.retried().is_empty());
    assert_eq!(
        h.tokens().await,
        ["browser", "iphone"],
        "the dead token pruned"
    );
    assert_eq!(h.mark("old-phone").await, None);

    h.message("m2").await;
    eventually("the next push job", || h.is_completed("m2")).await;
    h.stop().await;
    assert_eq!(
        h.fcm.calls_to("old-phone").len(),
        1,
        "nothing more sent to it"
    );
    assert_eq!(message_ids(&h.fcm.calls_to("browser")), ["m1", "m2"]);
}

#[tokio::test]
async fn a_rejected_payload_is_neither_retried_nor_pruned() {
    let mut h = Harness::new(Duration::ZERO);
    h.device("phone", DevicePlatform::Fcm).await;
    h.fcm.script(
        "phone",
        [Ok(Outcome::Rejected {
            reason: "400 INVALID_ARGUMENT: bad payload".into(),
        })],
    );
    h.message("m1").await;
    h.start();
    eventually("the push job's completion", || h.is_completed("m1")).await;
    h.stop().await;
    assert_eq!(h.fcm.calls().len(), 1);
    assert!(h.retried().is_empty());
    assert_eq!(h.tokens().await, ["phone"]);
    assert_eq!(h.logged().await, ["rejected"]);
}

#[tokio::test]
async fn no_push_to_a_recipient_who_is_online() {
    // A long window: a message the recipient saw live must not hold back
    // the push of the next one.
    let mut h = Harness::new(Duration::from_secs(600));
    h.device("phone", DevicePlatform::Fcm).await;
    h.presence.session_started(BUYER, "buyer:phone@1");
    h.message("m1").await;
    h.start();
    eventually("the push job's completion", || h.is_completed("m1")).await;
    assert!(h.fcm.calls().is_empty(), "the app shows it live");
    assert!(h.logged().await.is_empty());

    h.presence.session_ended(BUYER, "buyer:phone@1");
    h.message("m2").await;
    eventually("the push once offline", || h.is_completed("m2")).await;
    h.stop().await;
    assert_eq!(
        message_ids(&h.fcm.calls()),
        ["m2"],
        "pushed at once: m1 opened no collapse window"
    );
    assert!(h.retried().is_empty());
}

#[tokio::test]
async fn a_folded_update_is_dropped_when_the_recipient_comes_back() {
    let mut h = Harness::new(Duration::from_millis(500));
    h.device("phone", DevicePlatform::Fcm).await;
    h.message("m1").await;
    h.message("m2").await;
    h.start();
    eventually("the first push", || h.is_completed("m1")).await;
    h.presence.session_started(BUYER, "buyer:phone@1");
    eventually("the folded job's completion", || h.is_completed("m2")).await;
    h.stop().await;
    assert_eq!(message_ids(&h.fcm.calls()), ["m1"], "no update once online");
    assert!(h.retried().is_empty());
}
