//! The notification service. It takes jobs from the durable queue
//! (`chat_core::notify`): for a push job whose recipient has no live
//! session, one push per registered device, collapsed per thread (see
//! `collapse`), through FCM (Android and web tokens) or APNs; then, if
//! e-mail is configured, a digest job due after the e-mail delay, which
//! mails the unread messages of the thread if they are still unread.
//!
//! A job is completed only once every device was answered for it (sent,
//! token gone, payload rejected); otherwise it goes back to the queue with
//! a growing delay, so an FCM outage or a crash of this process delays
//! notifications but never drops them. The queue hands jobs out at least
//! once; the per-device and e-mail marks (`notified_up_to`) turn that into
//! "notified once".

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::bus::MessageSent;
use chat_core::i18n::Lang;
use chat_core::model::{
    AttemptOutcome, Device, DevicePlatform, MarkChannel, MessageRange, NotificationAttempt,
    NotifyChannel,
};
use chat_core::notify::{Job, NotificationQueue, Taken};
use chat_core::presence::Presence;
use chat_core::store::ChatStore;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::apns::{ApnsClient, ApnsConfig};
use crate::collapse::Collapser;
use crate::email::{Digest, DigestLine, EmailConfig, EmailError, Mailer};
use crate::fcm::{FcmClient, FcmConfig, ServiceAccount};
use crate::sender::{PushSender, Senders};
use crate::{Notification, Outcome};

/// Section `[push]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushConfig {
    /// At most one push per user and thread per window.
    pub collapse_window_ms: u64,
    /// A push still owed this long after its message is dropped (the
    /// digest e-mail covers it): a day-old lock-screen alert helps nobody.
    pub max_age_secs: u64,
    /// Whether `chatd serve` runs the notification service itself; false
    /// when `chatd push` replicas share the work over NATS JetStream.
    pub in_process: bool,
    pub fcm: FcmSettings,
    pub apns: ApnsSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FcmSettings {
    /// Google's service-account JSON; FCM is off when unset.
    pub service_account_file: Option<std::path::PathBuf>,
    pub base_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApnsSettings {
    /// The team's `.p8` key; APNs is off when unset.
    pub private_key_file: Option<std::path::PathBuf>,
    pub key_id: String,
    pub team_id: String,
    pub base_url: String,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            collapse_window_ms: 30_000,
            max_age_secs: 24 * 3600,
            in_process: true,
            fcm: FcmSettings {
                service_account_file: None,
                base_url: "https://fcm.googleapis.com".into(),
            },
            apns: ApnsSettings {
                private_key_file: None,
                key_id: String::new(),
                team_id: String::new(),
                base_url: "https://api.push.apple.com".into(),
            },
        }
    }
}

impl Default for FcmSettings {
    fn default() -> Self {
        PushConfig::default().fcm
    }
}

