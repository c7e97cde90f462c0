//! The embedded store: one SQLite file in the data directory, WAL mode,
//! `synchronous=FULL` so a returned write survives a crash of the process
//! or the machine.
//!
//! Writes go to one writer thread that owns the write connection and does
//! group commit: it takes every write waiting in its queue, runs each in
//! its own savepoint inside one transaction, commits once (one fsync for
//! the batch), and only then answers each caller. So "returned" still means
//! "durable", and a burst of sends costs one fsync rather than one each.
//! Reads use a small pool of read-only connections on tokio's blocking
//! pool; WAL lets them run beside the writer.

mod conversations;
mod devices;
mod directory;
mod safety;
mod uploads;
mod wal_vfs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chat_core::attachments::Upload;
use chat_core::bus::MessageSent;
use chat_core::model::{
    AuditEntry, Device, DevicePlatform, InboxCursor, KeywordList, MessageRange, ModerationRecord,
    NewMessage, NotificationAttempt, OpenThread, Order, Product, ReadMarker, Side, Thread,
    ThreadKey, UNREAD_CAP, User, preview_of,
};
use chat_core::notify::Job as NotifyJob;
use chat_core::store::{Appended, Backend, ChatStore, Opened, ReadMarked, StoreError, StoreResult};
use chat_protocol::{Card, Message, MessagePreview, MessageType};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    avatar_url TEXT,
    email TEXT,
    locale TEXT NOT NULL
);
CREATE TABLE products (
    id TEXT PRIMARY KEY,
    seller_id TEXT NOT NULL,
    title TEXT NOT NULL,
    price INTEGER NOT NULL,
    currency TEXT NOT NULL,
    image_url TEXT
);
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    buyer_id TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    buyer_id TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    -- set for the general thread of a pair: one per (buyer, seller)
    pair_key TEXT UNIQUE,
    -- set for order threads: one per order
    order_id TEXT UNIQUE,
    product_id TEXT,
    last_message TEXT,
    last_message_at INTEGER,
    activity_at INTEGER NOT NULL,
    unread_buyer INTEGER NOT NULL DEFAULT 0,
    unread_seller INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX threads_by_buyer ON threads (buyer_id, activity_at DESC, id DESC);
CREATE INDEX threads_by_seller ON threads (seller_id, activity_at DESC, id DESC);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads (id),
    from_user TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    card TEXT,
    client_msg_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_by_thread ON messages (thread_id, id);
