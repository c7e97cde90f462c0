//! N chat nodes on one NATS: cross-node delivery, cluster-wide presence,
//! membership-cache invalidation. No membership, gossip or consensus of
//! our own: NATS routes, JetStream KV remembers.
//!
//! - Delivery: every server-originated publish goes to this node's
//!   subscribers (rmqtt) and to the NATS subject of its topic
//!   (`chat.deliver.<levels>`). A node subscribes to a subject only while
//!   one of its own MQTT clients subscribes to that topic (the broker
//!   reports interest), so it receives only what its clients want. The
//!   connection is `no_echo`: a node never gets its own publishes back.
//!   Core NATS is at-most-once: what a node misses while it or its link is
//!   down, its clients fetch from history when they resync (every stored
//!   message is in the store before anyone is told about it).
//! - Presence: one KV entry per (user, node) with the node's session count,
//!   refreshed while sessions live; a dead node's entries expire
//!   (`presence_ttl_secs`). Last-seen times in a second bucket. Every node
//!   also renews one key of its own every `node_ttl_secs / 3` in a third
//!   bucket: a node silent for `node_ttl_secs` is taken for dead, and its
//!   users for offline, long before their entries expire (a lease in
//!   JetStream, not a membership protocol: nobody agrees on anything).
//! - Membership: a thread whose membership changed is announced on
//!   `chat.membership`; every node drops its cached entry.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use chat_core::membership::{MembershipBroadcast, MembershipCache};
use chat_core::outbound::{Outbound, Qos, TopicInterest};
use chat_core::presence::{LocalPresence, Presence, PresenceStatus};
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::{NatsConfig, NatsError};

/// Section `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// `none` (one node; the default) or `nats` (N nodes on `nats.url`).
    pub backbone: Backbone,
    /// This node's name, unique in the cluster (default: host name + pid).
    pub node_id: Option<String>,
    /// A node's presence entries outlive it by at most this.
    pub presence_ttl_secs: u64,
    /// A node that has not renewed its lease for this long counts as dead:
    /// its users are offline (and get pushes) from then on. Renewed every
    /// third of it, so a few seconds cost a few writes per node, not per
    /// user.
    pub node_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    None,
    Nats,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backbone: Backbone::None,
            node_id: None,
            presence_ttl_secs: 30,
            node_ttl_secs: 6,
        }
    }
}

const DELIVER_PREFIX: &str = "chat.deliver";
const MEMBERSHIP_SUBJECT: &str = "chat.membership";
const PRESENCE_BUCKET: &str = "chat_presence";
const LAST_SEEN_BUCKET: &str = "chat_last_seen";
const NODES_BUCKET: &str = "chat_nodes";
const TOPIC_HEADER: &str = "Chat-Topic";
const QOS_HEADER: &str = "Chat-Qos";
const NODE_HEADER: &str = "Chat-Node";

