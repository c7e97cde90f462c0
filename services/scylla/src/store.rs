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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::attachments::Upload;
use chat_core::calendar::{self, DAY_MS};
use chat_core::clock::Clock;
use chat_core::model::{
    AuditEntry, Device, DevicePlatform, InboxCursor, MessageRange, ModerationRecord, NewMessage,
    NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey, UNREAD_CAP,
    User, preview_of,
};
use chat_core::store::{Appended, ChatStore, Opened, ReadMarked, StoreError, StoreResult};
use chat_protocol::{Message, MessagePreview};
use futures::FutureExt;
use futures::future::try_join_all;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
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
        kind: c.4.unwrap_or_default(),
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
        status: c.5.unwrap_or_default(),
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

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Whether a conditional write applied (the `[applied]` column).
pub fn lwt_applied(result: QueryResult) -> Result<bool, String> {
    let rows = result.into_rows_result().map_err(|e| e.to_string())?;
    let row: scylla::value::Row = rows.first_row().map_err(|e| e.to_string())?;
    Ok(matches!(
        row.columns.first(),
        Some(Some(scylla::value::CqlValue::Boolean(true)))
    ))
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
    let consistency = parse_consistency(&config.consistency).map_err(StoreError::Backend)?;
    let serial = parse_serial(&config.serial_consistency).map_err(StoreError::Backend)?;
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
        builder = builder.tls_context(Some(tls_context(ca).map_err(StoreError::Backend)?));
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
                .map_err(|e| StoreError::Backend(format!("preparing {cql}: {e}")))?;
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
        lwt_applied(result).map_err(StoreError::Backend)
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
        let row = self.thread_row(id).await?.ok_or(StoreError::Backend(
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
        lookup().await?.map(|(id,)| id).ok_or(StoreError::Backend(
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
    async fn put_user(&self, user: &User) -> StoreResult<()> {
        self.exec(
            &self.statements.put_user,
            (
                &user.id,
                &user.display_name,
                &user.avatar_url,
                &user.email,
                &user.locale,
                user.seller,
            ),
        )
        .await?;
        Ok(())
    }

    /// One single-partition read of our keyspace at the configured
    /// consistency: the cluster answers for our data, not just a socket.
    async fn ping(&self) -> StoreResult<()> {
        self.user("readyz-probe").await.map(|_| ())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<bool>,
        );
        let row: Option<Columns> = self.first(&self.statements.get_user, (id,)).await?;
        Ok(row.map(
            |(id, display_name, avatar_url, email, locale, seller)| User {
                display_name: display_name.unwrap_or_else(|| id.clone()),
                id,
                avatar_url,
                email,
                locale: locale.unwrap_or_else(|| "vi".into()),
                // Null: registered before migration 0008, when anyone could
                // be contacted; CQL cannot backfill from other tables, so
                // such rows keep that until the platform registers them again.
                seller: seller.unwrap_or(true),
            },
        ))
    }

    async fn put_product(&self, p: &Product) -> StoreResult<()> {
        self.exec(
            &self.statements.put_product,
            (
                &p.id,
                &p.seller_id,
                &p.title,
                p.price,
                &p.currency,
                &p.image_url,
            ),
        )
        .await?;
        Ok(())
    }

    async fn product(&self, id: &str) -> StoreResult<Option<Product>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Columns> = self.first(&self.statements.get_product, (id,)).await?;
        Ok(row.map(
            |(id, seller_id, title, price, currency, image_url)| Product {
                id,
                seller_id: seller_id.unwrap_or_default(),
                title: title.unwrap_or_default(),
                price: price.unwrap_or_default(),
                currency: currency.unwrap_or_default(),
                image_url,
            },
        ))
    }

    async fn put_order(&self, o: &Order) -> StoreResult<()> {
        self.exec(
            &self.statements.put_order,
            (&o.id, &o.buyer_id, &o.seller_id, &o.summary),
        )
        .await?;
        Ok(())
    }

    async fn order(&self, id: &str) -> StoreResult<Option<Order>> {
        type Columns = (String, Option<String>, Option<String>, Option<String>);
        let row: Option<Columns> = self.first(&self.statements.get_order, (id,)).await?;
        Ok(row.map(|(id, buyer_id, seller_id, summary)| Order {
            id,
            buyer_id: buyer_id.unwrap_or_default(),
            seller_id: seller_id.unwrap_or_default(),
            summary: summary.unwrap_or_default(),
        }))
    }

    async fn log_notification(&self, a: &NotificationAttempt) -> StoreResult<()> {
        self.exec(
            &self.statements.log_notification,
            (
                &a.user_id,
                &a.id,
                &a.thread_id,
                &a.message_id,
                &a.channel,
                &a.device,
                &a.outcome,
                &a.error,
                a.latency_ms,
                a.at,
            ),
        )
        .await?;
        Ok(())
    }

    async fn create_upload(&self, u: &Upload) -> StoreResult<()> {
        let s = &self.statements;
        self.exec(
            &s.create_upload,
            (
                &u.id,
                &u.thread_id,
                &u.user_id,
                &u.content_type,
                u.size as i64,
                &u.status,
                &u.card,
                u.created_at,
            ),
        )
        .await?;
        if u.status == "pending" {
            self.exec(&s.upload_pending, (day_bucket(u.created_at), &u.id))
                .await?;
        }
        Ok(())
    }

    async fn upload(&self, id: &str) -> StoreResult<Option<Upload>> {
        let row: Option<UploadColumns> = self.first(&self.statements.get_upload, (id,)).await?;
        Ok(row.map(upload_from_columns))
    }

    async fn finish_upload(&self, id: &str, status: &str, card: Option<&str>) -> StoreResult<bool> {
        let Some(upload) = self.upload(id).await? else {
            return Ok(false);
        };
        let applied = self
            .claim(&self.statements.finish_upload, (status, card, id))
            .await?;
        if applied {
            self.exec(
                &self.statements.upload_done,
                (day_bucket(upload.created_at), id),
            )
            .await?;
        }
        Ok(applied)
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<Upload>> {
        // The pending lists of the last weeks, oldest first.
        let mut out = Vec::new();
        for back in (0..UPLOAD_LOOKBACK_DAYS).rev() {
            if out.len() >= limit {
                break;
            }
            let day = day_bucket(before - back * DAY_MS);
            let ids: Vec<(String,)> = self
                .rows(&self.statements.pending_of_day, (&day, limit as i32))
                .await?;
            for (id,) in ids {
                if let Some(upload) = self.upload(&id).await?
                    && upload.status == "pending"
                    && upload.created_at < before
                    && out.len() < limit
                {
                    out.push(upload);
                }
            }
        }
        Ok(out)
    }

    async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let s = &self.statements;
        let day = day_bucket(e.at);
        self.exec(
            &s.audit_day,
            (&day, &e.id, e.at, &e.actor, &e.action, &e.target, &e.detail),
        )
        .await?;
        self.exec(
            &s.audit_actor,
            (&e.actor, &e.id, e.at, &e.action, &e.target, &e.detail),
        )
        .await?;
        Ok(())
    }

    async fn audit_log(
        &self,
        actor: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        type Columns = (
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let entry = |(id, at, actor, action, target, detail): Columns| AuditEntry {
            id,
            at: at.unwrap_or_default(),
            actor: actor.unwrap_or_default(),
            action: action.unwrap_or_default(),
            target: target.unwrap_or_default(),
            detail: detail.unwrap_or_default(),
        };
        let before_id = before.unwrap_or("~");
        if let Some(actor) = actor {
            type ActorColumns = (
                String,
                Option<i64>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let rows: Vec<ActorColumns> = self
                .rows(
                    &self.statements.audit_of_actor,
                    (actor, before_id, limit as i32),
                )
                .await?;
            return Ok(rows
                .into_iter()
                .map(|(id, at, action, target, detail)| {
                    entry((id, at, Some(actor.to_owned()), action, target, detail))
                })
                .collect());
        }
        // Day by day, newest first, from the cursor's day (or today).
        let start = before
            .and_then(millis_of_id)
            .unwrap_or_else(|| self.clock.now_millis());
        let mut out = Vec::new();
        for back in 0..AUDIT_LOOKBACK_DAYS {
            if out.len() >= limit {
                break;
            }
            let day = day_bucket(start - back * DAY_MS);
            let rows: Vec<Columns> = self
                .rows(
                    &self.statements.audit_of_day,
                    (&day, before_id, (limit - out.len()) as i32),
                )
                .await?;
            out.extend(rows.into_iter().map(entry));
        }
        Ok(out)
    }

    async fn set_block(&self, blocker: &str, blocked: &str, on: bool) -> StoreResult<()> {
        let s = &self.statements;
        let statement = if on { &s.add_block } else { &s.remove_block };
        self.exec(statement, (blocker, blocked)).await?;
        Ok(())
    }

    async fn blockers_between(&self, a: &str, b: &str) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for (blocker, blocked) in [(a, b), (b, a)] {
            let row: Option<(String,)> = self
                .first(&self.statements.get_block, (blocker, blocked))
                .await?;
            if let Some((who,)) = row {
                out.push(who);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn record_moderation(&self, r: &ModerationRecord) -> StoreResult<()> {
        let s = &self.statements;
        self.exec(
            &s.record_moderation,
            (
                &r.id,
                &r.thread_id,
                &r.user_id,
                &r.message_id,
                &r.kind,
                &r.categories,
                &r.original,
                &r.keywords,
                &r.reported_by,
                r.needs_review,
                &r.resolution,
                &r.resolved_by,
                r.resolved_at,
                r.created_at,
            ),
        )
        .await?;
        if r.needs_review && r.resolution.is_none() {
            self.exec(&s.wait_for_review, (month_bucket(r.created_at), &r.id))
                .await?;
        }
        Ok(())
    }

    async fn moderation_record(&self, id: &str) -> StoreResult<Option<ModerationRecord>> {
        let row: Option<ModerationColumns> = self
            .first(&self.statements.moderation_record, (id,))
            .await?;
        Ok(row.map(moderation_from_columns))
    }

    async fn moderation_queue(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ModerationRecord>> {
        // Months from the cursor's (or a year back) to now, oldest first.
        let now = self.clock.now_millis();
        let from = after
            .and_then(millis_of_id)
            .unwrap_or(now - QUEUE_LOOKBACK_MS);
        let mut out = Vec::new();
        for bucket in month_buckets(from, now) {
            if out.len() >= limit {
                break;
            }
            let ids: Vec<(String,)> = self
                .rows(
                    &self.statements.moderation_waiting,
                    (&bucket, after.unwrap_or(""), (limit - out.len()) as i32),
                )
                .await?;
            for (id,) in ids {
                if let Some(record) = self.moderation_record(&id).await?
                    && record.resolution.is_none()
                {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    async fn resolve_moderation(
        &self,
        id: &str,
        resolution: &str,
        by: &str,
        at: i64,
    ) -> StoreResult<bool> {
        let Some(record) = self.moderation_record(id).await? else {
            return Ok(false);
        };
        let applied = self
            .claim(
                &self.statements.resolve_moderation,
                (resolution, by, at, id),
            )
            .await?;
        if applied {
            self.exec(
                &self.statements.stop_waiting,
                (month_bucket(record.created_at), id),
            )
            .await?;
        }
        Ok(applied)
    }

    async fn keywords(&self) -> StoreResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for list in ["block", "flag"] {
            let rows: Vec<(String,)> = self.rows(&self.statements.keywords_of, (list,)).await?;
            out.extend(rows.into_iter().map(|(k,)| (list.to_owned(), k)));
        }
        Ok(out)
    }

    async fn set_keyword(&self, list: &str, keyword: &str, present: bool) -> StoreResult<()> {
        let s = &self.statements;
        let statement = if present {
            &s.add_keyword
        } else {
            &s.remove_keyword
        };
        self.exec(statement, (list, keyword)).await?;
        Ok(())
    }

    async fn notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &str,
    ) -> StoreResult<Option<String>> {
        let result = self
            .exec(
                &self.statements.notified_up_to,
                (user_id, thread_id, channel),
            )
            .await?;
        let rows = result.into_rows_result().map_err(backend)?;
        let mark = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(backend)?;
        Ok(mark.and_then(|(id,)| id))
    }

    async fn set_notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &str,
        message_id: &str,
    ) -> StoreResult<()> {
        // Last write wins by the message's own time: a mark never moves
        // back, whatever order concurrent workers write in.
        let millis = millis_of_id(message_id).ok_or(StoreError::NotFound("message"))?;
        self.exec(
            &self.statements.set_notified_up_to,
            (
                user_id,
                thread_id,
                channel,
                message_id,
                write_timestamp(message_id, millis),
            ),
        )
        .await?;
        Ok(())
    }

    async fn notifications_of(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<NotificationAttempt>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Columns> = self
            .rows(&self.statements.notifications_of, (user_id, limit as i32))
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, thread_id, message_id, channel, device, outcome, error, latency_ms, at)| {
                    NotificationAttempt {
                        id,
                        user_id: user_id.to_owned(),
                        thread_id: thread_id.unwrap_or_default(),
                        message_id: message_id.unwrap_or_default(),
                        channel: channel.unwrap_or_default(),
                        device: device.unwrap_or_default(),
                        outcome: outcome.unwrap_or_default(),
                        error,
                        latency_ms: latency_ms.unwrap_or_default(),
                        at: at.unwrap_or_default(),
                    }
                },
            )
            .collect())
    }

    async fn put_device(&self, d: &Device) -> StoreResult<()> {
        let s = &self.statements;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (&d.token,)).await?;
        if let Some((Some(previous),)) = owner
            && previous != d.user_id
        {
            self.exec(&s.delete_device, (&previous, &d.token)).await?;
        }
        futures::try_join!(
            self.exec(
                &s.put_device,
                (
                    &d.user_id,
                    &d.token,
                    d.platform.as_str(),
                    &d.app_id,
                    &d.locale,
                    d.updated_at
                ),
            ),
            self.exec(&s.set_device_owner, (&d.token, &d.user_id)),
        )?;
        Ok(())
    }

    async fn devices_of(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Columns> = self.rows(&self.statements.devices_of, (user_id,)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(token, platform, app_id, locale, updated_at)| {
                Some(Device {
                    token,
                    user_id: user_id.to_owned(),
                    platform: DevicePlatform::parse(platform.as_deref()?)?,
                    app_id: app_id.unwrap_or_default(),
                    locale: locale.unwrap_or_else(|| "vi".into()),
                    updated_at: updated_at.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn delete_device(&self, user_id: &str, token: &str) -> StoreResult<bool> {
        let s = &self.statements;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (token,)).await?;
        if owner.and_then(|(o,)| o).as_deref() != Some(user_id) {
            return Ok(false);
        }
        futures::try_join!(
            self.exec(&s.delete_device, (user_id, token)),
            self.exec(&s.delete_device_owner, (token,)),
        )?;
        Ok(true)
    }

    async fn prune_device(&self, token: &str) -> StoreResult<()> {
        let s = &self.statements;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (token,)).await?;
        if let Some((Some(user_id),)) = owner {
            self.exec(&s.delete_device, (&user_id, token)).await?;
        }
        self.exec(&s.delete_device_owner, (token,)).await?;
        Ok(())
    }

    async fn find_thread(&self, key: &ThreadKey) -> StoreResult<Option<String>> {
        let found = match key {
            ThreadKey::Pair {
                buyer_id,
                seller_id,
            } => {
                self.first::<(String,)>(&self.statements.pair_thread, (buyer_id, seller_id))
                    .await?
            }
            ThreadKey::Order { order_id } => {
                self.first::<(String,)>(&self.statements.order_thread, (order_id,))
                    .await?
            }
        };
        Ok(found.map(|(id,)| id))
    }

    async fn open_thread(&self, spec: &OpenThread) -> StoreResult<Opened> {
        let candidate = chat_core::new_id();
        let id = self.claim_thread_key(&spec.key, &candidate).await?;
        let (row, created) = self.ensure_thread(&id, spec).await?;
        let thread = self.with_counts(row).await?;
        Ok(Opened { thread, created })
    }

    async fn thread(&self, id: &str) -> StoreResult<Option<Thread>> {
        self.full_thread(id).await
    }

    async fn participants(&self, id: &str) -> StoreResult<Option<(String, String)>> {
        Ok(self
            .thread_row(id)
            .await?
            .map(|row| (row.buyer_id, row.seller_id)))
    }

    /// Three steps, each a set of concurrent requests: read the thread,
    /// the markers and claim the idempotency key; write the message and
    /// what it changes; count the recipient's unread messages.
    async fn append_message(&self, m: &NewMessage) -> StoreResult<Appended> {
        let message = m.clone().into_message();
        let body = encode(&message)?;
        let claim = async {
            match (&m.client_msg_id, m.from.is_empty()) {
                (Some(key), false) => self
                    .claim(
                        &self.statements.claim_key,
                        (&m.thread_id, &m.from, key, &m.id, &body),
                    )
                    .await
                    .map(Some),
                _ => Ok(None),
            }
        };
        // Claiming before knowing the thread exists is harmless: a key of
        // a thread that does not exist is never looked up again.
        let (row, claimed, markers) = futures::try_join!(
            self.thread_row(&m.thread_id),
            claim,
            self.markers(&m.thread_id)
        )?;
        let row = row.ok_or(StoreError::NotFound("thread"))?;
        let (message, body, duplicate) = match (claimed, &m.client_msg_id) {
            (Some(false), Some(key)) => {
                let (_, first_body): (String, Vec<u8>) = self
                    .first(&self.statements.get_key, (&m.thread_id, &m.from, key))
                    .await?
                    .ok_or(StoreError::Backend("idempotency key lost".into()))?;
                (decode::<Message>(&first_body)?, first_body, true)
            }
            _ => (message, body, false),
        };
        let sets_product = if duplicate {
            None
        } else {
            m.sets_product.as_deref()
        };
        self.apply_message(&row, &message, &body, sets_product)
            .await?;

        // The thread as these writes left it (a newer message written
        // concurrently keeps its preview: the timestamps decide).
        let mut after = row;
        let is_newest = after
            .last_message
            .as_ref()
            .is_none_or(|last| message.id >= last.message_id);
        if is_newest {
            after.last_message = Some(preview_of(&message));
            after.last_message_at = Some(message.created_at);
            after.updated_at = message.created_at;
        }
        if let Some(product) = sets_product {
            after.product_id = Some(product.to_owned());
        }
        let marker_of = |user: &str| {
            markers
                .iter()
                .find(|(u, _)| u == user)
                .and_then(|(_, marker)| marker.clone())
        };
        let unread = |user: String| {
            let marker = marker_of(&user);
            let after = &after;
            let from = &message.from;
            async move {
                if user == *from {
                    // The send moved the sender's marker to this message.
                    Ok(0)
                } else {
                    self.unread_for(after, &user, marker.as_deref()).await
                }
            }
        };
        let (unread_buyer, unread_seller) = futures::try_join!(
            unread(after.buyer_id.clone()),
            unread(after.seller_id.clone())
        )?;
        Ok(Appended {
            thread: after.clone().with_unread(unread_buyer, unread_seller),
            message,
            duplicate,
        })
    }

    /// Unlogged batches of rows of one partition (cheap: one replica set,
    /// one mutation), many in flight; then the newest message becomes the
    /// preview through the same writes a send makes.
    async fn import_history(&self, thread_id: &str, messages: &[Message]) -> StoreResult<()> {
        use futures::StreamExt;
        let row = self
            .thread_row(thread_id)
            .await?
            .ok_or(StoreError::NotFound("thread"))?;
        let mut by_bucket: std::collections::BTreeMap<i32, Vec<&Message>> = Default::default();
        for m in messages {
            if m.thread_id != thread_id {
                return Err(StoreError::Backend(format!(
                    "message {} is not of thread {thread_id}",
                    m.id
                )));
            }
            by_bucket
                .entry(bucket_of_millis(m.created_at))
                .or_default()
                .push(m);
        }
        let mut batches = Vec::new();
        for (bucket, rows) in &by_bucket {
            for chunk in rows.chunks(IMPORT_BATCH) {
                let mut values = Vec::with_capacity(chunk.len());
                for m in chunk {
                    // Owned values: borrowed ones trip async_trait's
                    // lifetime inference in the stream below.
                    values.push((
                        thread_id.to_owned(),
                        *bucket,
                        m.id.clone(),
                        m.from.clone(),
                        m.kind.as_str().to_owned(),
                        encode(*m)?,
                        write_timestamp(&m.id, m.created_at),
                    ));
                }
                batches.push(values);
            }
        }
        let batch = Batch::new_with_statements(
            BatchType::Unlogged,
            vec![self.statements.insert_message.clone().into(); IMPORT_BATCH],
        );
        let mut writes = futures::stream::iter(batches.into_iter().map(|values| {
            let mut batch = batch.clone();
            batch.statements.truncate(values.len());
            batch.set_is_idempotent(true);
            async move { self.session.batch(&batch, values).await.map_err(backend) }
        }))
        .buffer_unordered(16);
        while let Some(done) = writes.next().await {
            done?;
        }
        if let Some(newest) = messages.iter().max_by(|a, b| a.id.cmp(&b.id)) {
            let body = encode(newest)?;
            self.apply_message(&row, newest, &body, None).await?;
        }
        Ok(())
    }

    async fn mark_read(
        &self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
    ) -> StoreResult<ReadMarked> {
        let row = self
            .thread_row(thread_id)
            .await?
            .ok_or(StoreError::NotFound("thread"))?;
        if !row.participants().contains(&user_id) {
            return Err(StoreError::NotFound("thread"));
        }
        let millis = millis_of_id(up_to).ok_or(StoreError::NotFound("message"))?;
        let exists: Option<(String,)> = self
            .first(
                &self.statements.message_exists,
                (thread_id, bucket_of_millis(millis), up_to),
            )
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("message"));
        }
        let current = self
            .markers(thread_id)
            .await?
            .into_iter()
            .find(|(u, _)| u == user_id)
            .and_then(|(_, m)| m);
        let moved = current.as_deref().is_none_or(|c| up_to > c);
        if moved {
            self.exec(
                &self.statements.set_marker,
                (
                    write_timestamp(up_to, millis),
                    up_to,
                    self.clock.now_millis(),
                    thread_id,
                    user_id,
                ),
            )
            .await?;
        }
        let thread = self.with_counts(row).await?;
        Ok(ReadMarked {
            thread,
            up_to: if moved {
                up_to.to_owned()
            } else {
                current.unwrap_or_default()
            },
            moved,
        })
    }

    async fn read_markers(&self, thread_id: &str) -> StoreResult<Vec<ReadMarker>> {
        let rows: Vec<(String, Option<String>, Option<i64>)> = self
            .rows(&self.statements.list_markers, (thread_id,))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(user_id, up_to, read_at)| {
                Some(ReadMarker {
                    user_id,
                    up_to: up_to?,
                    read_at: read_at.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn threads_of(
        &self,
        user_id: &str,
        cursor: Option<&InboxCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Thread>> {
        let mut position = cursor.map(|c| (c.activity_at, c.thread_id.clone()));
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(limit);
        let mut stale = Vec::new();
        let fetch = (limit * 2 + 8) as i32;
        while out.len() < limit {
            let entries: Vec<(i64, String)> = match &position {
                None => {
                    self.rows(&self.statements.inbox_first, (user_id, fetch))
                        .await?
                }
                Some((at, id)) => {
                    self.rows(&self.statements.inbox_after, (user_id, *at, id, fetch))
                        .await?
                }
            };
            let exhausted = (entries.len() as i32) < fetch;
            let Some(last) = entries.last() else { break };
            position = Some(last.clone());
            let fresh: Vec<(i64, String)> = entries
                .into_iter()
                .filter(|(_, id)| seen.insert(id.clone()))
                .collect();
            let rows = try_join_all(fresh.iter().map(|(_, id)| self.thread_row(id))).await?;
            let mut live = Vec::new();
            for ((at, id), row) in fresh.into_iter().zip(rows) {
                match row {
                    // An entry older than its thread's activity was
                    // superseded; the newer one was listed (or is on an
                    // earlier page).
                    Some(row) if at >= row.activity_at() => live.push(row),
                    Some(row) => stale.push((at, id, row.activity_at())),
                    None => {}
                }
            }
            let room = limit - out.len();
            live.truncate(room);
            out.extend(try_join_all(live.into_iter().map(|row| self.with_counts(row))).await?);
            if exhausted {
                break;
            }
        }
        self.clean_inbox_rows(user_id, stale);
        Ok(out)
    }

    async fn messages(
        &self,
        thread_id: &str,
        range: &MessageRange,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let Some(row) = self.thread_row(thread_id).await? else {
            return Ok(Vec::new());
        };
        let bound =
            |id: &Option<String>| id.as_deref().and_then(millis_of_id).map(bucket_of_millis);
        let forward = range.after.is_some() && range.before.is_none();
        let lowest = bound(&range.after)
            .unwrap_or(row.oldest_bucket())
            .max(row.oldest_bucket());
        let newest = row.newest_bucket(self.clock.now_millis());
        let highest = bound(&range.before).unwrap_or(newest).min(newest);
        let mut out: Vec<Message> = Vec::with_capacity(limit);
        let buckets: Vec<i32> = if forward {
            (lowest..=highest).collect()
        } else {
            (lowest..=highest).rev().collect()
        };
        for bucket in buckets {
            let room = (limit - out.len()) as i32;
            let page = self.page_in_bucket(thread_id, bucket, range, room).await?;
            out.extend(page);
            if out.len() >= limit {
                break;
            }
        }
        if !forward {
            out.reverse();
        }
        Ok(out)
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
