//! The notification service: consumes `chat.message.sent`, and for a
//! recipient with no live session sends one push per registered device,
//! collapsed per thread (see `collapse`), through FCM or APNs. Dead tokens
//! are pruned; retryable failures are retried with backoff, honouring
//! `Retry-After`; a rejected payload is logged and dropped.
//!
//! Not yet durable: events come from the in-process bus, so a crash loses
//! the notifications owed at that moment (the outbox is the next step).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::bus::{DomainEvent, MessageSent};
use chat_core::model::{Device, DevicePlatform, NotificationAttempt};
use chat_core::presence::Presence;
use chat_core::store::ChatStore;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::apns::{ApnsClient, ApnsConfig};
use crate::collapse::Collapser;
use crate::fcm::{FcmClient, FcmConfig, ServiceAccount};
use crate::{Notification, Outcome};

/// Section `[push]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushConfig {
    /// At most one push per user and thread per window.
    pub collapse_window_ms: u64,
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
}

fn read(path: &std::path::Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|error| SetupError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// One notification owed to a user for a thread.
#[derive(Debug, Clone)]
struct Owed {
    user_id: String,
    thread_id: String,
    from_user_id: String,
    message_id: String,
}

const MAX_ATTEMPTS: u32 = 6;

pub struct Dispatcher {
    store: Arc<dyn ChatStore>,
    presence: Arc<dyn Presence>,
    fcm: Option<FcmClient>,
    apns: Option<ApnsClient>,
    collapser: Mutex<Collapser<Owed>>,
}

impl Dispatcher {
    /// `None` when neither FCM nor APNs is configured.
    pub fn from_config(
        config: &PushConfig,
        store: Arc<dyn ChatStore>,
        presence: Arc<dyn Presence>,
    ) -> Result<Option<Arc<Dispatcher>>, SetupError> {
        let timeout = Duration::from_secs(10);
        let fcm = match &config.fcm.service_account_file {
            Some(path) => Some(FcmClient::new(FcmConfig {
                base_url: config.fcm.base_url.clone(),
                account: ServiceAccount::from_json(&read(path)?)?,
                timeout,
            })?),
            None => None,
        };
        let apns = match &config.apns.private_key_file {
            Some(path) => Some(ApnsClient::new(ApnsConfig {
                base_url: config.apns.base_url.clone(),
                team_id: config.apns.team_id.clone(),
                key_id: config.apns.key_id.clone(),
                private_key_pem: read(path)?,
                timeout,
            })?),
            None => None,
        };
        if fcm.is_none() && apns.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Dispatcher {
            store,
            presence,
            fcm,
            apns,
            collapser: Mutex::new(Collapser::new(Duration::from_millis(
                config.collapse_window_ms,
            ))),
        })))
    }

    /// Runs until the bus closes.
    pub async fn run(self: Arc<Self>, mut events: broadcast::Receiver<DomainEvent>) {
        loop {
            let next = self
                .collapser
                .lock()
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                event = events.recv() => match event {
                    Ok(DomainEvent::MessageSent(sent)) => self.on_message(sent),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "push service lagged behind the bus");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(next.into()) => {
                    let due = self.collapser.lock().due(Instant::now());
                    for owed in due {
                        tokio::spawn(self.clone().deliver(owed));
                    }
                }
            }
        }
    }

    fn on_message(self: &Arc<Self>, sent: MessageSent) {
        if self.presence.status(&sent.to_user_id).online {
            tracing::debug!(user_id = sent.to_user_id, "recipient online: no push");
            return;
        }
        let owed = Owed {
            user_id: sent.to_user_id,
            thread_id: sent.thread_id,
            from_user_id: sent.from_user_id,
            message_id: sent.message_id,
        };
        let now = self.collapser.lock().offer(
            &owed.user_id,
            &owed.thread_id,
            owed.clone(),
            Instant::now(),
        );
        if let Some(owed) = now {
            tokio::spawn(self.clone().deliver(owed));
        }
    }

    async fn deliver(self: Arc<Self>, owed: Owed) {
        // A folded update may find the user back online by now.
        if self.presence.status(&owed.user_id).online {
            return;
        }
        let devices = match self.store.devices_of(&owed.user_id).await {
            Ok(devices) if !devices.is_empty() => devices,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(user_id = owed.user_id, error = %e, "push: devices unavailable");
                return;
            }
        };
        let notification = match self.compose(&owed).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(thread_id = owed.thread_id, error = %e, "push: thread unavailable");
                return;
            }
        };
        for device in devices {
            tokio::spawn(
                self.clone()
                    .send(device, notification.clone(), owed.clone()),
            );
        }
    }

    async fn compose(&self, owed: &Owed) -> Result<Notification, chat_core::store::StoreError> {
        let thread = self.store.thread(&owed.thread_id).await?;
        let sender = self.store.user(&owed.from_user_id).await?;
        let title = sender
            .map(|u| u.display_name)
            .unwrap_or_else(|| owed.from_user_id.clone());
        let (body, badge) = match &thread {
            Some(t) => (
                t.last_message
                    .as_ref()
                    .map(|m| m.text.clone())
                    .unwrap_or_default(),
                t.unread_for(&owed.user_id),
            ),
            None => (String::new(), 0),
        };
        Ok(Notification {
            title,
            body,
            collapse_key: format!("thread-{}", owed.thread_id),
            badge,
            data: vec![
                ("threadId".into(), owed.thread_id.clone()),
                ("messageId".into(), owed.message_id.clone()),
            ],
        })
    }

    async fn log(
        &self,
        owed: &Owed,
        device: &Device,
        outcome: &str,
        error: Option<String>,
        latency_ms: u64,
    ) {
        // Enough of the token to tell devices apart, not enough to use it.
        let tail: String = device
            .token
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let attempt = NotificationAttempt {
            id: chat_core::new_id(),
            user_id: owed.user_id.clone(),
            thread_id: owed.thread_id.clone(),
            message_id: owed.message_id.clone(),
            channel: device.platform.as_str().to_owned(),
            device: format!("…{tail}"),
            outcome: outcome.to_owned(),
            error,
            latency_ms: latency_ms as i64,
            at: chat_core::now_millis(),
        };
        if let Err(e) = self.store.log_notification(&attempt).await {
            tracing::warn!(error = %e, "writing the notification log failed");
        }
    }

    async fn send(self: Arc<Self>, device: Device, n: Notification, owed: Owed) {
        for attempt in 0..MAX_ATTEMPTS {
            let started = Instant::now();
            let outcome = match device.platform {
                DevicePlatform::Fcm => match &self.fcm {
                    Some(fcm) => fcm.send(&device.token, &n).await.map_err(|e| e.to_string()),
                    None => return,
                },
                DevicePlatform::Apns => match &self.apns {
                    Some(apns) => apns
                        .send(&device.token, &device.app_id, &n)
                        .await
                        .map_err(|e| e.to_string()),
                    None => return,
                },
                // Web Push (VAPID) is not implemented yet.
                DevicePlatform::Web => return,
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let platform = device.platform.as_str();
            let (label, error) = match &outcome {
                Ok(Outcome::Sent { .. }) => ("sent", None),
                Ok(Outcome::TokenGone { reason }) => ("token_gone", Some(reason.clone())),
                Ok(Outcome::Retry { reason, .. }) => ("retry", Some(reason.clone())),
                Ok(Outcome::Rejected { reason }) => ("rejected", Some(reason.clone())),
                Err(e) => ("error", Some(e.clone())),
            };
            self.log(&owed, &device, label, error, latency_ms).await;
            match outcome {
                Ok(Outcome::Sent { id }) => {
                    tracing::info!(
                        user_id = owed.user_id,
                        thread_id = owed.thread_id,
                        platform,
                        id,
                        latency_ms,
                        "push sent"
                    );
                    return;
                }
                Ok(Outcome::TokenGone { reason }) => {
                    tracing::info!(
                        user_id = owed.user_id,
                        platform,
                        reason,
                        "push token gone: pruned"
                    );
                    if let Err(e) = self.store.prune_device(&device.token).await {
                        tracing::warn!(error = %e, "pruning a dead token failed");
                    }
                    return;
                }
                Ok(Outcome::Rejected { reason }) => {
                    tracing::warn!(user_id = owed.user_id, platform, reason, "push rejected");
                    return;
                }
                Ok(Outcome::Retry { after, reason }) => {
                    let backoff = after
                        .unwrap_or(Duration::from_millis(500 * 2u64.pow(attempt)))
                        .min(Duration::from_secs(60));
                    tracing::info!(
                        user_id = owed.user_id,
                        platform,
                        reason,
                        ?backoff,
                        attempt,
                        "push will be retried"
                    );
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => {
                    tracing::warn!(
                        user_id = owed.user_id,
                        platform,
                        error,
                        attempt,
                        "push failed"
                    );
                    tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
                }
            }
        }
        tracing::warn!(
            user_id = owed.user_id,
            thread_id = owed.thread_id,
            "push given up after retries"
        );
    }
}
