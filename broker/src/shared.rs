//! Shared subscriptions with thread affinity, for the persistence workers.
//!
//! rmqtt leaves the choice of a group member to the embedder. Ours hashes
//! the thread segment of `svc/persist/<thread>/<sender>` over the group's
//! online members (sorted by client id, so every node agrees): one thread's
//! messages go to one worker, in order, and threads spread over workers.
//! When a worker leaves, its threads move to the others.

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};

pub struct ThreadAffinity;

/// FNV-1a: stable across processes and versions, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The part of the topic that must stick to one member: the thread id of
/// a hand-over topic, else the whole topic.
fn affinity_key(topic: &str) -> &str {
    topic
        .strip_prefix(crate::hooks::PERSIST_PREFIX)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(topic)
}

/// Index into `members` (client ids with their online flag) for `topic`.
pub fn choose(topic: &str, members: &[(&str, bool)]) -> Option<usize> {
    let mut online: Vec<(usize, &str)> = members
        .iter()
        .enumerate()
        .filter(|(_, (_, online))| *online)
        .map(|(i, (id, _))| (i, *id))
        .collect();
    if online.is_empty() {
        // Nobody online: queue for a member (its persistent session).
        return if members.is_empty() {
            None
        } else {
            Some(fnv1a(affinity_key(topic).as_bytes()) as usize % members.len())
        };
    }
    online.sort_by(|a, b| a.1.cmp(b.1));
    let pick = fnv1a(affinity_key(topic).as_bytes()) as usize % online.len();
    Some(online[pick].0)
}

type Member = (
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
);

#[async_trait]
impl SharedSubscription for ThreadAffinity {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher: &Id,
        topic: &TopicName,
        members: &[Member],
    ) -> Option<(usize, IsOnline)> {
        let flags: Vec<(&str, bool)> = members
            .iter()
            .map(|(_, client_id, _, _, online)| (&**client_id, online.unwrap_or(true)))
            .collect();
        let index = choose(topic, &flags)?;
        Some((index, flags[index].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_sticks_to_one_online_member() {
        let members = [
            ("persist:b", true),
            ("persist:a", true),
            ("persist:c", false),
        ];
        let first = choose("svc/persist/t1/u1", &members).unwrap();
        for sender in ["u2", "u3", "u4"] {
            assert_eq!(
                choose(&format!("svc/persist/t1/{sender}"), &members),
                Some(first)
            );
        }
        assert_ne!(
            first, 2,
            "offline members get nothing while others are online"
        );
        // Threads spread over both online members.
        let picks: std::collections::HashSet<_> = (0..32)
            .map(|i| choose(&format!("svc/persist/t{i}/u"), &members).unwrap())
            .collect();
        assert_eq!(picks.len(), 2);
        // Member order as given does not matter.
        let reordered = [
            ("persist:a", true),
            ("persist:b", true),
            ("persist:c", false),
        ];
        let again = choose("svc/persist/t1/u1", &reordered).unwrap();
        assert_eq!(reordered[again].0, members[first].0);
        assert_eq!(choose("svc/persist/t1/u1", &[]), None);
    }
}