CREATE UNIQUE INDEX messages_idempotency ON messages (thread_id, from_user, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE TABLE read_markers (
    thread_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    up_to TEXT NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (thread_id, user_id)
);
"#,
    // Concurrent sends can commit out of id order; the preview must stay
    // on the newest message, so the update compares ids.
    r#"
ALTER TABLE threads ADD COLUMN last_message_id TEXT;
UPDATE threads SET last_message_id = json_extract(last_message, '$.message_id')
    WHERE last_message IS NOT NULL;
"#,
    // Push tokens: one owner per token, several tokens per user.
    r#"
CREATE TABLE devices (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    app_id TEXT NOT NULL,
    locale TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX devices_by_user ON devices (user_id);
"#,
    r#"
CREATE TABLE notification_log (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    device TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    latency_ms INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX notification_log_by_user ON notification_log (user_id, id DESC);
"#,
    // The notification service's durable queue (see `outbox`): push jobs
    // are written in the message's own transaction, digest jobs when a
    // push job completes. `leased` rows are handed out and not yet done.
    r#"
CREATE TABLE notify_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    job BLOB NOT NULL,
    due_at INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    leased INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX notify_outbox_due ON notify_outbox (leased, due_at);
CREATE TABLE notified_marks (
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (user_id, thread_id, channel)
) WITHOUT ROWID;
"#,
    // Moderation: records with the original text, the review queue, the
    // admin keyword lists.
    r#"
CREATE TABLE moderation_records (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    message_id TEXT,
    kind TEXT NOT NULL,
    categories TEXT NOT NULL,
    original TEXT NOT NULL,
    keywords TEXT NOT NULL,
    reported_by TEXT,
    needs_review INTEGER NOT NULL,
    resolution TEXT,
    resolved_by TEXT,
    resolved_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX moderation_waiting ON moderation_records (id)
    WHERE needs_review = 1 AND resolution IS NULL;
CREATE TABLE moderation_keywords (
    list TEXT NOT NULL,
    keyword TEXT NOT NULL,
    PRIMARY KEY (list, keyword)
) WITHOUT ROWID;
"#,
    // Blocks between users, and the audit log.
    r#"
CREATE TABLE blocks (
    blocker TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (blocker, blocked)
) WITHOUT ROWID;
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_actor ON audit_log (actor, id DESC);
"#,
    // Image upload slots.
    r#"
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    card TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX uploads_pending ON uploads (created_at) WHERE status = 'pending';
"#,
    // Which accounts are shops. Before this, anyone could be contacted;
    // whoever already sold, or already had a buyer write to them, stays
    // contactable.
    r#"
ALTER TABLE users ADD COLUMN seller INTEGER NOT NULL DEFAULT 0;
UPDATE users SET seller = 1 WHERE id IN (
    SELECT seller_id FROM products UNION SELECT seller_id FROM orders
    UNION SELECT seller_id FROM threads
);
"#,
    // Fewer B-tree writes per stored message: a message was four (the
    // table, its `id` key, the timeline index, the idempotency index).
    // Ids are unique per thread (server-made, time-ordered), so the
    // timeline index is the key and the separate one on `id` goes: three.
    // The table keeps its rowid, so rows of long texts stay on their page
    // (a WITHOUT ROWID row over ~230 bytes would spill to overflow pages
    // at this page size). Read markers are small rows: WITHOUT ROWID.
    r#"
CREATE TABLE messages_new (
    id TEXT NOT NULL,
    thread_id TEXT NOT NULL REFERENCES threads (id),
    from_user TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    card TEXT,
    client_msg_id TEXT,
    created_at INTEGER NOT NULL
);
INSERT INTO messages_new (id, thread_id, from_user, kind, content, card, client_msg_id, created_at)
    SELECT id, thread_id, from_user, kind, content, card, client_msg_id, created_at
    FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE UNIQUE INDEX messages_by_thread ON messages (thread_id, id);
CREATE UNIQUE INDEX messages_idempotency ON messages (thread_id, from_user, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE TABLE read_markers_new (
    thread_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    up_to TEXT NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (thread_id, user_id)
) WITHOUT ROWID;
INSERT INTO read_markers_new SELECT thread_id, user_id, up_to, read_at FROM read_markers;
DROP TABLE read_markers;
ALTER TABLE read_markers_new RENAME TO read_markers;
"#,
];

const UPLOAD_COLUMNS: &str = "id, thread_id, user_id, content_type, size, status, card, created_at";

fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<Upload> {
    Ok(Upload {
        id: row.get(0)?,
        thread_id: row.get(1)?,
        user_id: row.get(2)?,
        content_type: row.get(3)?,
        size: row.get::<_, i64>(4)? as u64,
        status: chat_core::attachments::UploadStatus::from_stored(&row.get::<_, String>(5)?),
        card: row.get(6)?,
        created_at: row.get(7)?,
    })
}

const MODERATION_COLUMNS: &str = "id, thread_id, user_id, message_id, kind, categories, original, \
     keywords, reported_by, needs_review, resolution, resolved_by, resolved_at, created_at";

fn moderation_from_row(row: &Row<'_>) -> rusqlite::Result<ModerationRecord> {
    let list = |text: String| serde_json::from_str::<Vec<String>>(&text).unwrap_or_default();
    Ok(ModerationRecord {
        id: row.get(0)?,
        thread_id: row.get(1)?,
        user_id: row.get(2)?,
        message_id: row.get(3)?,
        kind: chat_core::model::ModerationKind::from_stored(&row.get::<_, String>(4)?),
        categories: list(row.get(5)?),
        original: row.get(6)?,
        keywords: list(row.get(7)?),
        reported_by: row.get(8)?,
        needs_review: row.get(9)?,
        resolution: row.get(10)?,
        resolved_by: row.get(11)?,
        resolved_at: row.get(12)?,
        created_at: row.get(13)?,
    })
}

/// Run after the batch's COMMIT with its outcome; answers the caller.
type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// A job that ran: how to answer it, and whether it left the batch's
/// transaction unfit to commit.
struct Ran {
    complete: Completion,
    /// Set when an unguarded job failed after it had changed rows (or the
    /// transaction was rolled back under it): the batch must not commit.
    poisoned: Option<StoreError>,
}

/// A queued write and the channel its caller waits on.
trait WriteJob: Send {
    /// Runs inside the batch transaction; the answer waits for the commit.
    fn run(self: Box<Self>, conn: &Connection, pending: &mut Pending) -> Ran;
    /// Works with the batch's [`Pending`] rows instead of the tables they
    /// stand for; any other write runs after they are written.
    fn coalesces(&self) -> bool;
    /// Answers without running, when the batch cannot start.
    fn refuse(self: Box<Self>, error: StoreError);
}

/// How a write is kept apart from the others of its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// In its own savepoint: a failing write is undone alone.
    Savepoint,
    /// Without one, for a write whose only refusals come before its first
    /// change (SQLite undoes a failing statement by itself). Should it fail
    /// after a change anyway, the whole batch is rolled back and every
    /// write in it refused (a retry may pass). A savepoint, its release and
    /// the sub-journal copies were about 5 % of a send's instructions.
    None,
}

struct Write<T, F> {
    f: F,
    isolation: Isolation,
    coalesces: bool,
    answer: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &mut Pending) -> StoreResult<T> + Send,
{
    fn coalesces(&self) -> bool {
        self.coalesces
    }

    fn run(self: Box<Self>, conn: &Connection, pending: &mut Pending) -> Ran {
        let f = self.f;
        let (result, left_changes) = match self.isolation {
            Isolation::Savepoint => (in_savepoint(conn, |c| f(c, pending)), false),
            Isolation::None => {
                let before = conn.total_changes();
                let result = f(conn, pending);
                let left_changes = result.is_err() && conn.total_changes() != before;
                (result, left_changes)
            }
        };
        // An I/O error or a full disk can also roll the transaction back by
        // itself: the writes after it would no longer be in it.
        let poisoned = (left_changes || conn.is_autocommit()).then(|| {
            result
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_else(|| backend("sqlite rolled the batch's transaction back"))
        });
        let answer = self.answer;
        Ran {
            complete: Box::new(move |committed: StoreResult<()>| {
                let _ = answer.send(committed.and(result));
            }),
            poisoned,
        }
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.answer.send(Err(error));
    }
}

type Job = Box<dyn WriteJob>;

/// Most writes committed together.
const MAX_BATCH: usize = 512;
const READERS: usize = 4;

pub struct SqliteStore {
    /// Woken after a commit that enqueued jobs.
    pub(crate) outbox_wake: Arc<tokio::sync::Notify>,
    writer: std::sync::mpsc::Sender<Job>,
    /// The writer thread, to tell that it is alive (readiness).
    writer_thread: std::thread::JoinHandle<()>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    /// Dropping it ends the checkpoint thread.
    _stop_checkpoints: std::sync::mpsc::Sender<()>,
}

pub(crate) fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::unavailable(Backend::Sqlite, e)
}

/// The one text column `sql` selects, if a row matches.
pub(crate) fn select_text(
    c: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
) -> StoreResult<Option<String>> {
    c.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(values, |r| r.get(0)).optional())
        .map_err(backend)
}

/// SQLite's extended result code, when `e` came from SQLite.
pub(crate) fn rusqlite_code(e: &StoreError) -> Option<std::ffi::c_int> {
    match e {
        StoreError::Unavailable { source, .. } => source
            .downcast_ref::<rusqlite::Error>()?
            .sqlite_error()
            .map(|e| e.extended_code),
        _ => None,
    }
}

/// The column lists as macros too, so the hot path's statements are
/// `concat!`ed at compile time: a `format!` per statement per send was an
/// allocation and a formatting pass each.
macro_rules! thread_columns {
    () => {
        "id, buyer_id, seller_id, product_id, order_id, last_message, \
         last_message_at, unread_buyer, unread_seller, created_at, updated_at"
    };
}
macro_rules! message_columns {
    () => {
        "id, thread_id, from_user, kind, content, card, client_msg_id, created_at"
    };
}
const THREAD_COLUMNS: &str = thread_columns!();
const MESSAGE_COLUMNS: &str = message_columns!();

// After the column macros, which it uses.
mod pending;
use pending::Pending;

fn thread_from_row(row: &Row<'_>) -> rusqlite::Result<Thread> {
    let preview: Option<String> = row.get(5)?;
    Ok(Thread {
        last_message: preview.and_then(|p| serde_json::from_str::<MessagePreview>(&p).ok()),
        ..thread_without_preview(row)?
    })
}

/// [`thread_from_row`] without parsing the stored preview (column 5).
fn thread_without_preview(row: &Row<'_>) -> rusqlite::Result<Thread> {
    Ok(Thread {
        id: row.get(0)?,
        buyer_id: row.get(1)?,
        seller_id: row.get(2)?,
        product_id: row.get(3)?,
        order_id: row.get(4)?,
        last_message: None,
        last_message_at: row.get(6)?,
        unread_buyer: row.get(7)?,
        unread_seller: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let kind: String = row.get(3)?;
    let card: Option<String> = row.get(5)?;
    Ok(Message {
        id: row.get(0)?,
        thread_id: row.get(1)?,
        from: row.get(2)?,
        kind: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        content: row.get(4)?,
        card: card.and_then(|c| serde_json::from_str::<Card>(&c).ok()),
        client_msg_id: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn load_thread(conn: &Connection, id: &str) -> rusqlite::Result<Option<Thread>> {
    conn.prepare_cached(&format!(
        "SELECT {THREAD_COLUMNS} FROM threads WHERE id = ?1"
    ))?
    .query_row([id], thread_from_row)
    .optional()
}

fn pair_key(buyer_id: &str, seller_id: &str) -> String {
    // `/` cannot occur in ids, so the key is unambiguous.
    format!("{buyer_id}/{seller_id}")
}

impl SqliteStore {
    /// Opens (creating if needed) `chat.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(backend)?;
        let path = data_dir.join("chat.db");
        owner_only(&path)?;
        // The writer's WAL writes gathered into one per sync (`wal_vfs`).
        wal_vfs::register().map_err(|rc| backend(format!("sqlite VFS not registered ({rc})")))?;
        let mut conn = Connection::open_with_flags_and_vfs(
            &path,
            rusqlite::OpenFlags::default(),
            wal_vfs::NAME,
        )
        .map_err(backend)?;
        // Every page a commit touches is written whole to the WAL; small
        // pages write less for the scattered index updates of chat
        // traffic. Takes effect only on a new database.
        conn.pragma_update(None, "page_size", 1024)
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        migrate(&mut conn)?;
        // The writer's statements (sends, reads, receipts, the outbox,
        // moderation, uploads, admin) outnumber rusqlite's default 16: an
        // evicted one is parsed again on its next use.
        conn.set_prepared_statement_cache_capacity(128);
        // An 8 MiB page cache: with 1,000 active threads (`steady`) the
        // idempotency index's random inserts missed SQLite's default 2 MiB
        // and read their pages back from the WAL; 8 MiB cut the server's CPU
        // by 15 % there. More costs `burst` (100 threads) a little: every
        // commit walks the cache's hash table (pcache1TruncateUnsafe), 7 %
        // more CPU at 32 MiB (docs/performance.md).
        conn.pragma_update(None, "cache_size", -8192)
            .map_err(backend)?;
        // Checkpoints copy the WAL back into the database file; done inline
        // they stall every few hundred commits. A separate thread does them.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        // When a restarted WAL is reset, a larger file is cut back to this.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(backend)?;
        let checkpointer = Connection::open(&path).map_err(backend)?;
        checkpointer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let (stop_checkpoints, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(backend)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(&path).map_err(backend)?;
            reader
                .pragma_update(None, "query_only", "ON")
                .map_err(backend)?;
            reader
                .busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            readers.push(Arc::new(Mutex::new(reader)));
        }
        let (writer, jobs) = std::sync::mpsc::channel::<Job>();
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(conn, jobs))
            .map_err(backend)?;
        Ok(SqliteStore {
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            writer,
            writer_thread,
            readers,
            next_reader: AtomicUsize::new(0),
            _stop_checkpoints: stop_checkpoints,
        })
    }

    /// Runs a read on one of the read connections, on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[index].clone();
        tokio::task::spawn_blocking(move || f(&conn.lock()))
            .await
            .map_err(backend)?
    }

    /// One statement on the writer (group-committed like every write): the
    /// number of rows it changed.
    pub(crate) async fn execute(
        &self,
        sql: impl AsRef<str> + Send + 'static,
        values: Vec<Value>,
    ) -> StoreResult<usize> {
        self.write(move |c| {
            c.prepare_cached(sql.as_ref())
                .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
                .map_err(backend)
        })
        .await
    }

    /// The one row `sql` finds, if any, read as `row`.
    pub(crate) async fn query_one<T: Send + 'static>(
        &self,
        sql: &'static str,
        values: Vec<Value>,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        self.read(move |c| {
            c.prepare_cached(sql)
                .and_then(|mut stmt| {
                    stmt.query_row(rusqlite::params_from_iter(values), row)
                        .optional()
                })
                .map_err(backend)
        })
        .await
    }

    /// True when the writer thread has ended (it panicked): writes fail.
    fn writer_stopped(&self) -> bool {
        self.writer_thread.is_finished()
    }

    /// Queues a write for the next group commit and returns its result
    /// once the commit is durable.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_isolated(Isolation::Savepoint, false, move |c, _| f(c))
            .await
    }

    /// [`SqliteStore::write`] without a savepoint of its own, for a write
    /// that refuses only before its first change (see [`Isolation::None`]).
    #[cfg(test)]
    pub(crate) async fn write_unguarded<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_isolated(Isolation::None, false, move |c, _| f(c))
            .await
    }

    /// A write without a savepoint (see [`Isolation::None`]) that changes
    /// threads and read markers only through the batch's [`Pending`] rows.
    pub(crate) async fn write_coalesced<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Pending) -> StoreResult<T> + Send + 'static,
    {
        self.write_isolated(Isolation::None, true, f).await
    }

    async fn write_isolated<T, F>(
        &self,
        isolation: Isolation,
        coalesces: bool,
        f: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Pending) -> StoreResult<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(Write {
            f,
            isolation,
            coalesces,
            answer,
        });
        let stopped = || backend("sqlite writer stopped");
        self.writer.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let applied: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version = index + 1, "sqlite migration applied");
    }
    Ok(())
}

