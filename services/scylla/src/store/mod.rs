//! [`ChatStore`] on ScyllaDB. The schema and the query each table serves
//! are explained in `cql/README.md`; the rules its role files keep:
//!
//! - Every write is idempotent and marked so: a retry (of the driver, of
//!   the client, of a persistence worker) rewrites the same cells.
//! - Cells whose newest value must win (thread preview, inbox rows, read
//!   markers) are written `USING TIMESTAMP` of the message they describe,
//!   so arrival order does not matter and a marker never moves back.
//! - The only conditional writes (`IF NOT EXISTS`) claim an idempotency
//!   key per client message and the find-or-create key of a thread.
//! - A send returns only after every write of the message succeeded; a
//!   crash in between leaves the key claimed, and the retry finds it,
//!   rewrites the rest from the stored body and answers "duplicate".

mod conversations;
mod devices;
mod directory;
mod safety;
mod uploads;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::attachments::Upload;
use chat_core::calendar::{self, DAY_MS};
use chat_core::clock::Clock;
use chat_core::model::{
    AuditEntry, Device, DevicePlatform, InboxCursor, KeywordList, MessageRange, ModerationRecord,
    NewMessage, NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey,
    UNREAD_CAP, User, preview_of,
};
use chat_core::store::{
    Appended, Backend, ChatStore, Directory, Opened, ReadMarked, StoreError, StoreResult,
};
use chat_protocol::{Message, MessagePreview};
use futures::FutureExt;
use futures::future::try_join_all;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;

use crate::cql::lwt_applied;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use crate::config::ScyllaConfig;

/// Width of a message bucket: 10 days of message time. Part of the schema:
/// changing it would hide stored messages.
pub const BUCKET_MS: i64 = 10 * 24 * 3600 * 1000;

/// Rows per unlogged batch when importing history (about 5 KiB, Cassandra's
/// batch-size warning threshold, for 200-byte messages).
const IMPORT_BATCH: usize = 20;

pub fn bucket_of_millis(millis: i64) -> i32 {
    millis.div_euclid(BUCKET_MS) as i32
}

/// Milliseconds of a UUIDv7 id.
pub fn millis_of_id(id: &str) -> Option<i64> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// Write timestamp (µs) for cells describing message `id`: its millisecond
/// plus the id's next 12 bits scaled into the microseconds, so later ids
/// never get an earlier timestamp.
pub fn write_timestamp(id: &str, millis: i64) -> i64 {
    let sub = uuid::Uuid::parse_str(id)
        .map(|u| {
            let b = u.as_bytes();
            (u64::from(b[6] & 0x0f) << 8) | u64::from(b[7])
        })
        .unwrap_or(0);
    millis * 1000 + (sub * 1000 / 4096) as i64
}

/// How far back the upload sweeper looks for pending uploads.
const UPLOAD_LOOKBACK_DAYS: i64 = 14;

/// How far back the audit log is listed when no actor is given.
const AUDIT_LOOKBACK_DAYS: i64 = 90;

/// `YYYY-MM-DD` (UTC): the audit log's and pending uploads' partition.
fn day_bucket(millis: i64) -> String {
    calendar::date_of_millis(millis).to_string()
}

/// How far back the review queue looks for unresolved records.
const QUEUE_LOOKBACK_MS: i64 = 366 * DAY_MS;

/// `YYYY-MM` (UTC) of a time in milliseconds: the review queue's partition.
fn month_bucket(millis: i64) -> String {
    calendar::month_of_millis(millis).to_string()
}

/// Every month bucket from `from` to `to`, oldest first, each once.
fn month_buckets(from: i64, to: i64) -> Vec<String> {
    calendar::months_between(from, to)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::unavailable(Backend::Scylla, e)
}

fn parse_consistency(name: &str) -> Result<Consistency, String> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        other => return Err(format!("unknown consistency {other:?}")),
    })
}

