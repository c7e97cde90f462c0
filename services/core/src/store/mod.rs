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
    AuditEntry, Device, InboxCursor, KeywordList, MessageRange, ModerationRecord, NewMessage,
    NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey, User,
};

/// Why a store call failed. The variants tell the caller what it can do:
/// only [`StoreError::Unavailable`] may pass on a retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The database failed the call: driver, I/O, timeout, or the writer
    /// gone. The source is the backend's own error, kept for logs and
    /// for callers that downcast it.
    #[error("{backend} failed: {source}")]
    Unavailable {
        backend: Backend,
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A key that must be unique is taken.
    #[error("{0} already exists")]
    Exists(&'static str),
    /// Stored data breaks an invariant the store keeps (a row gone right
    /// after it was written, a claimed key that cannot be read back).
    #[error("stored data is inconsistent: {0}")]
    Inconsistent(String),
    /// The call breaks the trait's contract (a message of another thread,
    /// a push obligation on a backend without an outbox): a caller's bug.
    #[error("refused by the {backend} store: {detail}")]
    Refused { backend: Backend, detail: String },
    /// The store's configuration cannot be used (a consistency name, a CA).
    #[error("store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// A failure of `backend` itself; `source` is its error (or a text).
    pub fn unavailable(
        backend: Backend,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Unavailable {
            backend,
            source: std::sync::Arc::from(source.into()),
        }
    }

    pub fn refused(backend: Backend, detail: impl Into<String>) -> Self {
        StoreError::Refused {
            backend,
            detail: detail.into(),
        }
    }
}

/// Which implementation of the contract raised an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Scylla,
    Memory,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Scylla => "ScyllaDB",
            Backend::Memory => "memory",
        })
    }
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