impl Default for ApnsSettings {
    fn default() -> Self {
        PushConfig::default().apns
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("FCM: {0}")]
    Fcm(#[from] crate::fcm::FcmError),
    #[error("APNs: {0}")]
    Apns(#[from] crate::apns::ApnsError),
    #[error("e-mail: {0}")]
    Email(#[from] EmailError),
}

fn read(path: &std::path::Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|error| SetupError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// Quick attempts per device within one hand-out of a job; after them the
/// job goes back to the queue.
const QUICK_ATTEMPTS: u32 = 3;
/// Deliveries running at once (each holds HTTP requests).
const IN_FLIGHT: usize = 256;
/// Messages quoted in a digest e-mail.
const DIGEST_LINES: u32 = 5;

/// What became of one device for one push.
enum DeviceResult {
    /// Nothing more to do (sent, already sent, token gone, rejected).
    Done,
    /// Try again later, not before the given delay if the provider said so.
    Later(Option<Duration>),
}

pub struct Dispatcher {
    store: Arc<dyn ChatStore>,
    /// `None` in a process that cannot see sessions (`chatd push`): jobs
    /// are then enqueued only for recipients offline at send time.
    presence: Option<Arc<dyn Presence>>,
    queue: Arc<dyn NotificationQueue>,
    /// FCM (Android and web tokens) and APNs, behind [`PushSender`].
    senders: Senders,
    mailer: Option<Mailer>,
    config: PushConfig,
    collapser: Mutex<Collapser<Taken>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Deliveries and digests under way, awaited when the worker stops.
    tasks: TaskTracker,
}

/// Backoff before a job is handed out again: 5 s doubling to 10 min.
fn requeue_delay(attempts: u32, provider: Option<Duration>) -> Duration {
    let ours = Duration::from_secs(5u64.saturating_mul(1 << attempts.min(7)))
        .min(Duration::from_secs(600));
    provider.map_or(ours, |p| p.max(ours))
}

fn later(delay: Duration) -> i64 {
    chat_core::now_millis() + delay.as_millis() as i64
}

impl Dispatcher {
    pub fn new(
        config: &PushConfig,
        email: &EmailConfig,
        store: Arc<dyn ChatStore>,
        presence: Option<Arc<dyn Presence>>,
        queue: Arc<dyn NotificationQueue>,
    ) -> Result<Arc<Dispatcher>, SetupError> {
        let timeout = Duration::from_secs(10);
        let fcm = match &config.fcm.service_account_file {
            Some(path) => Some(Arc::new(FcmClient::new(FcmConfig {
                base_url: config.fcm.base_url.clone(),
                account: ServiceAccount::from_json(&read(path)?)?,
                timeout,
            })?) as Arc<dyn PushSender>),
            None => None,
        };
        let apns = match &config.apns.private_key_file {
            Some(path) => Some(Arc::new(ApnsClient::new(ApnsConfig {
                base_url: config.apns.base_url.clone(),
                team_id: config.apns.team_id.clone(),
                key_id: config.apns.key_id.clone(),
                private_key_pem: read(path)?,
                timeout,
            })?) as Arc<dyn PushSender>),
            None => None,
        };
        Ok(Dispatcher::with_senders(
            config,
            Senders { fcm, apns },
            Mailer::from_config(email)?,
            store,
            presence,
            queue,
        ))
    }

    /// A dispatcher over the given senders (and mailer, if any) rather
    /// than the ones `config` describes: for tests, with fakes.
    pub fn with_senders(
        config: &PushConfig,
        senders: Senders,
        mailer: Option<Mailer>,
        store: Arc<dyn ChatStore>,
        presence: Option<Arc<dyn Presence>>,
        queue: Arc<dyn NotificationQueue>,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store,
            presence,
            queue,
            senders,
            mailer,
            config: config.clone(),
            collapser: Mutex::new(Collapser::new(Duration::from_millis(
                config.collapse_window_ms,
            ))),
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            tasks: TaskTracker::new(),
        })
    }

    /// Whether any channel (FCM, APNs, e-mail) is configured.
    pub fn has_channels(config: &PushConfig, email: &EmailConfig) -> bool {
        config.fcm.service_account_file.is_some()
            || config.apns.private_key_file.is_some()
            || email.smtp_url.is_some()
    }

    fn online(&self, user_id: &str) -> bool {
        self.presence
            .as_ref()
            .is_some_and(|p| p.status(user_id).online)
    }

    /// Takes jobs for as long as the process runs.
    pub async fn run(self: Arc<Self>) {
        self.run_until(std::future::pending(), Duration::ZERO).await
    }

    /// Takes jobs until `stop` resolves, then stops taking, sends every
    /// update still folded in the collapser, and waits up to `grace` for
    /// the sends under way. Jobs taken and not completed by then are handed
    /// out again by the queue (at least once), so stopping loses nothing.
    pub async fn run_until(self: Arc<Self>, stop: impl Future<Output = ()>, grace: Duration) {
        // Taking runs in its own task: a take cut short by `select!` could
        // leave jobs it had leased waiting for their lease to expire.
        let (batches, mut taken) = tokio::sync::mpsc::channel::<Vec<Taken>>(1);
        let queue = self.queue.clone();
        let taker = tokio::spawn(async move {
            loop {
                match queue.take(64).await {
                    Ok(batch) => {
                        if batches.send(batch).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "notification queue unavailable");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let mut stop = std::pin::pin!(stop);
        loop {
            let next = self
                .collapser
                .lock()
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                batch = taken.recv() => match batch {
                    Some(batch) => {
                        for job in batch {
                            self.accept(job).await;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next.into()) => {
                    let due = self.collapser.lock().due(Instant::now());
                    for jobs in due {
                        self.tasks.spawn(self.clone().deliver(jobs));
                    }
                }
                _ = &mut stop => break,
            }
        }
        taker.abort();
        // A batch already handed over is ours to finish.
        while let Ok(batch) = taken.try_recv() {
            for job in batch {
                self.accept(job).await;
            }
        }
        let folded = self.collapser.lock().flush();
        tracing::info!(
            folded = folded.len(),
            under_way = self.tasks.len(),
            "notifications: stopped taking jobs; finishing those taken"
        );
        for jobs in folded {
            self.tasks.spawn(self.clone().deliver(jobs));
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                under_way = self.tasks.len(),
                "notifications: sends still under way at the deadline; their jobs will be handed out again"
            );
        }
    }

    async fn accept(self: &Arc<Self>, taken: Taken) {
        match &taken.job {
            Job::Push(sent) => {
                let age = chat_core::now_millis() - taken.enqueued_at;
                if age > (self.config.max_age_secs * 1000) as i64 {
                    tracing::info!(message_id = sent.message_id, age, "push too old: dropped");
                    self.complete(&taken, false).await;
                    return;
                }
                if self.online(&sent.to_user_id) {
                    tracing::debug!(user_id = sent.to_user_id, "recipient online: no push");
                    self.complete(&taken, false).await;
                    return;
                }
                let (user, thread) = (sent.to_user_id.clone(), sent.thread_id.clone());
                let message_id = sent.message_id.clone();
                let now = self
                    .collapser
                    .lock()
                    .offer(&user, &thread, taken, Instant::now());
                match now {
                    Some(taken) => {
                        self.tasks.spawn(self.clone().deliver(vec![taken]));
                    }
                    None => {
                        tracing::debug!(message_id, "push folded into the thread's next update")
                    }
                }
            }
            Job::Digest { .. } => {
                self.tasks.spawn(self.clone().digest(taken));
            }
        }
    }

    /// Done with a job; a push job owes a digest check later, if e-mail is
    /// configured.
    async fn complete(&self, taken: &Taken, with_digest: bool) {
        let then = match (&taken.job, &self.mailer) {
            (Job::Push(sent), Some(mailer)) if with_digest => Some((
                Job::Digest {
                    user_id: sent.to_user_id.clone(),
                    thread_id: sent.thread_id.clone(),
                },
                later(Duration::from_secs(mailer.config.delay_secs)),
            )),
            _ => None,
        };
        if let Err(e) = self.queue.complete(taken, then).await {
            // It will be handed out again and skipped thanks to the marks.
            tracing::warn!(error = %e, "completing a notification job failed");
        }
    }

    async fn requeue(&self, taken: &Taken, provider: Option<Duration>) {
        let delay = requeue_delay(taken.attempts, provider);
        tracing::info!(
            job = taken.job.dedup_key(),
            ?delay,
            attempts = taken.attempts,
            "notification job requeued"
        );
        if let Err(e) = self.queue.retry(taken, later(delay)).await {
            tracing::warn!(error = %e, "requeueing a notification job failed");
        }
    }

    /// One push (for the latest of `jobs`, which are every message folded
    /// into it) to each of the recipient's devices.
    async fn deliver(self: Arc<Self>, jobs: Vec<Taken>) {
        let Some(latest) = jobs.last() else { return };
        let Job::Push(sent) = latest.job.clone() else {
            return;
        };
        let _permit = self.in_flight.clone().acquire_owned().await;
        // A folded update may find the user back online by now.
        if self.online(&sent.to_user_id) {
            for job in &jobs {
                self.complete(job, false).await;
            }
            return;
        }
        let outcome = self.push_to_devices(&sent).await;
        for job in &jobs {
            match outcome {
                DeviceResult::Done => self.complete(job, true).await,
                DeviceResult::Later(after) => self.requeue(job, after).await,
            }
        }
    }

    async fn push_to_devices(self: &Arc<Self>, sent: &MessageSent) -> DeviceResult {
        let devices = match self.store.devices_of(&sent.to_user_id).await {
            Ok(devices) => devices,
            Err(e) => {
                tracing::warn!(user_id = sent.to_user_id, error = %e, "push: devices unavailable");
                return DeviceResult::Later(None);
            }
        };
        if devices.is_empty() {
            return DeviceResult::Done;
        }
        let notification = match self.compose(sent).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(thread_id = sent.thread_id, error = %e, "push: thread unavailable");
                return DeviceResult::Later(None);
            }
        };
        let sends = devices.into_iter().map(|device| {
            let this = self.clone();
            let n = notification.clone();
            let sent = sent.clone();
            tokio::spawn(async move { this.push_to_device(device, n, sent).await })
        });
        let mut result = DeviceResult::Done;
        for send in sends.collect::<Vec<_>>() {
            if let Ok(DeviceResult::Later(after)) = send.await {
                let longest = match result {
                    DeviceResult::Later(Some(previous)) => {
                        after.map(|a| a.max(previous)).or(Some(previous))
                    }
                    _ => after,
                };
                result = DeviceResult::Later(longest);
            }
        }
        result
    }

    async fn compose(
        &self,
        sent: &MessageSent,
    ) -> Result<Notification, chat_core::store::StoreError> {
        let thread = self.store.thread(&sent.thread_id).await?;
        let sender = self.store.user(&sent.from_user_id).await?;
        let title = sender
            .map(|u| u.display_name)
            .unwrap_or_else(|| sent.from_user_id.clone());
        let body = thread
            .as_ref()
            .and_then(|t| t.last_message.as_ref())
            .map(|m| m.text.clone())
            .unwrap_or_default();
        Ok(Notification {
            title,
            body,
            collapse_key: format!("thread-{}", sent.thread_id),
            badge: self.total_unread(&sent.to_user_id).await?,
            data: vec![
                ("threadId".into(), sent.thread_id.clone()),
                ("messageId".into(), sent.message_id.clone()),
            ],
        })
    }

    /// The app icon's badge: unread messages over the user's most recent
    /// threads (each thread's count is itself capped at 100).
    async fn total_unread(&self, user_id: &str) -> Result<u32, chat_core::store::StoreError> {
        const BADGE_THREADS: usize = 50;
        let threads = self.store.threads_of(user_id, None, BADGE_THREADS).await?;
        Ok(threads.iter().map(|t| t.unread_for(user_id)).sum())
    }

    #[allow(clippy::too_many_arguments)]
    async fn log(
        &self,
        user_id: &str,
        thread_id: &str,
        message_id: &str,
        channel: NotifyChannel,
        device: String,
        outcome: AttemptOutcome,
        error: Option<String>,
        latency_ms: u64,
    ) {
        chat_ops::metrics().push_attempt(channel.as_str(), outcome.as_str());
        let attempt = NotificationAttempt {
            id: chat_core::new_id(),
            user_id: user_id.to_owned(),
            thread_id: thread_id.to_owned(),
            message_id: message_id.to_owned(),
            channel,
            device,
            outcome,
            error,
            latency_ms: latency_ms as i64,
            at: chat_core::now_millis(),
        };
        if let Err(e) = self.store.log_notification(&attempt).await {
            tracing::warn!(error = %e, "writing the notification log failed");
        }
    }

    async fn send_once(
        &self,
        device: &Device,
        n: &Notification,
    ) -> Option<Result<Outcome, String>> {
        let sender = match device.platform {
            // FCM HTTP v1 also delivers to web (browser) registration tokens.
            DevicePlatform::Fcm | DevicePlatform::Web => self.senders.fcm.as_ref()?,
            DevicePlatform::Apns => self.senders.apns.as_ref()?,
        };
        Some(sender.push(device, n).await)
    }

    async fn push_to_device(
        &self,
        device: Device,
        n: Notification,
        sent: MessageSent,
    ) -> DeviceResult {
        let channel = MarkChannel::Push {
            token: device.token.clone(),
        };
        match self
            .store
            .notified_up_to(&sent.to_user_id, &sent.thread_id, &channel)
            .await
        {
            Ok(Some(mark)) if mark >= sent.message_id => {
                tracing::debug!(
                    message_id = sent.message_id,
                    "already pushed to this device"
                );
                return DeviceResult::Done;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "push: notified marks unavailable");
                return DeviceResult::Later(None);
            }
        }
        // Enough of the token to tell devices apart, not enough to use it.
        let tail: String = {
            let chars: Vec<char> = device.token.chars().collect();
            chars[chars.len().saturating_sub(6)..].iter().collect()
        };
        let platform = device.platform.as_str();
        let mut provider_delay = None;
        for attempt in 0..QUICK_ATTEMPTS {
            let started = Instant::now();
            let Some(outcome) = self.send_once(&device, &n).await else {
                tracing::debug!(platform, "no sender configured for this platform");
                return DeviceResult::Done;
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let (label, error) = match &outcome {
                Ok(Outcome::Sent { .. }) => (AttemptOutcome::Sent, None),
                Ok(Outcome::TokenGone { reason }) => {
                    (AttemptOutcome::TokenGone, Some(reason.clone()))
                }
                Ok(Outcome::Retry { reason, .. }) => (AttemptOutcome::Retry, Some(reason.clone())),
                Ok(Outcome::Rejected { reason }) => {
                    (AttemptOutcome::Rejected, Some(reason.clone()))
                }
                Err(e) => (AttemptOutcome::Error, Some(e.clone())),
            };
            self.log(
                &sent.to_user_id,
                &sent.thread_id,
                &sent.message_id,
                NotifyChannel::of(device.platform),
                format!("…{tail}"),
                label,
                error,
                latency_ms,
            )
            .await;
            match outcome {
                Ok(Outcome::Sent { id }) => {
                    tracing::info!(
                        user_id = sent.to_user_id,
                        thread_id = sent.thread_id,
                        platform,
                        id,
                        latency_ms,
                        "push sent"
                    );
                    if let Err(e) = self
                        .store
                        .set_notified_up_to(
                            &sent.to_user_id,
                            &sent.thread_id,
                            &channel,
                            &sent.message_id,
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "recording a sent push failed");
                    }
                    return DeviceResult::Done;
                }
                Ok(Outcome::TokenGone { reason }) => {
                    tracing::info!(
                        user_id = sent.to_user_id,
                        platform,
                        reason,
                        "push token gone: pruned"
                    );
                    if let Err(e) = self.store.prune_device(&device.token).await {
                        tracing::warn!(error = %e, "pruning a dead token failed");
                    }
                    return DeviceResult::Done;
                }
                Ok(Outcome::Rejected { reason }) => {
                    tracing::warn!(user_id = sent.to_user_id, platform, reason, "push rejected");
                    return DeviceResult::Done;
                }
                Ok(Outcome::Retry { after, reason }) => {
                    tracing::info!(
                        user_id = sent.to_user_id,
                        platform,
                        reason,
                        attempt,
                        "push will be retried"
                    );
                    provider_delay = after;
                    let backoff = after.unwrap_or(Duration::from_millis(500 * 2u64.pow(attempt)));
                    if backoff > Duration::from_secs(10) {
                        // A long Retry-After: give the slot back, the queue waits.
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => {
                    tracing::warn!(
                        user_id = sent.to_user_id,
                        platform,
                        error,
                        attempt,
                        "push failed"
                    );
                    tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
                }
            }
        }
        DeviceResult::Later(provider_delay)
    }

    /// The digest e-mail of a thread whose messages stayed unread.
    async fn digest(self: Arc<Self>, taken: Taken) {
        let Job::Digest { user_id, thread_id } = &taken.job else {
            return;
        };
        let Some(mailer) = &self.mailer else {
            self.complete(&taken, false).await;
            return;
        };
        match self.compose_digest(mailer, user_id, thread_id).await {
            Ok(None) => self.complete(&taken, false).await,
            Ok(Some((digest, newest))) => {
                let started = Instant::now();
                let result = mailer.send(&digest).await;
                let latency_ms = started.elapsed().as_millis() as u64;
                let masked = mask_address(&digest.to_address);
                let (outcome, error) = match result {
                    Ok(()) => {
                        tracing::info!(user_id, thread_id, latency_ms, "digest e-mail sent");
                        (AttemptOutcome::Sent, None)
                    }
                    Err(EmailError::Send {
                        reason,
                        permanent: false,
                    })
                    | Err(EmailError::Build(reason)) => {
                        tracing::warn!(user_id, reason, "digest e-mail will be retried");
                        (AttemptOutcome::Retry, Some(reason))
                    }
                    Err(e) => {
                        tracing::warn!(user_id, error = %e, "digest e-mail refused");
                        (AttemptOutcome::Rejected, Some(e.to_string()))
                    }
                };
                self.log(
                    user_id,
                    thread_id,
                    &newest,
                    NotifyChannel::Email,
                    masked,
                    outcome,
                    error,
                    latency_ms,
                )
                .await;
                match outcome {
                    AttemptOutcome::Sent => {
                        if let Err(e) = self
                            .store
                            .set_notified_up_to(user_id, thread_id, &MarkChannel::Email, &newest)
                            .await
                        {
                            tracing::warn!(error = %e, "recording a sent e-mail failed");
                        }
                        self.complete(&taken, false).await;
                    }
                    AttemptOutcome::Retry => self.requeue(&taken, None).await,
                    _ => self.complete(&taken, false).await,
                }
            }
            Err(e) => {
                tracing::warn!(user_id, error = %e, "digest: store unavailable");
                self.requeue(&taken, None).await;
            }
        }
    }

    /// The digest owed now, with the newest message it covers; `None` when
    /// nothing is owed (read meanwhile, already mailed, no address, back
    /// in the app).
    async fn compose_digest(
        &self,
        mailer: &Mailer,
        user_id: &str,
        thread_id: &str,
    ) -> Result<Option<(Digest, String)>, chat_core::store::StoreError> {
        if self.online(user_id) {
            return Ok(None);
        }
        let Some(user) = self.store.user(user_id).await? else {
            return Ok(None);
        };
        let Some(address) = user.email.clone().filter(|a| !a.trim().is_empty()) else {
            return Ok(None);
        };
        let Some(thread) = self.store.thread(thread_id).await? else {
            return Ok(None);
        };
        let unread = thread.unread_for(user_id);
        if unread == 0 {
            return Ok(None);
        }
        let mark = self
            .store
            .notified_up_to(user_id, thread_id, &MarkChannel::Email)
            .await?;
        // The unread messages are the newest ones: sending moves the
        // sender's own read marker.
        let newest = self
            .store
            .messages(
                thread_id,
                &MessageRange::default(),
                unread.min(DIGEST_LINES) as usize,
            )
            .await?;
        let lines: Vec<_> = newest
            .iter()
            .filter(|m| m.from != user_id && mark.as_ref().is_none_or(|mark| &m.id > mark))
            .collect();
        let Some(last) = lines.last() else {
            return Ok(None);
        };
        let last_id = last.id.clone();
        let other = thread.other_participant(user_id).to_owned();
        let sender_name = self
            .store
            .user(&other)
            .await?
            .map(|u| u.display_name)
            .unwrap_or(other);
        let digest = Digest {
            to_name: user.display_name.clone(),
            to_address: address,
            lang: Lang::from_locale(Some(&user.locale)),
            sender_name,
            lines: lines
                .into_iter()
                .map(|m| DigestLine {
                    text: m.content.clone(),
                })
                .collect(),
            unread,
            link: format!(
                "{}/threads/{}",
                mailer.config.app_url.trim_end_matches('/'),
                thread_id
            ),
        };
        Ok(Some((digest, last_id)))
    }
}

/// `l***@example.com`: enough for support staff to recognise an address.
fn mask_address(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

#[cfg(test)]
mod scenarios;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_backs_off_and_honours_the_provider() {
        assert_eq!(requeue_delay(0, None), Duration::from_secs(5));
        assert_eq!(requeue_delay(3, None), Duration::from_secs(40));
        assert_eq!(requeue_delay(30, None), Duration::from_secs(600));
        assert_eq!(
            requeue_delay(0, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn addresses_are_masked_in_the_log() {
        assert_eq!(mask_address("lan@example.com"), "l***@example.com");
        assert_eq!(mask_address("nonsense"), "***");
    }
}
