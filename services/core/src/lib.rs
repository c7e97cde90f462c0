//! The chat domain: threads, messages, read markers and the rules around
//! them, plus the small traits every adapter implements.
//!
//! Nothing here opens a socket or a file. The broker, the REST facade and
//! the stores plug in through [`store::ChatStore`], [`bus::EventBus`] and
//! [`outbound::Outbound`]; [`service::ChatService`] is where a command from
//! a client becomes stored state and outgoing events.

pub mod admission;
pub mod attachments;
pub mod auth;
pub mod bus;
pub mod calendar;
pub mod clock;
#[cfg(feature = "contract")]
pub mod contract;
pub mod i18n;
pub mod membership;
pub mod model;
pub mod moderation;
pub mod notify;
pub mod outbound;
pub mod pipeline;
pub mod presence;
pub mod ratelimit;
pub mod service;
pub mod store;

/// Milliseconds since the Unix epoch, the time unit of the whole protocol.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new time-ordered id (UUIDv7). Within one process ids are strictly
/// increasing, so string order is creation order.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new message id and its creation time, taken from the id itself so the
/// two never disagree.
pub fn new_timed_id() -> (String, i64) {
    let id = uuid::Uuid::now_v7();
    let millis = id
        .get_timestamp()
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        })
        .unwrap_or_else(now_millis);
    (id.to_string(), millis)
}
