//! Who is online. A user is online while any of their devices holds an
//! MQTT session; `last_seen` is when their last session ended (or now,
//! while online). The broker reports sessions; the push service asks.
//!
//! Behind a trait because a scaled deployment has several broker nodes:
//! the in-process implementation here is right for one node; a shared one
//! (over the bus) replaces it without touching the callers.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceStatus {
    pub online: bool,
    /// Milliseconds since the epoch; `None` for a user never seen.
    pub last_seen: Option<i64>,
}

pub trait Presence: Send + Sync + 'static {
    /// A session began. `session` identifies it uniquely (client id plus
    /// creation time), because a reconnect with the same client id can
    /// report the new session before the old one has ended.
    fn session_started(&self, user_id: &str, session: &str);
    fn session_ended(&self, user_id: &str, session: &str);
    fn status(&self, user_id: &str) -> PresenceStatus;
    /// Client ids of the user's live sessions on this node (a cap on
    /// connections per user counts them; a take-over by the same client id
    /// does not add one).
    fn local_client_ids(&self, user_id: &str) -> Vec<String>;
}

/// The client id part of a session key (`<client id>@<created>`).
fn client_id_of_session(session: &str) -> &str {
    session.rsplit_once('@').map_or(session, |(id, _)| id)
}

#[derive(Default)]
struct UserSessions {
    sessions: HashSet<String>,
    last_seen: i64,
}

/// Presence of the sessions on this process's broker.
#[derive(Default)]
pub struct LocalPresence {
    users: Mutex<HashMap<String, UserSessions>>,
}

impl LocalPresence {
    pub fn new() -> Self {
        LocalPresence::default()
    }

    /// Live sessions of a user on this node, and when they were last seen.
    pub fn sessions(&self, user_id: &str) -> (usize, Option<i64>) {
        self.users
            .lock()
            .get(user_id)
            .map_or((0, None), |u| (u.sessions.len(), Some(u.last_seen)))
    }

    /// Users with at least one live session on this node.
    pub fn online_users(&self) -> Vec<(String, usize)> {
        self.users
            .lock()
            .iter()
            .filter(|(_, u)| !u.sessions.is_empty())
            .map(|(id, u)| (id.clone(), u.sessions.len()))
            .collect()
    }
}

impl Presence for LocalPresence {
    fn local_client_ids(&self, user_id: &str) -> Vec<String> {
        self.users.lock().get(user_id).map_or_else(Vec::new, |u| {
            let mut ids: Vec<String> = u
                .sessions
                .iter()
                .map(|s| client_id_of_session(s).to_owned())
                .collect();
            ids.sort();
            ids.dedup();
            ids
        })
    }

    fn session_started(&self, user_id: &str, session: &str) {
        let mut users = self.users.lock();
        let entry = users.entry(user_id.to_owned()).or_default();
        entry.sessions.insert(session.to_owned());
        entry.last_seen = crate::now_millis();
    }

    fn session_ended(&self, user_id: &str, session: &str) {
        let mut users = self.users.lock();
        if let Some(entry) = users.get_mut(user_id) {
            entry.sessions.remove(session);
            entry.last_seen = crate::now_millis();
        }
    }

    fn status(&self, user_id: &str) -> PresenceStatus {
        let users = self.users.lock();
        match users.get(user_id) {
            Some(entry) if !entry.sessions.is_empty() => PresenceStatus {
                online: true,
                last_seen: Some(crate::now_millis()),
            },
            Some(entry) => PresenceStatus {
                online: false,
                last_seen: Some(entry.last_seen),
            },
            None => PresenceStatus {
                online: false,
                last_seen: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_of_live_sessions_count_a_takeover_once() {
        let presence = LocalPresence::new();
        presence.session_started("u", "u:phone@1");
        presence.session_started("u", "u:phone@2");
        presence.session_started("u", "u:web@1");
        assert_eq!(presence.local_client_ids("u"), ["u:phone", "u:web"]);
        presence.session_ended("u", "u:web@1");
        assert_eq!(presence.local_client_ids("u"), ["u:phone"]);
        assert!(presence.local_client_ids("nobody").is_empty());
    }

    #[test]
    fn online_while_any_session_lives_even_across_a_takeover() {
        let presence = LocalPresence::new();
        assert_eq!(presence.status("u").last_seen, None);
        presence.session_started("u", "u:phone@1");
        presence.session_started("u", "u:web@1");
        presence.session_ended("u", "u:phone@1");
        assert!(presence.status("u").online, "the web session still lives");
        // The phone reconnects with the same client id; the broker reports
        // the new session before the old one's end.
        presence.session_started("u", "u:phone@2");
        presence.session_ended("u", "u:web@1");
        presence.session_ended("u", "u:phone@1");
        assert!(presence.status("u").online);
        presence.session_ended("u", "u:phone@2");
        let status = presence.status("u");
        assert!(!status.online);
        assert!(status.last_seen.is_some());
        assert!(!presence.status("other").online);
    }
}