/// One write inside the batch: its own savepoint, so a failing write is
/// undone alone and the others of the batch still commit.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    run_cached(conn, "SAVEPOINT job").map_err(backend)?;
    let result = f(conn);
    if result.is_err() {
        run_cached(conn, "ROLLBACK TO job").map_err(backend)?;
    }
    run_cached(conn, "RELEASE job").map_err(backend)?;
    result
}

/// A statement without parameters or rows, from the statement cache:
/// parsing BEGIN, SAVEPOINT, RELEASE and COMMIT on every write cost a send
/// more instructions than binding its insert.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
}

/// Copies the WAL into the database every second, until the store is
/// dropped. PASSIVE does the bulk without blocking the writer; under
/// steady writes it never catches up completely, so the WAL would only
/// grow (and every new block of it costs the file system a zeroing). The
/// RESTART that follows waits for the writer's current commit, copies the
/// few remaining frames, and makes the next commit start the WAL from its
/// beginning again, reusing its blocks.
fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(std::time::Duration::from_secs(1))
    {
        for mode in ["PASSIVE", "RESTART"] {
            let pragma = format!("PRAGMA wal_checkpoint({mode})");
            if let Err(e) = conn.query_row(&pragma, [], |_| Ok(())) {
                tracing::warn!(error = %e, mode, "sqlite checkpoint failed");
            }
        }
    }
}

