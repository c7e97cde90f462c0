//! Who belongs to which thread, cached in front of the store.
//!
//! Every SUBSCRIBE and PUBLISH asks this; the answer for an existing thread
//! is kept until invalidated, and a miss ("no such thread") is kept for a
//! short time only, so a thread created right after is seen quickly even on
//! a node that did not create it. The node that creates a thread
//! invalidates at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::store::{ChatStore, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participants {
    pub buyer_id: String,
    pub seller_id: String,
}

impl Participants {
    pub fn contains(&self, user_id: &str) -> bool {
        self.buyer_id == user_id || self.seller_id == user_id
    }

    /// The participant who is not `user_id` (as `Thread::other_participant`).
    pub fn other_than(&self, user_id: &str) -> &str {
        if self.buyer_id == user_id {
            &self.seller_id
        } else {
            &self.buyer_id
        }
    }
}

enum Entry {
    Known(Arc<Participants>),
    Missing { until: Instant },
}

/// Tells the other nodes that a thread's membership changed (a cluster
/// backbone implements it); they drop what they cached.
pub trait MembershipBroadcast: Send + Sync + 'static {
    fn thread_changed(&self, thread_id: &str);
}

pub struct MembershipCache {
    store: Arc<dyn ChatStore>,
    broadcast: RwLock<Option<Arc<dyn MembershipBroadcast>>>,
    entries: RwLock<HashMap<String, Entry>>,
    negative_ttl: Duration,
    capacity: usize,
}

impl MembershipCache {
    pub fn new(store: Arc<dyn ChatStore>) -> Self {
        MembershipCache {
            store,
            broadcast: RwLock::new(None),
            entries: RwLock::new(HashMap::new()),
            negative_ttl: Duration::from_secs(2),
            capacity: 200_000,
        }
    }

    /// Participants of a thread, or `None` when it does not exist.
    pub async fn participants(&self, thread_id: &str) -> StoreResult<Option<Arc<Participants>>> {
        match self.entries.read().get(thread_id) {
            Some(Entry::Known(p)) => return Ok(Some(p.clone())),
            Some(Entry::Missing { until }) if *until > Instant::now() => return Ok(None),
            _ => {}
        }
        let found = self
            .store
            .participants(thread_id)
            .await?
            .map(|(buyer_id, seller_id)| {
                Arc::new(Participants {
                    buyer_id,
                    seller_id,
                })
            });
        let mut entries = self.entries.write();
        if entries.len() >= self.capacity {
            // Crude but bounded: start over rather than grow without limit.
            entries.clear();
        }
        let entry = match &found {
            Some(p) => Entry::Known(p.clone()),
            None => Entry::Missing {
                until: Instant::now() + self.negative_ttl,
            },
        };
        entries.insert(thread_id.to_owned(), entry);
        Ok(found)
    }

    pub async fn is_member(&self, thread_id: &str, user_id: &str) -> StoreResult<bool> {
        Ok(self
            .participants(thread_id)
            .await?
            .is_some_and(|p| p.contains(user_id)))
    }

    /// Forgets what is known about a thread, on this node only (what the
    /// backbone calls when another node says it changed).
    pub fn invalidate(&self, thread_id: &str) {
        self.entries.write().remove(thread_id);
    }

    /// A thread's membership changed here (creation today, group
    /// membership later): forget it on this node and on every other.
    pub fn changed(&self, thread_id: &str) {
        self.invalidate(thread_id);
        if let Some(broadcast) = self.broadcast.read().as_ref() {
            broadcast.thread_changed(thread_id);
        }
    }

    /// Where changes are announced to the other nodes.
    pub fn set_broadcast(&self, broadcast: Arc<dyn MembershipBroadcast>) {
        *self.broadcast.write() = Some(broadcast);
    }
}