/// One token of a NATS subject or KV key from anything: `[A-Za-z0-9_-]`
/// stay, every other byte becomes `=XX`.
pub fn token(text: &str) -> String {
    if text.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The NATS subject of an MQTT topic filter: levels become tokens, `+` and
/// `#` become `*` and `>`.
pub fn subject_for(topic_filter: &str) -> String {
    let levels: Vec<String> = topic_filter
        .split('/')
        .map(|level| match level {
            "+" => "*".to_owned(),
            "#" => ">".to_owned(),
            other => token(other),
        })
        .collect();
    format!("{DELIVER_PREFIX}.{}", levels.join("."))
}

/// The connection to NATS and the pieces built on it.
pub struct NatsBackbone {
    client: async_nats::Client,
    node: String,
    /// This node's broker: where messages from other nodes are delivered.
    local: Arc<dyn Outbound>,
    /// One NATS subscription per topic filter this node's clients follow.
    subscriptions: Mutex<HashMap<String, JoinHandle<()>>>,
    membership: RwLock<Option<Weak<MembershipCache>>>,
}

pub async fn connect_client(
    config: &NatsConfig,
    node: &str,
) -> Result<async_nats::Client, NatsError> {
    let options = async_nats::ConnectOptions::new()
        .name(format!("chatd {node}"))
        // A node delivers its own publishes locally; NATS must not echo them.
        .no_echo();
    crate::connect_with(config, options).await
}

impl NatsBackbone {
    pub async fn connect(
        config: &NatsConfig,
        node: &str,
        local: Arc<dyn Outbound>,
    ) -> Result<Arc<NatsBackbone>, NatsError> {
        let client = connect_client(config, node).await?;
        Ok(Arc::new(NatsBackbone {
            client,
            node: node.to_owned(),
            local,
            subscriptions: Mutex::new(HashMap::new()),
            membership: RwLock::new(None),
        }))
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the link to NATS is up (readiness).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Drops cached memberships when another node announces a change, and
    /// announces this node's changes.
    pub async fn follow_membership(
        self: &Arc<Self>,
        cache: &Arc<MembershipCache>,
    ) -> Result<(), NatsError> {
        *self.membership.write() = Some(Arc::downgrade(cache));
        cache.set_broadcast(self.clone());
        let mut changes = self
            .client
            .subscribe(MEMBERSHIP_SUBJECT)
            .await
            .map_err(|e| NatsError::Setup(e.to_string()))?;
        let cache = Arc::downgrade(cache);
        tokio::spawn(async move {
            while let Some(message) = changes.next().await {
                let Some(cache) = cache.upgrade() else { return };
                if let Ok(thread_id) = std::str::from_utf8(&message.payload) {
                    cache.invalidate(thread_id);
                }
            }
        });
        Ok(())
    }

    fn headers(&self, topic: &str, qos: Qos) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TOPIC_HEADER, topic);
        headers.insert(
            QOS_HEADER,
            match qos {
                Qos::AtMostOnce => "0",
                Qos::AtLeastOnce => "1",
            },
        );
        headers.insert(NODE_HEADER, self.node.as_str());
        headers
    }
}

/// Delivers to this node's subscribers, then to the other nodes'.
#[async_trait]
impl Outbound for NatsBackbone {
    async fn publish(&self, topic: String, payload: Vec<u8>, qos: Qos) {
        let subject = subject_for(&topic);
        let headers = self.headers(&topic, qos);
        self.local.publish(topic, payload.clone(), qos).await;
        self.cross(subject, headers, payload).await
    }

    /// The connection is on this node: the other nodes deliver as usual.
    async fn publish_as(&self, topic: String, payload: Vec<u8>, qos: Qos, connection: &str) {
        let subject = subject_for(&topic);
        let headers = self.headers(&topic, qos);
        self.local
            .publish_as(topic, payload.clone(), qos, connection)
            .await;
        self.cross(subject, headers, payload).await
    }
}

impl NatsBackbone {
    async fn cross(&self, subject: String, headers: HeaderMap, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            tracing::warn!(error = %e, "cross-node publish failed");
        }
    }
}

#[async_trait]
impl TopicInterest for NatsBackbone {
    async fn subscribed(&self, topic_filter: &str) {
        let subject = subject_for(topic_filter);
        let mut messages = match self.client.subscribe(subject).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, topic = topic_filter, "NATS subscribe failed");
                return;
            }
        };
        // The SUB is on the wire before the client's SUBACK.
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "NATS flush failed");
        }
        let local = self.local.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Some(headers) = message.headers.as_ref() else {
                    continue;
                };
                let Some(topic) = headers.get(TOPIC_HEADER).map(|v| v.as_str().to_owned()) else {
                    continue;
                };
                let qos = match headers.get(QOS_HEADER).map(|v| v.as_str()) {
                    Some("0") => Qos::AtMostOnce,
                    _ => Qos::AtLeastOnce,
                };
                local.publish(topic, message.payload.to_vec(), qos).await;
            }
        });
        // Dropping the old task's subscriber unsubscribes it.
        if let Some(old) = self
            .subscriptions
            .lock()
            .insert(topic_filter.to_owned(), task)
        {
            old.abort();
        }
    }

    fn unsubscribed(&self, topic_filter: &str) {
        if let Some(task) = self.subscriptions.lock().remove(topic_filter) {
            task.abort();
        }
    }
}