/// The writer thread: group commit until every sender is gone.
fn write_loop(conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            let error = backend(e);
            for job in batch {
                job.refuse(error.clone());
            }
            continue;
        }
        let mut poisoned = None;
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        // Per batch: nothing pending outlives its transaction.
        let mut pending = Pending::default();
        for job in batch {
            // Another kind of write sees the tables as the appends before
            // it left them.
            if !job.coalesces()
                && let Err(e) = pending.flush(&conn)
            {
                poisoned.get_or_insert(e);
            }
            let ran = job.run(&conn, &mut pending);
            completions.push(ran.complete);
            if poisoned.is_none() {
                poisoned = ran.poisoned;
            }
        }
        if poisoned.is_none()
            && let Err(e) = pending.flush(&conn)
        {
            poisoned = Some(e);
        }
        let committed = match poisoned {
            None => run_cached(&conn, "COMMIT").map_err(backend),
            Some(error) => Err(error),
        };
        if committed.is_err() {
            if !conn.is_autocommit() {
                let _ = run_cached(&conn, "ROLLBACK");
            }
            tracing::error!(
                "sqlite group commit failed; {} writes refused",
                completions.len()
            );
        }
        for complete in completions {
            complete(committed.clone());
        }
    }
}

/// Inserts `job` into the notification outbox (read by `crate::outbox`)
/// unless one with the same key is queued.
pub(crate) fn enqueue_job_in(tx: &Connection, job: &NotifyJob, due_at: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO notify_outbox (dedup_key, job, due_at, enqueued_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            job.dedup_key(),
            job.encode(),
            due_at,
            chat_core::now_millis()
        ])
    })
    .map(|_| ())
    .map_err(backend)
}

/// Binds `m` to an `INSERT … ({MESSAGE_COLUMNS}) VALUES (?1 … ?8)`.
fn insert_message(stmt: &mut rusqlite::Statement<'_>, m: &Message) -> rusqlite::Result<usize> {
    let card = m
        .card
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    stmt.execute(params![
        m.id,
        m.thread_id,
        m.from,
        m.kind.as_str(),
        m.content,
        card,
        m.client_msg_id,
        m.created_at
    ])
}

/// Hot path of every send: one insert, and the thread's row read on its
/// first append in the batch; the row and the read marker are written by
/// `pending` at the end of the batch. A retry reads the stored message.
fn append_in(tx: &Connection, pending: &mut Pending, mut m: NewMessage) -> StoreResult<Appended> {
    // The thread first: its row decides what the update writes. Within a
    // batch it is read once and kept in `pending`, written at the end.
    if pending.thread(tx, &m.thread_id)?.is_none() {
        return Err(StoreError::NotFound("thread"));
    }
    let counts = u32::from(m.counts_as_unread());
    let (owes_push, sets_product) = (m.owes_push, m.sets_product.take());
    let message = m.into_message();
    let m = &message;
    let inserted = tx
        .prepare_cached(concat!(
            "INSERT INTO messages (",
            message_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (thread_id, from_user, client_msg_id) WHERE client_msg_id IS NOT NULL \
             DO NOTHING"
        ))
        .and_then(|mut stmt| insert_message(&mut stmt, &message))
        .map_err(|e| match e.sqlite_error_code() {
            // The thread does not exist (foreign key).
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::NotFound("thread"),
            _ => backend(e),
        })?;
    if inserted == 0 {
        return duplicate_of(tx, pending, &message);
    }
    let state = pending
        .thread(tx, &m.thread_id)?
        .ok_or(StoreError::NotFound("thread"))?;
    // Concurrent sends can commit out of id order: the preview stays on
    // the newest message.
    let newest = state
        .last_id
        .as_deref()
        .is_none_or(|last| m.id.as_str() > last);
    let preview = newest.then(|| preview_of(&message));
    let preview_text = preview
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(backend)?;
    let participant = state.thread.is_participant(&m.from);
    let job = (participant && owes_push).then(|| {
        NotifyJob::Push(MessageSent {
            thread_id: m.thread_id.clone(),
            message_id: m.id.clone(),
            from_user_id: m.from.clone(),
            to_user_id: state.thread.other_participant(&m.from).to_owned(),
        })
    });
    if let Some(job) = &job {
        enqueue_job_in(tx, job, m.created_at)?;
    }
    // Nothing below fails: the batch's copy changes only for a stored
    // message.
    if preview.is_none() {
        state.answer();
    }
    let thread = &mut state.thread;
    if let Some(preview) = preview {
        thread.last_message_at = Some(m.created_at);
        thread.last_message = Some(preview);
        state.parsed = true;
        state.preview = preview_text;
        state.last_id = Some(m.id.clone());
        state.activity_at = m.created_at;
    }
    let unread = |own: bool, other_sent: bool, count: u32| {
        if own {
            0
        } else if other_sent {
            (count + counts).min(UNREAD_CAP)
        } else {
            count
        }
    };
    let (from_buyer, from_seller) = (thread.buyer_id == m.from, thread.seller_id == m.from);
    thread.unread_buyer = unread(from_buyer, from_seller, thread.unread_buyer);
    thread.unread_seller = unread(from_seller, from_buyer, thread.unread_seller);
    if let Some(product) = sets_product {
        thread.product_id = Some(product);
    }
    thread.updated_at = m.created_at;
    state.dirty = true;
    let thread = thread.clone();
    if participant {
        // Answering a thread means having read it.
        pending.mark_read(&m.thread_id, &m.from, &m.id, m.created_at);
    }
    Ok(Appended {
        message,
        thread,
        duplicate: false,
    })
}