fn parse_serial(name: &str) -> Result<SerialConsistency, String> {
    match name.to_ascii_uppercase().as_str() {
        "SERIAL" => Ok(SerialConsistency::Serial),
        "LOCAL_SERIAL" => Ok(SerialConsistency::LocalSerial),
        other => Err(format!("unknown serial consistency {other:?}")),
    }
}

fn tls_context(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("reading {}: {e}", ca_file.display()))?
    {
        let cert = cert.map_err(|e| format!("parsing {}: {e}", ca_file.display()))?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens a session to the cluster (not bound to the keyspace, so the
/// migration runner can create it).
pub async fn connect(config: &ScyllaConfig) -> StoreResult<Session> {
    let consistency = parse_consistency(&config.consistency).map_err(StoreError::Config)?;
    let serial = parse_serial(&config.serial_consistency).map_err(StoreError::Config)?;
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(serial))
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(Duration::from_millis(config.request_timeout_ms));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    if let Some(ca) = &config.tls_ca_file {
        builder = builder.tls_context(Some(tls_context(ca).map_err(StoreError::Config)?));
    }
    builder.build().await.map_err(backend)
}

/// Prepares each role's statements for one keyspace: one helper, so every
/// statement gets its idempotency flag and its error message the same way.
struct Prepare<'a> {
    session: &'a Session,
    keyspace: &'a str,
}

impl Prepare<'_> {
    /// Conditional writes are not `idempotent` for the driver: a blind
    /// retry could report "not applied" for our own first attempt, so the
    /// store retries them itself.
    async fn cql(&self, cql: String, idempotent: bool) -> StoreResult<PreparedStatement> {
        let mut statement = self
            .session
            .prepare(cql.clone())
            .await
            .map_err(|e| backend(format!("preparing {cql}: {e}")))?;
        statement.set_is_idempotent(idempotent);
        Ok(statement)
    }
}

/// Every prepared statement, in the role file whose queries use it. None is
/// shared by several roles: the thread, inbox and message statements
/// serve only `Conversations`, so they live in `conversations.rs`.
struct Statements {
    conversations: conversations::Statements,
    devices: devices::Statements,
    directory: directory::Statements,
    safety: safety::Statements,
    uploads: uploads::Statements,
}

impl Statements {
    async fn prepare(session: &Session, keyspace: &str) -> StoreResult<Statements> {
        let prepare = Prepare { session, keyspace };
        Ok(Statements {
            uploads: uploads::Statements::prepare(&prepare).await?,
            safety: safety::Statements::prepare(&prepare).await?,
            devices: devices::Statements::prepare(&prepare).await?,
            directory: directory::Statements::prepare(&prepare).await?,
            conversations: conversations::Statements::prepare(&prepare).await?,
        })
    }
}

pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Statements,
    /// "Now" for look-backs over day and month partitions.
    clock: Arc<dyn Clock>,
}

fn encode<T: serde::Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(backend)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    rmp_serde::from_slice(bytes).map_err(backend)
}

impl ScyllaStore {
    /// Connects, applies pending migrations when configured, and prepares
    /// every statement.
    pub async fn open(config: &ScyllaConfig) -> StoreResult<ScyllaStore> {
        let session = connect(config).await?;
        if config.migrate_on_start {
            crate::migrate::migrate(&session, config)
                .await
                .map_err(backend)?;
        }
        let statements = Statements::prepare(&session, &config.keyspace).await?;
        Ok(ScyllaStore {
            session: Arc::new(session),
            statements,
            clock: chat_core::clock::system(),
        })
    }

    /// The same store reading "now" from `clock` (tests stand it on
    /// calendar boundaries).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> ScyllaStore {
        self.clock = clock;
        self
    }

    async fn exec(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<QueryResult> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(backend)
    }

    async fn rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Vec<T>>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let result = self.exec(statement, values).await?;
        let rows = result.into_rows_result().map_err(backend)?;
        rows.rows::<T>()
            .map_err(backend)?
            .collect::<Result<Vec<T>, _>>()
            .map_err(backend)
    }

    async fn first<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Option<T>>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        Ok(self.rows(statement, values).await?.into_iter().next())
    }

    /// A conditional write; on a timeout its outcome is unknown, so the
    /// caller re-reads the claimed key rather than trusting a retry.
    async fn claim(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<bool> {
        let result = self.exec(statement, values).await?;
        lwt_applied(result).map_err(backend)
    }
}

