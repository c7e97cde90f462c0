//! `ChatStore` backends. Today: the embedded SQLite store, the default for
//! one machine. ScyllaDB arrives as a second module implementing the same
//! trait and passing the same contract tests.

mod sqlite;

pub use sqlite::SqliteStore;
