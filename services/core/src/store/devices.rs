//! Where notifications go, what was sent, and how far each channel got.

use async_trait::async_trait;

use super::*;
use crate::model::MarkChannel;

/// Where notifications go, what was sent, and how far each channel got.
#[async_trait]
pub trait Devices: Send + Sync {
    /// Registers (or refreshes) a push token for `device.user_id`, taking
    /// it from any other user it was registered to.
    async fn put_device(&self, device: &Device) -> StoreResult<()>;

    /// The user's registered devices.
    async fn devices_of(&self, user_id: &str) -> StoreResult<Vec<Device>>;

    /// Removes `token` if it is registered to `user_id`; false otherwise.
    async fn delete_device(&self, user_id: &str, token: &str) -> StoreResult<bool>;

    /// Removes `token` whoever holds it (tokens FCM/APNs reject).
    async fn prune_device(&self, token: &str) -> StoreResult<()>;

    /// Appends to the notification log (kept 30 days on ScyllaDB).
    async fn log_notification(&self, attempt: &NotificationAttempt) -> StoreResult<()>;

    /// A user's latest notification attempts, newest first.
    async fn notifications_of(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<NotificationAttempt>>;

    /// The newest message of `thread_id` that `user_id` was notified about
    /// on `channel` (e-mail, or one push device): the deduplication mark
    /// of the at-least-once notification queue.
    async fn notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &MarkChannel,
    ) -> StoreResult<Option<String>>;

    /// Moves that mark forward to `message_id` (never back).
    async fn set_notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &MarkChannel,
        message_id: &str,
    ) -> StoreResult<()>;
}
