//! The embedded MQTT broker: rmqtt as a library, with our hooks.
//!
//! - `ClientAuthenticate`: the CONNECT password is a JWT; the client id must
//!   be `<sub>` or `<sub>:<device>`. Refusals get a CONNACK reason code.
//! - `ClientConnected`: a timer disconnects the session when its token
//!   expires.
//! - `ClientSubscribeCheckAcl`: only `user/<own id>` and `thread/<id>` of
//!   the user's threads, exact topics, no wildcards.
//! - `MessagePublishCheckAcl`: only `thread/<id>/in` of the user's threads.
//!   An allowed publish is handed to the chat service and processed
//!   (stored, acked, delivered) before the broker answers the PUBLISH, so a
//!   PUBACK means "durably handled". A refused one also gets an `error`
//!   event on `user/<id>`, so even MQTT 3.1.1 clients (whose PUBACK cannot
//!   carry a reason) learn why.
//!
//! Nobody may subscribe to `thread/<id>/in`, so the broker's own routing of
//! the raw publish reaches no one: only the service's processed events do.

mod drain;
mod hooks;
mod interest;
mod outbound;
mod shared;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use chat_core::auth::TokenVerifier;
use chat_core::outbound::Outbound;
use chat_core::service::ChatService;
use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use serde::{Deserialize, Serialize};

pub use drain::BrokerHandle;
pub use hooks::{Inbound, PERSIST_FILTER, PERSIST_GROUP, PERSIST_PREFIX};
pub use outbound::BrokerOutbound;

/// Broker settings (section `[mqtt]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// MQTT over TCP.
    pub tcp_addr: SocketAddr,
    /// MQTT over WebSocket (any path; clients use `/mqtt`).
    pub ws_addr: SocketAddr,
    /// Largest MQTT packet accepted; bigger ones close the connection.
    pub max_packet_size: u32,
    pub max_connections: usize,
    /// Messages queued per offline persistent session.
    pub max_mqueue_len: usize,
    /// Bytes (payload and topic, plus 128 per message) queued per session;
    /// past either bound the oldest queued message makes room (it stays in
    /// history: a resumed client fetches what it missed over REST).
    pub max_mqueue_bytes: usize,
    pub max_inflight: u16,
    /// rmqtt's CPU/load check refuses CONNECTs when the machine is busy.
    /// On small machines it trips under load tests; off by default.
    pub busy_check: bool,
    /// Accept `loadtest` tokens: plain pub/sub under `bench/`, for generic
    /// MQTT benchmark tools. Off by default.
    pub allow_loadtest: bool,
    /// Longest session expiry a client may ask for (MQTT 5 Session Expiry
    /// Interval; "never" is cut to this): an offline session holds up to
    /// `max_mqueue_len` messages until it expires.
    pub max_session_expiry_secs: u64,
    /// Speak protocol v1 beside v2 (`docs/protocol.md`): v1 topics
    /// (`thread/<id>`, `thread/<id>/in`, `user/<id>`) and v1 events are
    /// published for every message. `false`: v2 only; a v1 publish is
    /// answered `unsupported_version`, a v1 subscription refused.
    pub protocol_v1: bool,
}

/// Longest client id accepted (`<user id>[:<device>]`); longer ones are
/// refused with "identifier rejected" before authentication, so no log line
/// or audit row ever carries more than this of it.
pub const MAX_CLIENT_ID_LEN: usize = 128;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            tcp_addr: "0.0.0.0:1883".parse().expect("literal address"),
            ws_addr: "0.0.0.0:8083".parse().expect("literal address"),
            max_packet_size: 256 * 1024,
            max_connections: 100_000,
            max_mqueue_len: 1000,
            max_mqueue_bytes: 1 << 20,
            max_inflight: 32,
            busy_check: false,
            allow_loadtest: false,
            max_session_expiry_secs: 2 * 86_400,
            protocol_v1: false,
        }
    }
}

/// The broker's server context, built before the chat service so that the
/// service can publish through it.
pub struct Broker {
    scx: ServerContext,
    config: BrokerConfig,
}

impl Broker {
    pub async fn new(config: BrokerConfig) -> Self {
        // Process-wide in rmqtt (PATCHED.md §7): one broker per process.
        rmqtt::queue::set_session_queue_max_bytes(config.max_mqueue_bytes);
        let scx = ServerContext::new()
            .busy_check_enable(config.busy_check)
            .build()
            .await;
        Broker { scx, config }
    }

    /// What the chat service publishes through: this node's subscribers.
    pub fn outbound(&self) -> Arc<dyn Outbound> {
        Arc::new(BrokerOutbound::new(self.scx.clone()))
    }

    /// Reports this node's subscriptions to a cluster backbone (call
    /// before `start`, before any client subscribes).
    pub async fn report_interest(&self, interest: Arc<dyn chat_core::outbound::TopicInterest>) {
        *self.scx.extends.router_mut().await =
            Box::new(interest::InterestRouter::new(self.scx.clone(), interest));
    }

    /// Registers the hooks, binds both listeners and serves in the
    /// background. Returns once the sockets are bound, with the handle
    /// that reports readiness and drains (`drain.rs`).
    pub async fn start(
        self,
        verifier: Arc<TokenVerifier>,
        service: Arc<ChatService>,
        inbound: Inbound,
    ) -> anyhow::Result<BrokerHandle> {
        let drain = Arc::new(drain::DrainState::default());
        let handler = hooks::ChatHooks::new(
            self.scx.clone(),
            verifier,
            service,
            self.config.allow_loadtest,
            inbound,
            drain.clone(),
        );
        *self.scx.extends.shared_subscription_mut().await = Box::new(shared::ThreadAffinity);
        let register = self.scx.extends.hook_mgr().register();
        for typ in [
            Type::ClientAuthenticate,
            Type::ClientConnack,
            Type::ClientConnected,
            Type::ClientDisconnected,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
        ] {
            register.add(typ, Box::new(handler.clone())).await;
        }
        register.start().await;

        let listener = |name: &str, addr: SocketAddr| {
            Builder::new()
                .name(name)
                .laddr(addr)
                .allow_anonymous(false)
                // A restarted node must rebind at once, despite TIME_WAIT sockets.
                .reuseaddr(Some(true))
                .nodelay(true)
                .max_packet_size(self.config.max_packet_size)
                .max_connections(self.config.max_connections)
                .max_mqueue_len(self.config.max_mqueue_len)
                .max_inflight(NonZeroU16::new(self.config.max_inflight.max(1)).expect("max(1)"))
                .max_clientid_len(MAX_CLIENT_ID_LEN)
                .max_session_expiry_interval(std::time::Duration::from_secs(
                    self.config.max_session_expiry_secs.max(1),
                ))
                .bind()
        };
        let tcp = listener("tcp", self.config.tcp_addr)?.tcp()?;
        let ws = listener("ws", self.config.ws_addr)?.ws()?;
        tracing::info!(tcp = %self.config.tcp_addr, ws = %self.config.ws_addr, "mqtt listeners bound");
        let server = MqttServer::new(self.scx.clone())
            .listener(tcp)
            .listener(ws)
            .build();
        Ok(BrokerHandle::serve(self.scx.clone(), drain, server))
    }
}
