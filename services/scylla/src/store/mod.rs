//! [`ChatStore`] on ScyllaDB. The schema and the query each table serves
//! are explained in `cql/README.md`; the rules this file keeps:
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

const MODERATION_COLUMNS: &str = "id, thread_id, user_id, message_id, kind, categories, original, keywords, reported_by, needs_review, resolution, resolved_by, resolved_at, created_at";

type ModerationColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn moderation_from_columns(c: ModerationColumns) -> ModerationRecord {
    ModerationRecord {
        id: c.0,
        thread_id: c.1.unwrap_or_default(),
        user_id: c.2.unwrap_or_default(),
        message_id: c.3,
        kind: chat_core::model::ModerationKind::from_stored(c.4.as_deref().unwrap_or("")),
        categories: c.5.unwrap_or_default(),
        original: c.6.unwrap_or_default(),
        keywords: c.7.unwrap_or_default(),
        reported_by: c.8,
        needs_review: c.9.unwrap_or(false),
        resolution: c.10,
        resolved_by: c.11,
        resolved_at: c.12,
        created_at: c.13.unwrap_or_default(),
    }
}

const UPLOAD_COLUMNS: &str = "id, thread_id, user_id, content_type, size, status, card, created_at";

type UploadColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn upload_from_columns(c: UploadColumns) -> Upload {
    Upload {
        id: c.0,
        thread_id: c.1.unwrap_or_default(),
        user_id: c.2.unwrap_or_default(),
        content_type: c.3.unwrap_or_default(),
        size: c.4.unwrap_or_default().max(0) as u64,
        status: chat_core::attachments::UploadStatus::from_stored(c.5.as_deref().unwrap_or("")),
        card: c.6,
        created_at: c.7.unwrap_or_default(),
    }
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

struct Statements {
    create_upload: PreparedStatement,
    upload_pending: PreparedStatement,
    get_upload: PreparedStatement,
    finish_upload: PreparedStatement,
    upload_done: PreparedStatement,
    pending_of_day: PreparedStatement,
    add_block: PreparedStatement,
    remove_block: PreparedStatement,
    get_block: PreparedStatement,
    audit_day: PreparedStatement,
    audit_actor: PreparedStatement,
    audit_of_day: PreparedStatement,
    audit_of_actor: PreparedStatement,
    record_moderation: PreparedStatement,
    wait_for_review: PreparedStatement,
    moderation_record: PreparedStatement,
    moderation_waiting: PreparedStatement,
    resolve_moderation: PreparedStatement,
    stop_waiting: PreparedStatement,
    keywords_of: PreparedStatement,
    add_keyword: PreparedStatement,
    remove_keyword: PreparedStatement,
    log_notification: PreparedStatement,
    notified_up_to: PreparedStatement,
    set_notified_up_to: PreparedStatement,
    notifications_of: PreparedStatement,
    put_device: PreparedStatement,
    set_device_owner: PreparedStatement,
    device_owner: PreparedStatement,
    devices_of: PreparedStatement,
    delete_device: PreparedStatement,
    delete_device_owner: PreparedStatement,
    put_user: PreparedStatement,
    get_user: PreparedStatement,
    put_product: PreparedStatement,
    get_product: PreparedStatement,
    put_order: PreparedStatement,
    get_order: PreparedStatement,
    get_thread: PreparedStatement,
    create_thread: PreparedStatement,
    pair_thread: PreparedStatement,
    claim_pair: PreparedStatement,
    order_thread: PreparedStatement,
    claim_order: PreparedStatement,
    claim_key: PreparedStatement,
    get_key: PreparedStatement,
    insert_message: PreparedStatement,
    set_last_message: PreparedStatement,
    set_product: PreparedStatement,
    insert_inbox: PreparedStatement,
    delete_inbox: PreparedStatement,
    move_inbox: Batch,
    set_marker: PreparedStatement,
    get_markers: PreparedStatement,
    list_markers: PreparedStatement,
    message_exists: PreparedStatement,
    page_newest: PreparedStatement,
    page_before: PreparedStatement,
    page_between: PreparedStatement,
    page_after: PreparedStatement,
    unread_scan: PreparedStatement,
    inbox_first: PreparedStatement,
    inbox_after: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> StoreResult<Statements> {
        // (statement, idempotent). Conditional writes are not idempotent
        // for the driver: a blind retry could report "not applied" for
        // our own first attempt, so the code below retries them itself.
        let prepare = |cql: String, idempotent: bool| async move {
            let mut statement = session
                .prepare(cql.clone())
                .await
                .map_err(|e| backend(format!("preparing {cql}: {e}")))?;
            statement.set_is_idempotent(idempotent);
            Ok::<_, StoreError>(statement)
        };
        let page = |bounds: &str, order: &str| {
            format!(
                "SELECT body FROM {ks}.messages WHERE thread_id = ? AND bucket = ? {bounds} \
                 ORDER BY id {order} LIMIT ?"
            )
        };
        let insert_inbox = prepare(format!("INSERT INTO {ks}.inbox (user_id, activity_at, thread_id, last_message) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"), true).await?;
        let delete_inbox = prepare(format!("DELETE FROM {ks}.inbox USING TIMESTAMP ? WHERE user_id = ? AND activity_at = ? AND thread_id = ?"), true).await?;
        let mut move_inbox = Batch::new_with_statements(
            BatchType::Unlogged,
            vec![insert_inbox.clone().into(), delete_inbox.clone().into()],
        );
        move_inbox.set_is_idempotent(true);
        Ok(Statements {
            insert_inbox,
            delete_inbox,
            move_inbox,
            log_notification: prepare(format!("INSERT INTO {ks}.notification_log (user_id, id, thread_id, message_id, channel, device, outcome, error, latency_ms, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), true).await?,
            notifications_of: prepare(format!("SELECT id, thread_id, message_id, channel, device, outcome, error, latency_ms, at FROM {ks}.notification_log WHERE user_id = ? LIMIT ?"), true).await?,
            create_upload: prepare(format!("INSERT INTO {ks}.uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), true).await?,
            upload_pending: prepare(format!("INSERT INTO {ks}.uploads_pending (day, id) VALUES (?, ?)"), true).await?,
            get_upload: prepare(format!("SELECT {UPLOAD_COLUMNS} FROM {ks}.uploads WHERE id = ?"), true).await?,
            finish_upload: prepare(format!("UPDATE {ks}.uploads SET status = ?, card = ? WHERE id = ? IF status = 'pending'"), false).await?,
            upload_done: prepare(format!("DELETE FROM {ks}.uploads_pending WHERE day = ? AND id = ?"), true).await?,
            pending_of_day: prepare(format!("SELECT id FROM {ks}.uploads_pending WHERE day = ? LIMIT ?"), true).await?,
            add_block: prepare(format!("INSERT INTO {ks}.blocks (blocker, blocked) VALUES (?, ?)"), true).await?,
            remove_block: prepare(format!("DELETE FROM {ks}.blocks WHERE blocker = ? AND blocked = ?"), true).await?,
            get_block: prepare(format!("SELECT blocker FROM {ks}.blocks WHERE blocker = ? AND blocked = ?"), true).await?,
            audit_day: prepare(format!("INSERT INTO {ks}.audit_by_day (day, id, at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"), true).await?,
            audit_actor: prepare(format!("INSERT INTO {ks}.audit_by_actor (actor, id, at, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            audit_of_day: prepare(format!("SELECT id, at, actor, action, target, detail FROM {ks}.audit_by_day WHERE day = ? AND id < ? LIMIT ?"), true).await?,
            audit_of_actor: prepare(format!("SELECT id, at, action, target, detail FROM {ks}.audit_by_actor WHERE actor = ? AND id < ? LIMIT ?"), true).await?,
            record_moderation: prepare(format!("INSERT INTO {ks}.moderation_records ({MODERATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), true).await?,
            wait_for_review: prepare(format!("INSERT INTO {ks}.moderation_waiting (bucket, id) VALUES (?, ?)"), true).await?,
            moderation_record: prepare(format!("SELECT {MODERATION_COLUMNS} FROM {ks}.moderation_records WHERE id = ?"), true).await?,
            moderation_waiting: prepare(format!("SELECT id FROM {ks}.moderation_waiting WHERE bucket = ? AND id > ? LIMIT ?"), true).await?,
            resolve_moderation: prepare(format!("UPDATE {ks}.moderation_records SET resolution = ?, resolved_by = ?, resolved_at = ? WHERE id = ? IF resolution = null AND needs_review = true"), false).await?,
            stop_waiting: prepare(format!("DELETE FROM {ks}.moderation_waiting WHERE bucket = ? AND id = ?"), true).await?,
            keywords_of: prepare(format!("SELECT keyword FROM {ks}.moderation_keywords WHERE list = ?"), true).await?,
            add_keyword: prepare(format!("INSERT INTO {ks}.moderation_keywords (list, keyword) VALUES (?, ?)"), true).await?,
            remove_keyword: prepare(format!("DELETE FROM {ks}.moderation_keywords WHERE list = ? AND keyword = ?"), true).await?,
            notified_up_to: prepare(format!("SELECT message_id FROM {ks}.notified_marks WHERE user_id = ? AND thread_id = ? AND channel = ?"), true).await?,
            set_notified_up_to: prepare(format!("INSERT INTO {ks}.notified_marks (user_id, thread_id, channel, message_id) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"), true).await?,
            put_device: prepare(format!("INSERT INTO {ks}.devices (user_id, push_token, platform, app_id, locale, updated_at) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            set_device_owner: prepare(format!("INSERT INTO {ks}.device_owners (push_token, user_id) VALUES (?, ?)"), true).await?,
            device_owner: prepare(format!("SELECT user_id FROM {ks}.device_owners WHERE push_token = ?"), true).await?,
            devices_of: prepare(format!("SELECT push_token, platform, app_id, locale, updated_at FROM {ks}.devices WHERE user_id = ?"), true).await?,
            delete_device: prepare(format!("DELETE FROM {ks}.devices WHERE user_id = ? AND push_token = ?"), true).await?,
            delete_device_owner: prepare(format!("DELETE FROM {ks}.device_owners WHERE push_token = ?"), true).await?,
            put_user: prepare(format!("INSERT INTO {ks}.users (id, display_name, avatar_url, email, locale, seller) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            get_user: prepare(format!("SELECT id, display_name, avatar_url, email, locale, seller FROM {ks}.users WHERE id = ?"), true).await?,
            put_product: prepare(format!("INSERT INTO {ks}.products (id, seller_id, title, price, currency, image_url) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            get_product: prepare(format!("SELECT id, seller_id, title, price, currency, image_url FROM {ks}.products WHERE id = ?"), true).await?,
            put_order: prepare(format!("INSERT INTO {ks}.orders (id, buyer_id, seller_id, summary) VALUES (?, ?, ?, ?)"), true).await?,
            get_order: prepare(format!("SELECT id, buyer_id, seller_id, summary FROM {ks}.orders WHERE id = ?"), true).await?,
            get_thread: prepare(format!("SELECT id, buyer_id, seller_id, product_id, order_id, created_at, last_message, last_message_at, updated_at FROM {ks}.threads WHERE id = ?"), true).await?,
            create_thread: prepare(format!("INSERT INTO {ks}.threads (id, buyer_id, seller_id, order_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"), false).await?,
            pair_thread: prepare(format!("SELECT thread_id FROM {ks}.threads_by_pair WHERE buyer_id = ? AND seller_id = ?"), true).await?,
            claim_pair: prepare(format!("INSERT INTO {ks}.threads_by_pair (buyer_id, seller_id, thread_id) VALUES (?, ?, ?) IF NOT EXISTS"), false).await?,
            order_thread: prepare(format!("SELECT thread_id FROM {ks}.threads_by_order WHERE order_id = ?"), true).await?,
            claim_order: prepare(format!("INSERT INTO {ks}.threads_by_order (order_id, thread_id) VALUES (?, ?) IF NOT EXISTS"), false).await?,
            claim_key: prepare(format!("INSERT INTO {ks}.message_keys (thread_id, from_user, client_msg_id, message_id, body) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"), false).await?,
            get_key: {
                let mut s = prepare(format!("SELECT message_id, body FROM {ks}.message_keys WHERE thread_id = ? AND from_user = ? AND client_msg_id = ?"), true).await?;
                // Sees a claim whose Paxos round is still in flight.
                s.set_consistency(Consistency::LocalSerial);
                s
            },
            insert_message: prepare(format!("INSERT INTO {ks}.messages (thread_id, bucket, id, from_user, kind, body) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"), true).await?,
            set_last_message: prepare(format!("UPDATE {ks}.threads USING TIMESTAMP ? SET last_message = ?, last_message_at = ?, updated_at = ? WHERE id = ?"), true).await?,
            set_product: prepare(format!("UPDATE {ks}.threads USING TIMESTAMP ? SET product_id = ? WHERE id = ?"), true).await?,
            set_marker: prepare(format!("UPDATE {ks}.read_markers USING TIMESTAMP ? SET up_to = ?, read_at = ? WHERE thread_id = ? AND user_id = ?"), true).await?,
            get_markers: prepare(format!("SELECT user_id, up_to FROM {ks}.read_markers WHERE thread_id = ?"), true).await?,
            list_markers: prepare(format!("SELECT user_id, up_to, read_at FROM {ks}.read_markers WHERE thread_id = ?"), true).await?,
            message_exists: prepare(format!("SELECT id FROM {ks}.messages WHERE thread_id = ? AND bucket = ? AND id = ?"), true).await?,
            page_newest: prepare(page("", "DESC"), true).await?,
            page_before: prepare(page("AND id < ?", "DESC"), true).await?,
            page_between: prepare(page("AND id < ? AND id > ?", "DESC"), true).await?,
            page_after: prepare(page("AND id > ?", "ASC"), true).await?,
            unread_scan: prepare(format!("SELECT from_user, kind FROM {ks}.messages WHERE thread_id = ? AND bucket = ? AND id > ? LIMIT ?"), true).await?,
            inbox_first: prepare(format!("SELECT activity_at, thread_id FROM {ks}.inbox WHERE user_id = ? LIMIT ?"), true).await?,
            inbox_after: prepare(format!("SELECT activity_at, thread_id FROM {ks}.inbox WHERE user_id = ? AND (activity_at, thread_id) < (?, ?) LIMIT ?"), true).await?,
        })
    }
}

/// The `threads` row: a thread without its unread counts.
#[derive(Debug, Clone)]
struct ThreadRow {
    id: String,
    buyer_id: String,
    seller_id: String,
    product_id: Option<String>,
    order_id: Option<String>,
    created_at: i64,
    last_message: Option<MessagePreview>,
    last_message_at: Option<i64>,
    updated_at: i64,
}

impl ThreadRow {
    fn activity_at(&self) -> i64 {
        self.last_message_at.unwrap_or(self.created_at)
    }

    fn participants(&self) -> [&str; 2] {
        [&self.buyer_id, &self.seller_id]
    }

    fn with_unread(self, unread_buyer: u32, unread_seller: u32) -> Thread {
        Thread {
            id: self.id,
            buyer_id: self.buyer_id,
            seller_id: self.seller_id,
            product_id: self.product_id,
            order_id: self.order_id,
            last_message: self.last_message,
            last_message_at: self.last_message_at,
            unread_buyer,
            unread_seller,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Newest bucket worth reading: messages are never dated after the
    /// later of "now" and the thread's last message.
    fn newest_bucket(&self, now: i64) -> i32 {
        bucket_of_millis(now.max(self.last_message_at.unwrap_or(i64::MIN)))
    }

    /// Messages are never dated before their thread.
    fn oldest_bucket(&self) -> i32 {
        bucket_of_millis(self.created_at)
    }
}

type ThreadColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
);

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

    async fn thread_row(&self, id: &str) -> StoreResult<Option<ThreadRow>> {
        let row: Option<ThreadColumns> = self.first(&self.statements.get_thread, (id,)).await?;
        let Some((id, buyer, seller, product, order, created, last, last_at, updated)) = row else {
            return Ok(None);
        };
        // A row with only preview cells is a send racing a thread that was
        // never created; treat it as absent.
        let (Some(buyer_id), Some(seller_id), Some(created_at)) = (buyer, seller, created) else {
            return Ok(None);
        };
        Ok(Some(ThreadRow {
            id,
            buyer_id,
            seller_id,
            product_id: product,
            order_id: order,
            created_at,
            last_message: last.as_deref().map(decode).transpose()?,
            last_message_at: last_at,
            updated_at: updated.unwrap_or(created_at),
        }))
    }

    async fn markers(&self, thread_id: &str) -> StoreResult<Vec<(String, Option<String>)>> {
        self.rows(&self.statements.get_markers, (thread_id,)).await
    }

    /// Non-system messages from others after `marker`, stopping at the cap.
    async fn unread_for(
        &self,
        row: &ThreadRow,
        user_id: &str,
        marker: Option<&str>,
    ) -> StoreResult<u32> {
        let lowest = marker
            .and_then(millis_of_id)
            .map(bucket_of_millis)
            .unwrap_or(row.oldest_bucket())
            .max(row.oldest_bucket());
        let after = marker.unwrap_or("");
        let mut unread = 0u32;
        let scan_limit = (UNREAD_CAP * 2) as i32;
        for bucket in (lowest..=row.newest_bucket(self.clock.now_millis())).rev() {
            let rows: Vec<(Option<String>, Option<String>)> = self
                .rows(
                    &self.statements.unread_scan,
                    (&row.id, bucket, after, scan_limit),
                )
                .await?;
            unread += rows
                .iter()
                .filter(|(from, kind)| {
                    from.as_deref() != Some(user_id) && kind.as_deref() != Some("system")
                })
                .count() as u32;
            if unread >= UNREAD_CAP || rows.len() as i32 == scan_limit {
                return Ok(unread.min(UNREAD_CAP));
            }
        }
        Ok(unread)
    }

    /// The thread with both unread counts, derived from the read markers.
    async fn with_counts(&self, row: ThreadRow) -> StoreResult<Thread> {
        let markers = self.markers(&row.id).await?;
        let marker_of = |user: &str| {
            markers
                .iter()
                .find(|(u, _)| u == user)
                .and_then(|(_, m)| m.clone())
        };
        let (buyer_marker, seller_marker) = (marker_of(&row.buyer_id), marker_of(&row.seller_id));
        let (buyer, seller) = futures::try_join!(
            self.unread_for(&row, &row.buyer_id, buyer_marker.as_deref()),
            self.unread_for(&row, &row.seller_id, seller_marker.as_deref()),
        )?;
        Ok(row.with_unread(buyer, seller))
    }

    async fn full_thread(&self, id: &str) -> StoreResult<Option<Thread>> {
        match self.thread_row(id).await? {
            Some(row) => Ok(Some(self.with_counts(row).await?)),
            None => Ok(None),
        }
    }

    /// Makes sure the thread row and both inbox entries exist; every
    /// opener of the same key converges on the same row.
    async fn ensure_thread(&self, id: &str, spec: &OpenThread) -> StoreResult<(ThreadRow, bool)> {
        if let Some(row) = self.thread_row(id).await? {
            return Ok((row, false));
        }
        let now = self.clock.now_millis();
        let order_id = match &spec.key {
            ThreadKey::Order { order_id } => Some(order_id.clone()),
            ThreadKey::Pair { .. } => None,
        };
        let created = self
            .claim(
                &self.statements.create_thread,
                (id, &spec.buyer_id, &spec.seller_id, order_id, now, now),
            )
            .await?;
        let row = self.thread_row(id).await?.ok_or(StoreError::Inconsistent(
            "thread row vanished after creation".into(),
        ))?;
        let ts = row.created_at * 1000;
        try_join_all(row.participants().map(|user| {
            self.exec(
                &self.statements.insert_inbox,
                (user, row.created_at, &row.id, None::<Vec<u8>>, ts),
            )
        }))
        .await?;
        Ok((row, created))
    }

    /// Claims the find-or-create key, returning the thread id it names.
    async fn claim_thread_key(&self, key: &ThreadKey, candidate: &str) -> StoreResult<String> {
        let lookup = || async {
            match key {
                ThreadKey::Pair {
                    buyer_id,
                    seller_id,
                } => {
                    self.first::<(String,)>(&self.statements.pair_thread, (buyer_id, seller_id))
                        .await
                }
                ThreadKey::Order { order_id } => {
                    self.first::<(String,)>(&self.statements.order_thread, (order_id,))
                        .await
                }
            }
        };
        if let Some((id,)) = lookup().await? {
            return Ok(id);
        }
        let applied = match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => {
                self.claim(
                    &self.statements.claim_pair,
                    (buyer_id, seller_id, candidate),
                )
                .await?
            }
            ThreadKey::Order { order_id } => {
                self.claim(&self.statements.claim_order, (order_id, candidate))
                    .await?
            }
        };
        if applied {
            return Ok(candidate.to_owned());
        }
        lookup()
            .await?
            .map(|(id,)| id)
            .ok_or(StoreError::Inconsistent(
                "thread key claimed but not readable".into(),
            ))
    }

    /// Writes everything a stored message changes besides its key. Every
    /// write is idempotent, so the retry of a half-done send repeats it.
    async fn apply_message(
        &self,
        row: &ThreadRow,
        message: &Message,
        body: &[u8],
        sets_product: Option<&str>,
    ) -> StoreResult<()> {
        let s = &self.statements;
        let ts = write_timestamp(&message.id, message.created_at);
        let preview = encode(&preview_of(message))?;
        let mut writes = Vec::new();
        writes.push(
            self.exec(
                &s.insert_message,
                (
                    &message.thread_id,
                    bucket_of_millis(message.created_at),
                    &message.id,
                    &message.from,
                    message.kind.as_str(),
                    body,
                    ts,
                ),
            )
            .boxed(),
        );
        writes.push(
            self.exec(
                &s.set_last_message,
                (
                    ts,
                    &preview,
                    message.created_at,
                    message.created_at,
                    &message.thread_id,
                ),
            )
            .boxed(),
        );
        if let Some(product) = sets_product {
            writes.push(
                self.exec(&s.set_product, (ts, product, &message.thread_id))
                    .boxed(),
            );
        }
        let previous = row.activity_at();
        for user in row.participants() {
            if previous == message.created_at {
                writes.push(
                    self.exec(
                        &s.insert_inbox,
                        (user, message.created_at, &row.id, &preview, ts),
                    )
                    .boxed(),
                );
            } else {
                // One single-partition batch moves the entry. The delete
                // only removes an older entry: a newer one carries a newer
                // write timestamp than this delete.
                let (preview, row_id) = (&preview, &row.id);
                writes.push(
                    async move {
                        self.session
                            .batch(
                                &s.move_inbox,
                                (
                                    (user, message.created_at, row_id, preview, ts),
                                    (ts, user, previous, row_id),
                                ),
                            )
                            .await
                            .map_err(backend)
                    }
                    .boxed(),
                );
            }
        }
        if row.participants().contains(&message.from.as_str()) {
            // Answering a thread means having read it.
            writes.push(
                self.exec(
                    &s.set_marker,
                    (
                        ts,
                        &message.id,
                        message.created_at,
                        &message.thread_id,
                        &message.from,
                    ),
                )
                .boxed(),
            );
        }
        try_join_all(writes).await?;
        Ok(())
    }

    /// Up to `limit` messages of one bucket within `range`: newest first,
    /// except for an `after`-only range, which reads oldest first.
    async fn page_in_bucket(
        &self,
        thread_id: &str,
        bucket: i32,
        range: &MessageRange,
        limit: i32,
    ) -> StoreResult<Vec<Message>> {
        let s = &self.statements;
        let bodies: Vec<(Vec<u8>,)> = match (&range.before, &range.after) {
            (None, None) => {
                self.rows(&s.page_newest, (thread_id, bucket, limit))
                    .await?
            }
            (Some(before), None) => {
                self.rows(&s.page_before, (thread_id, bucket, before, limit))
                    .await?
            }
            (Some(before), Some(after)) => {
                self.rows(&s.page_between, (thread_id, bucket, before, after, limit))
                    .await?
            }
            (None, Some(after)) => {
                self.rows(&s.page_after, (thread_id, bucket, after, limit))
                    .await?
            }
        };
        bodies.iter().map(|(b,)| decode(b)).collect()
    }

    /// Removes inbox rows that a newer activity superseded (best effort).
    fn clean_inbox_rows(&self, user_id: &str, stale: Vec<(i64, String, i64)>) {
        if stale.is_empty() {
            return;
        }
        let session = self.session.clone();
        let delete = self.statements.delete_inbox.clone();
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            for (at, thread_id, newest) in stale {
                let ts = newest * 1000;
                if let Err(e) = session
                    .execute_unpaged(&delete, (ts, &user_id, at, &thread_id))
                    .await
                {
                    tracing::debug!(error = %e, "inbox cleanup failed; a later read retries");
                }
            }
        });
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
