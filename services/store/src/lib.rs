//! `ChatStore` backends for one machine: the embedded SQLite store, and
//! the notification outbox kept in the same database. (ScyllaDB lives in
//! `chat-scylla`.)

mod outbox;
mod sqlite;

pub use outbox::SqliteOutbox;
pub use sqlite::SqliteStore;