impl MembershipBroadcast for NatsBackbone {
    fn thread_changed(&self, thread_id: &str) {
        let client = self.client.clone();
        let thread_id = thread_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = client.publish(MEMBERSHIP_SUBJECT, thread_id.into()).await {
                tracing::warn!(error = %e, "membership announcement failed");
            }
        });
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct NodeSessions {
    sessions: usize,
    last_seen: i64,
}

#[derive(Debug, Clone, Copy)]
struct Remote {
    sessions: usize,
    last_seen: i64,
    /// When NATS stored the entry (ms): older than the TTL means its node
    /// stopped refreshing it (dead).
    written: i64,
}

#[derive(Default)]
struct Mirror {
    /// user → node → sessions there.
    nodes: HashMap<String, HashMap<String, Remote>>,
    last_seen: HashMap<String, i64>,
    /// node → when NATS stored its latest lease renewal (ms).
    leases: HashMap<String, i64>,
}

/// Whether a remote node's entry says its user is online at `now`: it has
/// sessions, the entry is fresh, and the node renewed its lease recently.
/// A node never heard from (an older version, or a lease not mirrored yet)
/// is judged by its entry alone.
fn remote_online(remote: &Remote, lease: Option<i64>, now: i64, ttls: Ttls) -> bool {
    remote.sessions > 0
        && now - remote.written < ttls.entry_ms
        && lease.is_none_or(|renewed| now - renewed < ttls.node_ms)
}

#[derive(Debug, Clone, Copy)]
struct Ttls {
    entry_ms: i64,
    node_ms: i64,
}

/// Presence over every node: this node's sessions (exact, at once) plus
/// every other node's, mirrored from the KV bucket.
pub struct NatsPresence {
    node: String,
    local: LocalPresence,
    mirror: Arc<RwLock<Mirror>>,
    writes: tokio::sync::mpsc::UnboundedSender<String>,
    ttls: Ttls,
}

fn key_parts(key: &str) -> Option<(String, String)> {
    let (user, node) = key.split_once('.')?;
    Some((untoken(user)?, untoken(node)?))
}

/// Inverse of [`token`].
pub fn untoken(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A KV bucket, created as the stream KV buckets are (`KV_<name>` on
/// `$KV.<name>.>`, one value per key) with `get_or_create_stream`: the
/// client's `create_key_value` sends settings that nats-server 2.9 (Debian
/// bookworm's) does not take.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Option<Duration>,
    replicas: usize,
) -> Result<kv::Store, NatsError> {
    let setup = |e: &dyn std::fmt::Display| NatsError::Setup(format!("bucket {name}: {e}"));
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: max_age.unwrap_or_default(),
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| setup(&e))?;
    js.get_key_value(name).await.map_err(|e| setup(&e))
}