/// A retry: the message stored earlier under the same key, and its thread
/// as this batch sees it.
fn duplicate_of(tx: &Connection, pending: &mut Pending, m: &Message) -> StoreResult<Appended> {
    let message = tx
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE thread_id = ?1 AND from_user = ?2 AND client_msg_id = ?3"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(
                params![m.thread_id, m.from, m.client_msg_id],
                message_from_row,
            )
        })
        .map_err(backend)?;
    let thread = match pending.cached(&m.thread_id) {
        Some(thread) => thread.clone(),
        None => load_thread(tx, &m.thread_id)
            .map_err(backend)?
            .ok_or(StoreError::NotFound("thread"))?,
    };
    Ok(Appended {
        message,
        thread,
        duplicate: true,
    })
}

fn import_in(tx: &Connection, thread_id: &str, messages: &[Message]) -> StoreResult<()> {
    if load_thread(tx, thread_id).map_err(backend)?.is_none() {
        return Err(StoreError::NotFound("thread"));
    }
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))
        .map_err(backend)?;
    for m in messages {
        if m.thread_id != thread_id {
            return Err(StoreError::refused(
                Backend::Sqlite,
                format!("message {} is not of thread {thread_id}", m.id),
            ));
        }
        insert_message(&mut insert, m).map_err(backend)?;
    }
    if let Some(newest) = messages.iter().max_by(|a, b| a.id.cmp(&b.id)) {
        let preview = serde_json::to_string(&preview_of(newest)).map_err(backend)?;
        tx.prepare_cached(
            "UPDATE threads SET last_message = ?2, last_message_at = ?3, activity_at = ?3, \
             last_message_id = ?4, updated_at = ?3 \
             WHERE id = ?1 AND (last_message_id IS NULL OR last_message_id < ?4)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![thread_id, preview, newest.created_at, newest.id])
        })
        .map_err(backend)?;
    }
    Ok(())
}

fn mark_read_in(
    tx: &Connection,
    thread_id: &str,
    user_id: &str,
    up_to: &str,
) -> StoreResult<ReadMarked> {
    let thread = load_thread(tx, thread_id)
        .map_err(backend)?
        .ok_or(StoreError::NotFound("thread"))?;
    let side = thread
        .side_of(user_id)
        .ok_or(StoreError::NotFound("thread"))?;
    let exists = select_text(
        tx,
        "SELECT id FROM messages WHERE id = ?1 AND thread_id = ?2",
        params![up_to, thread_id],
    )?;
    if exists.is_none() {
        return Err(StoreError::NotFound("message"));
    }
    let current = select_text(
        tx,
        "SELECT up_to FROM read_markers WHERE thread_id = ?1 AND user_id = ?2",
        params![thread_id, user_id],
    )?;
    let moved = current.as_deref().is_none_or(|c| up_to > c);
    let marker = if moved {
        up_to.to_owned()
    } else {
        current.unwrap_or_default()
    };
    let unread: u32 = tx
        .query_row(
            "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE thread_id = ?1 AND id > ?2 \
             AND from_user != ?3 AND kind != 'system' LIMIT ?4)",
            params![thread_id, marker, user_id, UNREAD_CAP],
            |r| r.get(0),
        )
        .map_err(backend)?;
    let column = match side {
        Side::Buyer => "unread_buyer",
        Side::Seller => "unread_seller",
    };
    tx.execute(
        &format!("UPDATE threads SET {column} = ?2 WHERE id = ?1"),
        params![thread_id, unread],
    )
    .map_err(backend)?;
    if moved {
        tx.execute(
            "INSERT INTO read_markers (thread_id, user_id, up_to, read_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (thread_id, user_id) DO UPDATE SET up_to = ?3, read_at = ?4",
            params![thread_id, user_id, marker, chat_core::now_millis()],
        )
        .map_err(backend)?;
    }
    let thread = load_thread(tx, thread_id)
        .map_err(backend)?
        .ok_or(StoreError::NotFound("thread"))?;
    Ok(ReadMarked {
        thread,
        up_to: marker,
        moved,
    })
}

#[async_trait]
impl ChatStore for SqliteStore {
    /// A read on a reader connection, and the writer thread alive (a
    /// write would cost a commit on every probe).
    async fn ping(&self) -> StoreResult<()> {
        if self.writer_stopped() {
            return Err(backend("sqlite writer stopped"));
        }
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(backend)
        })
        .await
    }
}

