//! The storage contract. Shaped for both SQLite (one file) and ScyllaDB
//! (partitioned): time-ordered ids chosen by the caller, keyset ranges
//! instead of offsets, and no operation that needs a transaction across
//! threads.
//!
//! The contract is cut by role ([`Directory`], [`Conversations`],
//! [`Devices`], [`Safety`], [`Uploads`]); [`ChatStore`] is their sum.
//! Callers holding a `dyn ChatStore` bring the roles they use into scope,
//! or `use chat_core::store::prelude::*`.

mod conversations;
mod devices;
mod directory;
pub mod memory;
mod safety;
mod uploads;

use async_trait::async_trait;
use chat_protocol::Message;

pub use conversations::Conversations;
pub use devices::Devices;
pub use directory::Directory;
pub use safety::Safety;
pub use uploads::Uploads;

use crate::attachments::Upload;
use crate::model::{
    AuditEntry, Device, InboxCursor, MessageRange, ModerationRecord, NewMessage,
    NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey, User,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Result of [`Conversations::open_thread`].
#[derive(Debug, Clone)]
pub struct Opened {
    pub thread: Thread,
    pub created: bool,
}

/// Result of [`Conversations::append_message`].
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored message: the new one, or the one stored earlier under the
    /// same `(thread, sender, client_msg_id)`.
    pub message: Message,
    pub thread: Thread,
    /// True when nothing was written because the message already existed.
    pub duplicate: bool,
}

/// Result of [`Conversations::mark_read`].
#[derive(Debug, Clone)]
pub struct ReadMarked {
    pub thread: Thread,
    /// The reader's marker after the call (never moves backwards).
    pub up_to: String,
    /// False when the marker was already at or past the requested message.
    pub moved: bool,
}

/// The whole store: every role, and a readiness probe. Each backend
/// implements the roles in one file per role.
#[async_trait]
pub trait ChatStore: Directory + Conversations + Devices + Safety + Uploads + 'static {
    /// A cheap round trip that proves the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;
}

/// Every role trait, for callers of a `dyn ChatStore`.
pub mod prelude {
    pub use super::{ChatStore, Conversations, Devices, Directory, Safety, Uploads};
}