impl NatsPresence {
    /// Creates the buckets if absent and starts mirroring them. A node
    /// without MQTT clients (a `chatd push` worker) uses it read-only.
    pub async fn start(
        client: async_nats::Client,
        node: &str,
        config: &ClusterConfig,
        replicas: usize,
    ) -> Result<Arc<NatsPresence>, NatsError> {
        let js = jetstream::new(client);
        let ttl = Duration::from_secs(config.presence_ttl_secs.max(3));
        let node_ttl = Duration::from_secs(config.node_ttl_secs.max(3));
        let setup = |e: &dyn std::fmt::Display| NatsError::Setup(e.to_string());
        let sessions = bucket(&js, PRESENCE_BUCKET, Some(ttl), replicas).await?;
        let seen = bucket(&js, LAST_SEEN_BUCKET, None, replicas).await?;
        // Kept while a dead node's user entries may still be mirrored, so
        // a node started after the death still sees the lapsed lease.
        let leases = bucket(&js, NODES_BUCKET, Some(ttl + node_ttl * 2), replicas).await?;
        let mirror = Arc::new(RwLock::new(Mirror::default()));
        let (writes, mut pending) = tokio::sync::mpsc::unbounded_channel::<String>();
        let presence = Arc::new(NatsPresence {
            node: node.to_owned(),
            local: LocalPresence::new(),
            mirror: mirror.clone(),
            writes,
            ttls: Ttls {
                entry_ms: ttl.as_millis() as i64,
                node_ms: node_ttl.as_millis() as i64,
            },
        });

        // Mirrors: the latest entry of every key, then every change.
        let mut watch = sessions
            .watch_with_history(">")
            .await
            .map_err(|e| setup(&e))?;
        let me = node.to_owned();
        let watched = mirror.clone();
        tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                let Some((user, node)) = key_parts(&entry.key) else {
                    continue;
                };
                if node == me {
                    continue;
                }
                let mut mirror = watched.write();
                match (
                    entry.operation,
                    serde_json::from_slice::<NodeSessions>(&entry.value),
                ) {
                    (kv::Operation::Put, Ok(value)) => {
                        mirror.nodes.entry(user).or_default().insert(
                            node,
                            Remote {
                                sessions: value.sessions,
                                last_seen: value.last_seen,
                                written: (entry.created.unix_timestamp_nanos() / 1_000_000) as i64,
                            },
                        );
                    }
                    _ => {
                        if let Some(nodes) = mirror.nodes.get_mut(&user) {
                            nodes.remove(&node);
                            if nodes.is_empty() {
                                mirror.nodes.remove(&user);
                            }
                        }
                    }
                }
            }
        });
        let mut watch_seen = seen.watch_with_history(">").await.map_err(|e| setup(&e))?;
        let watched = mirror.clone();
        tokio::spawn(async move {
            while let Some(entry) = watch_seen.next().await {
                let Ok(entry) = entry else { continue };
                let (Some(user), Ok(text)) =
                    (untoken(&entry.key), std::str::from_utf8(&entry.value))
                else {
                    continue;
                };
                if let Ok(at) = text.parse::<i64>() {
                    let mut mirror = watched.write();
                    let current = mirror.last_seen.entry(user).or_default();
                    *current = (*current).max(at);
                }
            }
        });

        let mut watch_leases = leases
            .watch_with_history(">")
            .await
            .map_err(|e| setup(&e))?;
        let watched = mirror.clone();
        tokio::spawn(async move {
            while let Some(entry) = watch_leases.next().await {
                let Ok(entry) = entry else { continue };
                let Some(node) = untoken(&entry.key) else {
                    continue;
                };
                let renewed = (entry.created.unix_timestamp_nanos() / 1_000_000) as i64;
                watched.write().leases.insert(node, renewed);
            }
        });
        // This node's lease. Its first renewal is in NATS before this
        // returns, so no other node takes this one's users for dead.
        let lease_key = token(node);
        leases
            .put(lease_key.clone(), Default::default())
            .await
            .map_err(|e| setup(&e))?;
        let renewer = Arc::downgrade(&presence);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(node_ttl / 3);
            loop {
                every.tick().await;
                if renewer.strong_count() == 0 {
                    return;
                }
                if let Err(e) = leases.put(lease_key.clone(), Default::default()).await {
                    tracing::warn!(error = %e, "renewing the node's lease failed");
                }
            }
        });

        // Writer: one task, so a user's updates reach NATS in order.
        let writer = Arc::downgrade(&presence);
        let (sessions_kv, seen_kv) = (sessions.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(user) = pending.recv().await {
                let Some(presence) = writer.upgrade() else {
                    return;
                };
                presence.write(&sessions_kv, &seen_kv, &user).await;
            }
        });
        // Refresher: live sessions' entries must not expire.
        let refresher = Arc::downgrade(&presence);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ttl / 3);
            loop {
                every.tick().await;
                let Some(presence) = refresher.upgrade() else {
                    return;
                };
                for (user, _) in presence.local.online_users() {
                    presence.write(&sessions, &seen, &user).await;
                }
            }
        });
        Ok(presence)
    }

    async fn write(&self, sessions: &kv::Store, seen: &kv::Store, user: &str) {
        let (count, last_seen) = self.local.sessions(user);
        let value = NodeSessions {
            sessions: count,
            last_seen: last_seen.unwrap_or_else(chat_core::now_millis),
        };
        let key = format!("{}.{}", token(user), token(&self.node));
        let body = serde_json::to_vec(&value).expect("plain struct");
        if let Err(e) = sessions.put(key, body.into()).await {
            tracing::warn!(error = %e, "presence update failed");
        }
        if count == 0
            && let Err(e) = seen
                .put(token(user), value.last_seen.to_string().into())
                .await
        {
            tracing::warn!(error = %e, "last-seen update failed");
        }
    }
}