#[async_trait]
impl ChatStore for ScyllaStore {
    /// One single-partition read of our keyspace at the configured
    /// consistency: the cluster answers for our data, not just a socket.
    async fn ping(&self) -> StoreResult<()> {
        self.user("readyz-probe").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_buckets_are_calendar_days() {
        assert_eq!(day_bucket(1_795_651_200_000), "2026-11-26");
        assert_eq!(day_bucket(1_795_651_200_000 - 1), "2026-11-25");
        assert_eq!(day_bucket(0), "1970-01-01");
    }

    #[test]
    fn month_buckets_cover_every_month_once() {
        assert_eq!(month_bucket(0), "1970-01");
        // 2026-11-26T00:00:00Z
        assert_eq!(month_bucket(1_795_651_200_000), "2026-11");
        let from = 1_795_651_200_000 - 95 * 86_400_000;
        assert_eq!(
            month_buckets(from, 1_795_651_200_000),
            ["2026-08", "2026-09", "2026-10", "2026-11"]
        );
    }

    /// The review queue's look-back, for every day of 2026 and 2028 (a leap
    /// year) at its first and last millisecond: the month of "now" is always
    /// read, and every month in between once. A 27-day stride missed the
    /// current month from the 1st to about the 15th.
    #[test]
    fn the_queue_look_back_reads_the_current_month_on_every_day_of_a_year() {
        for year in [2026, 2028] {
            let first = calendar::millis_of_date(calendar::Date {
                year,
                month: 1,
                day: 1,
            });
            let days = if year == 2028 { 366 } else { 365 };
            for day in 0..days {
                for now in [first + day * DAY_MS, first + (day + 1) * DAY_MS - 1] {
                    let buckets = month_buckets(now - QUEUE_LOOKBACK_MS, now);
                    assert_eq!(buckets.last(), Some(&month_bucket(now)), "now = {now}");
                    assert_eq!(buckets[0], month_bucket(now - QUEUE_LOOKBACK_MS));
                    let unique: HashSet<&String> = buckets.iter().collect();
                    assert_eq!(unique.len(), buckets.len(), "each month once");
                    assert!((13..=14).contains(&buckets.len()), "now = {now}");
                }
            }
        }
        // The first of a month and the last of a year.
        assert_eq!(
            month_buckets(1_796_083_200_000 - 40 * DAY_MS, 1_796_083_200_000),
            ["2026-10", "2026-11", "2026-12"]
        );
        let new_year = 1_798_761_600_000; // 2027-01-01T00:00:00Z
        assert_eq!(
            month_buckets(new_year - 1, new_year),
            ["2026-12", "2027-01"]
        );
        assert_eq!(day_bucket(new_year - 1), "2026-12-31");
        assert_eq!(day_bucket(new_year), "2027-01-01");
    }

    #[test]
    fn buckets_and_write_timestamps_follow_id_order() {
        let (a, a_ms) = chat_core::new_timed_id();
        let (b, b_ms) = chat_core::new_timed_id();
        assert!(a < b);
        assert_eq!(millis_of_id(&a), Some(a_ms));
        assert!(write_timestamp(&a, a_ms) <= write_timestamp(&b, b_ms));
        assert_eq!(write_timestamp(&a, a_ms) / 1000, a_ms);
        assert_eq!(bucket_of_millis(0), 0);
        assert_eq!(bucket_of_millis(BUCKET_MS - 1), 0);
        assert_eq!(bucket_of_millis(BUCKET_MS), 1);
        assert_eq!(millis_of_id("not-a-uuid"), None);
        assert_eq!(millis_of_id(&uuid::Uuid::new_v4().to_string()), None);
    }
}
