//! ScyllaDB backend of [`chat_core::store::ChatStore`]: the migration
//! runner for `cql/migrations/` and the store. Any CQL server speaking
//! protocol v4 works; the tests use Apache Cassandra 5.0.

pub mod config;
pub mod cql;
pub mod migrate;
pub mod store;

pub use config::ScyllaConfig;
pub use store::{ScyllaStore, connect};