/// The database holds unmasked originals (moderation records): readable by
/// its owner only. Created 0600 before SQLite opens it (its `-wal` and `-shm`
/// files take the database file's mode); an existing one is narrowed.
fn owner_only(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(backend)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(backend)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod contract {
    use std::sync::Arc;

    use chat_core::store::ChatStore;

    use super::SqliteStore;

    fn fresh() -> (tempfile::TempDir, Arc<dyn ChatStore>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open store");
        (dir, Arc::new(store))
    }

    // SQLite's queries hold no date partitions: its look-backs do not read
    // the clock, so the dated check runs against a plain store.
    chat_core::contract_tests!(fresh(), dated = |_clock| fresh(), long_history = 50_000);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::store::prelude::*;

    #[cfg(unix)]
    #[test]
    fn the_database_and_its_wal_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let names = ["chat.db", "chat.db-wal", "chat.db-shm"];
        let modes = || {
            names.map(|name| {
                std::fs::metadata(dir.path().join(name))
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .permissions()
                    .mode()
                    & 0o777
            })
        };
        // A new database, and one left world-readable by an older version.
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(modes(), [0o600; 3], "new");
        drop(store);
        for name in names {
            let path = dir.path().join(name);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let _store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(modes(), [0o600; 3], "reopened");
    }

    #[tokio::test]
    async fn an_older_database_keeps_its_shops_contactable() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The schema as the release before sellers were recorded left it.
            let mut conn = Connection::open(dir.path().join("chat.db")).unwrap();
            let before = MIGRATIONS
                .iter()
                .position(|m| m.contains("ADD COLUMN seller"))
                .unwrap();
            for sql in &MIGRATIONS[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", before).unwrap();
            let tx = conn.transaction().unwrap();
            for id in ["buyer", "sells", "ordered-from", "written-to"] {
                tx.execute(
                    "INSERT INTO users (id, display_name, locale) VALUES (?1, ?1, 'vi')",
                    [id],
                )
                .unwrap();
            }
            tx.execute_batch(
                "INSERT INTO products VALUES ('p', 'sells', 'Áo', 1, 'VND', NULL);
                 INSERT INTO orders VALUES ('o', 'buyer', 'ordered-from', '1 x Áo');
                 INSERT INTO threads (id, buyer_id, seller_id, pair_key, activity_at,
                     created_at, updated_at)
                 VALUES ('t', 'buyer', 'written-to', 'buyer/written-to', 1, 1, 1);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let seller = |id: &'static str| {
            let store = &store;
            async move { store.user(id).await.unwrap().unwrap().seller }
        };
        assert!(!seller("buyer").await);
        assert!(seller("sells").await);
        assert!(seller("ordered-from").await);
        assert!(seller("written-to").await);
        // From now on only the platform says who sells.
        let mut closed = store.user("sells").await.unwrap().unwrap();
        closed.seller = false;
        store.put_user(&closed).await.unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(!store.user("sells").await.unwrap().unwrap().seller);
    }

    /// A database from before messages lost their `id` key keeps its
    /// timeline, its read markers and its idempotency keys.
    #[tokio::test]
    async fn an_older_database_keeps_its_messages_and_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (thread, first, second) = {
            let (store, thread) = store_with_thread_in(dir.path()).await;
            let first = store.append_message(&text(&thread.id, "b", "k1")).await;
            let second = store.append_message(&text(&thread.id, "s", "k2")).await;
            let (first, second) = (first.unwrap().message, second.unwrap().message);
            drop(store);
            (thread, first, second)
        };
        // Back to the schema before the last migration, data kept.
        {
            let conn = Connection::open(dir.path().join("chat.db")).unwrap();
            let before = MIGRATIONS.len() - 1;
            conn.execute_batch(
                "CREATE TABLE m_old (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL REFERENCES threads (id),
                     from_user TEXT NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, card TEXT,
                     client_msg_id TEXT, created_at INTEGER NOT NULL);
                 INSERT INTO m_old SELECT id, thread_id, from_user, kind, content, card,
                     client_msg_id, created_at FROM messages;
                 DROP TABLE messages;
                 ALTER TABLE m_old RENAME TO messages;
                 CREATE INDEX messages_by_thread ON messages (thread_id, id);
                 CREATE UNIQUE INDEX messages_idempotency ON messages (thread_id, from_user, client_msg_id)
                     WHERE client_msg_id IS NOT NULL;
                 CREATE TABLE r_old (thread_id TEXT NOT NULL, user_id TEXT NOT NULL, up_to TEXT NOT NULL,
                     read_at INTEGER NOT NULL, PRIMARY KEY (thread_id, user_id));
                 INSERT INTO r_old SELECT * FROM read_markers;
                 DROP TABLE read_markers;
                 ALTER TABLE r_old RENAME TO read_markers;",
            )
            .unwrap();
            conn.pragma_update(None, "user_version", before).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let listed = store
            .messages(&thread.id, &MessageRange::default(), 10)
            .await
            .unwrap();
        let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, [first.id.as_str(), second.id.as_str()]);
        // The key still answers a retry with the stored message.
        let retry = store
            .append_message(&text(&thread.id, "b", "k1"))
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.message.id, first.id);
        // Each sender's marker (answering is reading) survived, and moves.
        assert_eq!(
            markers_of(&store, &thread.id).await,
            [
                ("b".into(), first.id.clone()),
                ("s".into(), second.id.clone())
            ]
        );
        let marked = store.mark_read(&thread.id, "b", &second.id).await.unwrap();
        assert!(marked.moved);
        assert_eq!(marked.up_to, second.id);
    }

    fn text(thread_id: &str, from: &str, cmid: &str) -> NewMessage {
        NewMessage {
            id: chat_core::new_id(),
            thread_id: thread_id.into(),
            from: from.into(),
            kind: MessageType::Text,
            content: format!("hello {cmid}"),
            card: None,
            client_msg_id: Some(cmid.into()),
            created_at: chat_core::now_millis(),
            sets_product: None,
            owes_push: false,
        }
    }

    async fn store_with_thread() -> (tempfile::TempDir, SqliteStore, Thread) {
        let dir = tempfile::tempdir().unwrap();
        let (store, thread) = store_with_thread_in(dir.path()).await;
        (dir, store, thread)
    }

    async fn store_with_thread_in(dir: &Path) -> (SqliteStore, Thread) {
        let store = SqliteStore::open(dir).unwrap();
        let spec = OpenThread {
            key: ThreadKey::Pair {
                buyer_id: "b".into(),
                seller_id: "s".into(),
            },
            buyer_id: "b".into(),
            seller_id: "s".into(),
        };
        let opened = store.open_thread(&spec).await.unwrap();
        assert!(opened.created);
        let again = store.open_thread(&spec).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.thread.id, opened.thread.id);
        (store, opened.thread)
    }

    /// The driver's error travels inside `StoreError::Unavailable`, so a
    /// caller can still tell a taken key from a failing disk.
    #[tokio::test]
    async fn a_taken_upload_id_is_exists_and_other_failures_keep_their_source() {
        let (_dir, store, thread) = store_with_thread().await;
        let upload = Upload {
            id: chat_core::new_id(),
            thread_id: thread.id.clone(),
            user_id: "b".into(),
            content_type: "image/png".into(),
            size: 10,
            status: chat_core::attachments::UploadStatus::Pending,
            card: None,
            created_at: 1,
        };
        store.create_upload(&upload).await.unwrap();
        let again = store.create_upload(&upload).await.unwrap_err();
        assert!(matches!(again, StoreError::Exists("upload")), "{again:?}");

        let bad = store
            .execute("INSERT INTO no_such_table VALUES (1)", vec![])
            .await
            .unwrap_err();
        assert!(matches!(
            bad,
            StoreError::Unavailable {
                backend: Backend::Sqlite,
                ..
            }
        ));
        assert_eq!(
            rusqlite_code(&bad),
            Some(rusqlite::ffi::SQLITE_ERROR),
            "{bad}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_are_group_committed_and_fail_alone() {
        let (_dir, store, thread) = store_with_thread().await;
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..300 {
            let (store, thread_id) = (store.clone(), thread.id.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .append_message(&text(&thread_id, "b", &format!("c{i}")))
                    .await
            }));
        }
        let doomed = text("no-such-thread", "b", "x");
        assert!(matches!(
            store.append_message(&doomed).await,
            Err(StoreError::NotFound("thread"))
        ));
        for task in tasks {
            assert!(!task.await.unwrap().unwrap().duplicate);
        }
        let all = store
            .messages(&thread.id, &MessageRange::default(), 1000)
            .await
            .unwrap();
        assert_eq!(all.len(), 300);
        let thread = store.thread(&thread.id).await.unwrap().unwrap();
        assert_eq!(
            thread.unread_seller, UNREAD_CAP,
            "every increment survived batching"
        );
    }

    /// An unguarded write that fails after changing rows takes its whole
    /// batch down (nothing of it is committed, every write in it is
    /// refused); one that fails before its first change harms nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unguarded_write_failing_after_a_change_refuses_its_batch() {
        let (_dir, store, _thread) = store_with_thread().await;
        store
            .execute("CREATE TABLE t (v INTEGER UNIQUE)", vec![])
            .await
            .unwrap();
        let insert = |v: i64| {
            move |c: &Connection| {
                c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map_err(backend)
            }
        };
        async fn count(store: &SqliteStore) -> i64 {
            store
                .query_one("SELECT count(*) FROM t", vec![], |r| r.get::<_, i64>(0))
                .await
                .unwrap()
                .unwrap()
        }
        // A write that holds the writer once it runs, so the two queued
        // after it has started share the next batch.
        let hold = move |v: i64| {
            let (started, running) = tokio::sync::watch::channel(false);
            let job = move |c: &Connection| {
                let _ = started.send(true);
                std::thread::sleep(std::time::Duration::from_millis(300));
                insert(v)(c)
            };
            (job, running)
        };
        let (job, running) = hold(0);
        let (held, fails_late, bystander) = tokio::join!(
            store.write(job),
            async {
                running.clone().wait_for(|&up| up).await.unwrap();
                store
                    .write_unguarded(move |c| {
                        insert(1)(c)?;
                        Err::<usize, _>(StoreError::Inconsistent("after a change".into()))
                    })
                    .await
            },
            async {
                running.clone().wait_for(|&up| up).await.unwrap();
                store.write(insert(2)).await
            },
        );
        assert_eq!(held.unwrap(), 1);
        assert!(fails_late.is_err());
        assert!(
            bystander.is_err(),
            "the batch was rolled back: {bystander:?}"
        );
        assert_eq!(count(&store).await, 1, "only the first batch committed");

        // Failing before any change: the rest of the batch commits.
        let (job, running) = hold(0);
        let (held, fails_early, bystander) = tokio::join!(
            store.write(job),
            async {
                running.clone().wait_for(|&up| up).await.unwrap();
                store
                    .write_unguarded(|_c: &Connection| {
                        Err::<usize, _>(StoreError::NotFound("thread"))
                    })
                    .await
            },
            async {
                running.clone().wait_for(|&up| up).await.unwrap();
                store.write(insert(3)).await
            },
        );
        // The held write inserts 0 again: refused alone, in its savepoint.
        assert!(held.is_err());
        assert!(matches!(fails_early, Err(StoreError::NotFound("thread"))));
        assert_eq!(bystander.unwrap(), 1);
        assert_eq!(count(&store).await, 2);
        // And a failing statement undoes itself: an unguarded write whose
        // insert breaks the key changed nothing, so it fails alone.
        let (job, running) = hold(4);
        let (held, dup, bystander) = tokio::join!(
            store.write(job),
            async {
                running.clone().wait_for(|&up| up).await.unwrap();
                store.write_unguarded(insert(3)).await
            },
            async {
                running.clone().wait_for(|&up| up).await.unwrap();
                store.write(insert(5)).await
            },
        );
        assert_eq!(held.unwrap(), 1);
        assert!(dup.is_err());
        assert_eq!(bystander.unwrap(), 1);
        assert_eq!(count(&store).await, 4);
    }

    /// A thread's read markers as (user, up to), sorted.
    async fn markers_of(store: &SqliteStore, thread_id: &str) -> Vec<(String, String)> {
        let mut markers: Vec<(String, String)> = store
            .read_markers(thread_id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.user_id, m.up_to))
            .collect();
        markers.sort();
        markers
    }

    /// Holds the writer for 300 ms once it runs, so that the writes queued
    /// meanwhile share its next batch.
    fn holding_write() -> (
        impl FnOnce(&Connection) -> StoreResult<()> + Send + 'static,
        tokio::sync::watch::Receiver<bool>,
    ) {
        let (started, running) = tokio::sync::watch::channel(false);
        let job = move |_: &Connection| {
            let _ = started.send(true);
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        };
        (job, running)
    }

    /// Appends of one batch keep their thread in memory and write it once
    /// (`pending`); what each answers, and what the tables hold after the
    /// commit, must be what one append at a time gives, across a retry and
    /// a read marker (another kind of write) in the same batch.
    #[tokio::test]
    async fn appends_sharing_a_batch_answer_and_store_what_one_at_a_time_would() {
        let (_dir, store, thread) = store_with_thread().await;
        let id = thread.id.as_str();
        let [m1, m2, m3, m4] = [("b", "m1"), ("b", "m2"), ("s", "m3"), ("b", "m4")]
            .map(|(from, cmid)| text(id, from, cmid));
        let retry = NewMessage {
            id: chat_core::new_id(),
            ..m1.clone()
        };
        let (job, running) = holding_write();
        // Queued once the writer is held, all in one poll and in this order
        // (`biased`; each waiting for the hold itself would race it).
        let (held, (a1, a2, a3, dup, read, a4)) = tokio::join!(biased; store.write(job), async {
            running.clone().wait_for(|&up| up).await.unwrap();
            tokio::join!(
                biased;
                store.append_message(&m1),
                store.append_message(&m2),
                store.append_message(&m3),
                store.append_message(&retry),
                store.mark_read(id, "b", &m3.id),
                store.append_message(&m4),
            )
        });
        held.unwrap();
        let unread = |t: &Thread| (t.unread_buyer, t.unread_seller);
        let (a1, a2, a3, dup, read, a4) = (
            a1.unwrap(),
            a2.unwrap(),
            a3.unwrap(),
            dup.unwrap(),
            read.unwrap(),
            a4.unwrap(),
        );
        assert_eq!(unread(&a1.thread), (0, 1));
        assert_eq!(unread(&a2.thread), (0, 2));
        assert_eq!(unread(&a3.thread), (1, 0), "the seller answered");
        assert!(dup.duplicate);
        assert_eq!(dup.message.id, m1.id, "the retry is the first send");
        assert_eq!(unread(&dup.thread), (1, 0), "the thread as it stands");
        assert_eq!(
            dup.thread
                .last_message
                .as_ref()
                .map(|p| p.message_id.as_str()),
            Some(m3.id.as_str())
        );
        // The read marker ran after the appends before it were written.
        assert!(read.moved);
        assert_eq!(unread(&read.thread), (0, 0));
        assert_eq!(
            read.thread
                .last_message
                .as_ref()
                .map(|p| p.message_id.as_str()),
            Some(m3.id.as_str())
        );
        assert_eq!(unread(&a4.thread), (0, 1));

        let stored = store.thread(id).await.unwrap().unwrap();
        assert_eq!(
            stored, a4.thread,
            "the row is what the last append answered"
        );
        assert_eq!(
            stored.last_message.as_ref().map(|p| p.message_id.as_str()),
            Some(m4.id.as_str())
        );
        assert_eq!(
            markers_of(&store, id).await,
            [
                ("b".to_owned(), m4.id.clone()),
                ("s".to_owned(), m3.id.clone())
            ]
        );
        let page = store
            .messages(id, &MessageRange::default(), 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 4, "the retry stored nothing");
        let inbox = store.threads_of("s", None, 10).await.unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0], stored);
    }

    /// A batch that cannot commit takes its appends' pending rows with it:
    /// the thread is as before, and the next batch starts from the table.
    #[tokio::test]
    async fn a_rolled_back_batch_leaves_its_appends_threads_unwritten() {
        let (_dir, store, thread) = store_with_thread().await;
        let id = thread.id.as_str();
        let before = store.append_message(&text(id, "b", "m0")).await.unwrap();
        let (job, running) = holding_write();
        let up = || {
            let mut running = running.clone();
            async move {
                running.wait_for(|&up| up).await.unwrap();
            }
        };
        let (held, lost, fails_late) = tokio::join!(
            store.write(job),
            async {
                up().await;
                store.append_message(&text(id, "b", "m1")).await
            },
            async {
                up().await;
                store
                    .write_unguarded(|c: &Connection| {
                        c.execute(
                            "INSERT INTO users (id, display_name, locale) VALUES ('x', 'x', 'vi')",
                            [],
                        )
                        .map_err(backend)?;
                        Err::<(), _>(StoreError::Inconsistent("after a change".into()))
                    })
                    .await
            },
        );
        held.unwrap();
        assert!(lost.is_err(), "rolled back with its batch");
        assert!(fails_late.is_err());
        assert_eq!(store.thread(id).await.unwrap().unwrap(), before.thread);
        let next = store.append_message(&text(id, "b", "m2")).await.unwrap();
        assert_eq!(
            (next.thread.unread_buyer, next.thread.unread_seller),
            (0, 2),
            "m0 and m2; m1 was rolled back"
        );
        assert_eq!(store.thread(id).await.unwrap().unwrap(), next.thread);
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = SqliteStore::open(dir.path()).unwrap();
            let spec = OpenThread {
                key: ThreadKey::Order {
                    order_id: "o1".into(),
                },
                buyer_id: "b".into(),
                seller_id: "s".into(),
            };
            let thread = store.open_thread(&spec).await.unwrap().thread;
            store
                .append_message(&text(&thread.id, "s", "c1"))
                .await
                .unwrap();
            thread.id
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        let page = store
            .messages(&id, &MessageRange::default(), 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
    }
}
