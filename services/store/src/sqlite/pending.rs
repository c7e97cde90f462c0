//! What the appends of one write batch change in their threads' rows and
//! their senders' read markers, kept in memory and written once per thread
//! when the batch ends.
//!
//! An append inserts its message (three B-trees), then updates its thread:
//! the row, and both inbox indexes, because `activity_at` moves. In a busy
//! thread a group commit holds several messages of it (`burst`: about five
//! per thread in a batch of ~490), and every one of them rewrote the same
//! row and index entries and read the row back first. Here the first
//! append of a thread in a batch reads its row, the later ones use and
//! change the copy, and the row is written once, before the commit or
//! before any other kind of write runs (which may read or write threads
//! itself). What is written is what the last of the per-message updates
//! would have left, so readers see the same rows after the commit.

use std::collections::HashMap;

use chat_core::model::Thread;
use chat_core::store::StoreResult;
use chat_protocol::MessagePreview;
use rusqlite::{Connection, OptionalExtension, params};

use super::{backend, thread_without_preview};

/// A thread as its batch's appends have left it.
pub(crate) struct PendingThread {
    /// What an append answers with, once [`PendingThread::answer`] has
    /// parsed `last_message` (most appends set their own preview, so the
    /// stored one is parsed only for an older message or a retry).
    pub thread: Thread,
    /// The stored preview (JSON), written back as it is.
    pub preview: Option<String>,
    /// `thread.last_message` is `preview`, parsed.
    pub parsed: bool,
    pub last_id: Option<String>,
    pub activity_at: i64,
    /// Changed since it was read: written at the flush.
    pub dirty: bool,
}

/// The batch's pending thread rows and read markers.
#[derive(Default)]
pub(crate) struct Pending {
    threads: HashMap<String, PendingThread>,
    /// (thread, user) → (up_to, read_at): the newest marker an append set.
    markers: HashMap<(String, String), (String, i64)>,
}

impl Pending {
    /// The thread `id` as this batch sees it, read from the database on
    /// its first use in the batch; `None` when there is no such thread.
    pub fn thread(&mut self, tx: &Connection, id: &str) -> StoreResult<Option<&mut PendingThread>> {
        if !self.threads.contains_key(id) {
            let Some(loaded) = read_thread(tx, id)? else {
                return Ok(None);
            };
            self.threads.insert(id.to_owned(), loaded);
        }
        Ok(self.threads.get_mut(id))
    }

    /// The thread `id` if an append of this batch has it, as it stands.
    pub fn cached(&mut self, id: &str) -> Option<&Thread> {
        self.threads.get_mut(id).map(PendingThread::answer)
    }

    /// `user` has read `thread` up to `up_to` (a message id; ids sort in
    /// time order): kept if newer than what this batch already has.
    pub fn mark_read(&mut self, thread: &str, user: &str, up_to: &str, read_at: i64) {
        match self.markers.get_mut(&(thread.to_owned(), user.to_owned())) {
            Some(marker) if marker.0.as_str() >= up_to => {}
            Some(marker) => *marker = (up_to.to_owned(), read_at),
            None => {
                self.markers.insert(
                    (thread.to_owned(), user.to_owned()),
                    (up_to.to_owned(), read_at),
                );
            }
        }
    }

    /// Writes what changed and forgets everything. On an error the batch
    /// must not commit: some of its appends' updates are missing.
    pub fn flush(&mut self, tx: &Connection) -> StoreResult<()> {
        let threads = std::mem::take(&mut self.threads);
        let markers = std::mem::take(&mut self.markers);
        for (id, t) in threads {
            if !t.dirty {
                continue;
            }
            tx.prepare_cached(
                "UPDATE threads SET last_message = ?2, last_message_at = ?3, activity_at = ?4, \
                 last_message_id = ?5, unread_buyer = ?6, unread_seller = ?7, product_id = ?8, \
                 updated_at = ?9 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    t.preview,
                    t.thread.last_message_at,
                    t.activity_at,
                    t.last_id,
                    t.thread.unread_buyer,
                    t.thread.unread_seller,
                    t.thread.product_id,
                    t.thread.updated_at
                ])
            })
            .map_err(backend)?;
        }
        for ((thread, user), (up_to, read_at)) in markers {
            // Answering a thread means having read it; a marker only moves
            // forward.
            tx.prepare_cached(
                "INSERT INTO read_markers (thread_id, user_id, up_to, read_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (thread_id, user_id) DO UPDATE SET up_to = excluded.up_to, \
                 read_at = excluded.read_at WHERE excluded.up_to > read_markers.up_to",
            )
            .and_then(|mut stmt| stmt.execute(params![thread, user, up_to, read_at]))
            .map_err(backend)?;
        }
        Ok(())
    }
}

impl PendingThread {
    /// The thread with its last message.
    pub fn answer(&mut self) -> &Thread {
        if !self.parsed {
            self.thread.last_message = self
                .preview
                .as_deref()
                .and_then(|p| serde_json::from_str::<MessagePreview>(p).ok());
            self.parsed = true;
        }
        &self.thread
    }
}

fn read_thread(tx: &Connection, id: &str) -> StoreResult<Option<PendingThread>> {
    tx.prepare_cached(concat!(
        "SELECT ",
        thread_columns!(),
        ", last_message_id, activity_at FROM threads WHERE id = ?1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([id], |row| {
            Ok(PendingThread {
                thread: thread_without_preview(row)?,
                preview: row.get(5)?,
                parsed: false,
                last_id: row.get(11)?,
                activity_at: row.get(12)?,
                dirty: false,
            })
        })
        .optional()
    })
    .map_err(backend)
}