impl Presence for NatsPresence {
    fn local_client_ids(&self, user_id: &str) -> Vec<String> {
        self.local.local_client_ids(user_id)
    }

    fn session_started(&self, user_id: &str, session: &str) {
        self.local.session_started(user_id, session);
        let _ = self.writes.send(user_id.to_owned());
    }

    fn session_ended(&self, user_id: &str, session: &str) {
        self.local.session_ended(user_id, session);
        let _ = self.writes.send(user_id.to_owned());
    }

    fn status(&self, user_id: &str) -> PresenceStatus {
        let local = self.local.status(user_id);
        if local.online {
            return local;
        }
        let now = chat_core::now_millis();
        let mirror = self.mirror.read();
        let leases = &mirror.leases;
        let mut last_seen = local.last_seen;
        let mut seen = |at: i64| last_seen = Some(last_seen.map_or(at, |l: i64| l.max(at)));
        if let Some(at) = mirror.last_seen.get(user_id) {
            seen(*at);
        }
        for (node, remote) in mirror.nodes.get(user_id).into_iter().flatten() {
            let lease = leases.get(node).copied();
            if remote_online(remote, lease, now, self.ttls) {
                return PresenceStatus {
                    online: true,
                    last_seen: Some(now),
                };
            }
            // A dead node's users were last seen when it was last heard
            // from (its entry or its lease, the later).
            seen(if remote.sessions > 0 {
                lease.map_or(remote.written, |renewed| renewed.max(remote.written))
            } else {
                remote.last_seen
            });
        }
        PresenceStatus {
            online: false,
            last_seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_tokens_and_wildcards() {
        assert_eq!(subject_for("user/buyer-1"), "chat.deliver.user.buyer-1");
        assert_eq!(subject_for("thread/01a2-x"), "chat.deliver.thread.01a2-x");
        assert_eq!(
            subject_for("user/a.b c*>"),
            "chat.deliver.user.a=2Eb=20c=2A=3E"
        );
        assert_eq!(subject_for("thread/+"), "chat.deliver.thread.*");
        assert_eq!(subject_for("bench/#"), "chat.deliver.bench.>");
        assert_eq!(subject_for("a//b"), "chat.deliver.a.=.b");
    }

    #[test]
    fn a_node_without_a_fresh_lease_has_no_one_online() {
        let ttls = Ttls {
            entry_ms: 30_000,
            node_ms: 6_000,
        };
        let now = 1_000_000;
        let entry = Remote {
            sessions: 1,
            last_seen: now - 50_000,
            written: now - 10_000,
        };
        assert!(remote_online(&entry, Some(now - 1_000), now, ttls));
        assert!(
            !remote_online(&entry, Some(now - 7_000), now, ttls),
            "lease lapsed: dead node, though the entry is fresh"
        );
        assert!(
            remote_online(&entry, None, now, ttls),
            "no lease known: the entry decides"
        );
        let stale = Remote {
            written: now - 31_000,
            ..entry
        };
        assert!(!remote_online(&stale, Some(now), now, ttls));
        let gone = Remote {
            sessions: 0,
            ..entry
        };
        assert!(!remote_online(&gone, Some(now), now, ttls));
    }

    #[test]
    fn tokens_round_trip() {
        for text in ["buyer-1", "a.b", "Nguyễn Văn An", "=", "", "x=41"] {
            assert_eq!(untoken(&token(text)).as_deref(), Some(text), "{text}");
        }
        assert_eq!(
            key_parts("u=2E1.node-2"),
            Some(("u.1".into(), "node-2".into()))
        );
        assert_eq!(untoken("=4"), None);
    }
}
