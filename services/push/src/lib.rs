//! Push notification senders. Each speaks its provider's real HTTP API
//! with a configurable base URL, so tests (and private deployments) can
//! point them at a local server that implements the same API.

pub mod apns;
pub mod collapse;
pub mod dispatch;
pub mod email;
pub mod fcm;
pub mod sender;

/// What a provider said about one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        /// The provider's id for it (FCM `name`).
        id: String,
    },
    /// The token is dead (app uninstalled, token rotated): prune it.
    TokenGone { reason: String },
    /// Try again later; `after` is the provider's `Retry-After`, if any.
    Retry {
        after: Option<std::time::Duration>,
        reason: String,
    },
    /// The provider refused this payload; retrying will not help.
    Rejected { reason: String },
}

/// A notification as the user sees it, plus the collapse key that lets a
/// later one replace it on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// One per thread: the device shows the latest only.
    pub collapse_key: String,
    /// The app icon's badge: the user's total unread count.
    pub badge: u32,
    /// Data for the app (thread id, message id), strings only.
    pub data: Vec<(String, String)>,
}

/// A transport failure worth retrying later (timeout, refused or broken
/// connection) as an outcome; other failures stay errors.
pub(crate) fn transport_retry(error: &reqwest::Error) -> Option<Outcome> {
    (error.is_timeout() || error.is_connect()).then(|| Outcome::Retry {
        after: None,
        reason: error.to_string(),
    })
}

/// `Retry-After` in seconds, as both providers send it.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}
