//! The dispatcher's view of a push service: send one notification to one
//! device, learn what became of it. FCM and APNs each implement it by
//! calling their client unchanged; tests put a scripted fake in their
//! place, so the dispatcher's collapse, retries and pruning run in process.

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::model::Device;

use crate::apns::ApnsClient;
use crate::fcm::FcmClient;
use crate::{Notification, Outcome};

/// Sends one notification to one device.
///
/// `Ok` is the provider's verdict ([`Outcome`]): delivered (`Sent`), the
/// token is dead and must be pruned (`TokenGone`), a transient failure to
/// retry later (`Retry`, also a timeout or refused connection), or a
/// permanent refusal of this payload (`Rejected`). `Err` is a failure no
/// provider classified (an unreadable answer, an OAuth2 token endpoint
/// down): the dispatcher retries it like a transient one.
#[async_trait]
pub trait PushSender: Send + Sync {
    async fn push(&self, device: &Device, n: &Notification) -> Result<Outcome, String>;
}

/// The push senders of a dispatcher, by platform; `None` where that
/// platform is not configured (its devices are then skipped).
#[derive(Clone, Default)]
pub struct Senders {
    /// Android and web (browser) tokens: FCM HTTP v1 delivers to both.
    pub fcm: Option<Arc<dyn PushSender>>,
    /// iOS tokens.
    pub apns: Option<Arc<dyn PushSender>>,
}

#[async_trait]
impl PushSender for FcmClient {
    async fn push(&self, device: &Device, n: &Notification) -> Result<Outcome, String> {
        self.send(&device.token, n).await.map_err(|e| e.to_string())
    }
}

/// The device's app id is the APNs topic (the app's bundle id).
#[async_trait]
impl PushSender for ApnsClient {
    async fn push(&self, device: &Device, n: &Notification) -> Result<Outcome, String> {
        self.send(&device.token, &device.app_id, n)
            .await
            .map_err(|e| e.to_string())
    }
}
