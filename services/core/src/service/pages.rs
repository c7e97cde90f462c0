//! What REST lists: the inbox and a thread's history, page by page, with
//! the other party of each thread.

use super::*;
use crate::model::{InboxCursor, MessageRange, ReadMarker, User};
use crate::presence::PresenceStatus;

/// A thread as one participant sees it: the other party and their presence.
#[derive(Debug, Clone)]
pub struct ThreadCard {
    pub thread: Thread,
    pub other: Option<User>,
    pub presence: PresenceStatus,
}

#[derive(Debug, Clone)]
pub struct InboxPage {
    pub threads: Vec<ThreadCard>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<InboxCursor>,
}

#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Oldest first, as `viewer` may see them.
    pub messages: Vec<Message>,
    /// More messages lie beyond the page, on the far side from the cursor.
    pub has_more: bool,
    pub read_markers: Vec<ReadMarker>,
}

impl ChatService {
    /// The caller's threads, most recent activity first, `limit` per page.
    pub async fn inbox_page(
        &self,
        caller: &Claims,
        cursor: Option<&InboxCursor>,
        limit: usize,
    ) -> Result<InboxPage, ServiceError> {
        let mut threads = self
            .store
            .threads_of(&caller.sub, cursor, limit + 1)
            .await?;
        let has_more = threads.len() > limit;
        threads.truncate(limit);
        let next_cursor = has_more
            .then(|| threads.last())
            .flatten()
            .map(|t| InboxCursor {
                activity_at: t.activity_at(),
                thread_id: t.id.clone(),
            });
        let mut cards = Vec::with_capacity(threads.len());
        for thread in threads {
            cards.push(self.thread_card(caller, thread).await?);
        }
        Ok(InboxPage {
            threads: cards,
            next_cursor,
        })
    }

    /// `thread` with its other party, for the caller.
    pub async fn thread_card(
        &self,
        caller: &Claims,
        thread: Thread,
    ) -> Result<ThreadCard, ServiceError> {
        let other_id = thread.other_participant(&caller.sub).to_owned();
        let other = self.store.user(&other_id).await?;
        Ok(ThreadCard {
            presence: self.presence.status(&other_id),
            other,
            thread,
        })
    }

    /// Up to `limit` messages of a thread the caller may read, within
    /// `range`, and the thread's read markers.
    pub async fn history_page(
        &self,
        caller: &Claims,
        thread_id: &str,
        range: &MessageRange,
        limit: usize,
    ) -> Result<HistoryPage, ServiceError> {
        self.readable_thread(caller, thread_id).await?;
        let (messages, markers) = tokio::join!(
            async {
                let _timer = chat_ops::metrics().store_timer("history");
                self.store.messages(thread_id, range, limit + 1).await
            },
            self.store.read_markers(thread_id)
        );
        let mut messages = messages?;
        let has_more = messages.len() > limit;
        if has_more {
            // The extra row is on the far side of the page from the cursor.
            let forward = range.after.is_some() && range.before.is_none();
            if forward {
                messages.pop();
            } else {
                messages.remove(0);
            }
        }
        Ok(HistoryPage {
            messages: messages
                .into_iter()
                .map(|m| self.present_to(Some(&caller.sub), m))
                .collect(),
            has_more,
            read_markers: markers?,
        })
    }
}
