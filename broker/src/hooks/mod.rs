//! rmqtt hook handlers: authentication, ACL, hand-off to the chat service.
//! `Handler::hook` dispatches each hook to one method: CONNECT and the
//! session's life in `connect.rs`, SUBSCRIBE in `subscribe.rs`, PUBLISH in
//! `publish.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::auth::{Role, TokenVerifier, client_id_belongs_to, user_of_client_id};
use chat_core::ratelimit::Refusal;
use chat_core::service::{AfterInbound, ChatService};
use chat_protocol::ErrorCode;
use chat_protocol::topics::{self, Topic};
use parking_lot::Mutex;
use rmqtt::acl::AuthInfo;
use rmqtt::codec::v3::ConnectAckReason as ConnectAckReasonV3;
use rmqtt::codec::v5::{
    ConnectAckReason as ConnectAckReasonV5, DisconnectReasonCode, SubscribeAckReason,
};
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectAckReason, ConnectInfo, Message, PublishAclResult, SubscribeAclResult,
};

use crate::drain::DrainState;

mod connect;
mod publish;
mod subscribe;

/// Topic prefix a `loadtest` session is confined to.
const LOADTEST_PREFIX: &str = "bench/";

/// Where a gateway hands an inbound chat publish to the persistence
/// workers: `svc/persist/<thread id>/<sender id>`. Only the broker itself
/// publishes here (users cannot: their publishes are confined to
/// `thread/<id>/in`), so the sender segment is trustworthy.
pub const PERSIST_PREFIX: &str = "svc/persist/";
/// The one subscription a `service` session may hold.
pub const PERSIST_GROUP: &str = "persist";
pub const PERSIST_FILTER: &str = "svc/persist/#";

/// What the gateway does with an allowed inbound chat publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Process it here, before the PUBACK (one process, the default).
    InProcess,
    /// Hand it to the persistence workers (`chatd persist`) through the
    /// shared subscription `$share/persist/svc/persist/#`.
    Workers,
}

/// One MQTT session: a reconnect reuses the client id, not the time.
fn session_key(session: &Session) -> String {
    format!("{}@{}", session.id.client_id, session.id.create_time)
}

/// [`session_key`] without formatting a string: every publish looks up
/// its session's pipeline.
type PipelineKey = (rmqtt::types::ClientId, rmqtt::types::TimestampMillis);

fn pipeline_key(session: &Session) -> PipelineKey {
    (session.id.client_id.clone(), session.id.create_time)
}

#[derive(Clone)]
pub struct ChatHooks {
    scx: ServerContext,
    verifier: Arc<TokenVerifier>,
    service: Arc<ChatService>,
    allow_loadtest: bool,
    inbound: Inbound,
    handover: Arc<crate::outbound::BrokerOutbound>,
    /// Client ids whose current session holds a `loadtest` token.
    loadtest_clients: Arc<Mutex<HashSet<String>>>,
    /// Client ids whose current session holds a `service` token.
    service_clients: Arc<Mutex<HashSet<String>>>,
    /// Draining (refuse CONNECTs) and the publishes being processed.
    drain: Arc<DrainState>,
    /// Per session: where its next pipelined send follows its last one
    /// (`chat_core::pipeline`). An entry lives as long as its session.
    pipelines: Arc<Mutex<HashMap<PipelineKey, chat_core::pipeline::Link>>>,
}

impl ChatHooks {
    pub fn new(
        scx: ServerContext,
        verifier: Arc<TokenVerifier>,
        service: Arc<ChatService>,
        allow_loadtest: bool,
        inbound: Inbound,
        drain: Arc<DrainState>,
    ) -> Self {
        ChatHooks {
            drain,
            handover: Arc::new(crate::outbound::BrokerOutbound::new(scx.clone())),
            scx,
            verifier,
            service,
            allow_loadtest,
            inbound,
            loadtest_clients: Arc::default(),
            service_clients: Arc::default(),
            pipelines: Arc::default(),
        }
    }

    fn is_service(&self, client_id: &str) -> bool {
        self.service_clients.lock().contains(client_id)
    }

    fn is_loadtest(&self, client_id: &str) -> bool {
        self.loadtest_clients.lock().contains(client_id)
    }

    /// Closes `session`: MQTT 5 clients get `DISCONNECT` with `code` first.
    fn disconnect(&self, session: &Session, code: DisconnectReasonCode) {
        self.disconnect_id(session.id.clone(), code);
    }

    fn disconnect_id(&self, id: rmqtt::types::Id, code: DisconnectReasonCode) {
        let scx = self.scx.clone();
        tokio::spawn(async move {
            let entry = scx.extends.shared().await.entry(id.clone());
            if let Some(tx) = entry.tx() {
                tracing::info!(client_id = %id.client_id, ?code, "disconnecting");
                let _ = tx.unbounded_send(Message::Closed(crate::drain::disconnect_reason(code)));
            }
        });
    }

    async fn may_subscribe(&self, user_id: &str, filter: &str) -> bool {
        match topics::parse(filter) {
            Topic::Inbox(id) => id == user_id,
            // Open without v1 too: where a v1 client is told it is gone.
            Topic::User(id) => id == user_id,
            Topic::Thread(id) => {
                self.service.speaks_v1() && self.is_member(id, user_id).await == Ok(true)
            }
            Topic::ThreadInbound(_) | Topic::Commands(_) | Topic::Other => false,
        }
    }

    /// Fails closed: when the store cannot answer, nothing is allowed, and
    /// the client is told to retry rather than "forbidden".
    async fn is_member(&self, thread_id: &str, user_id: &str) -> Result<bool, ErrorCode> {
        self.service
            .membership()
            .is_member(thread_id, user_id)
            .await
            .map_err(|e| {
                tracing::warn!(thread_id, user_id, error = %e, "membership check failed");
                ErrorCode::Unavailable
            })
    }
}

#[async_trait]
impl Handler for ChatHooks {
    /// One method per hook, in `connect.rs`, `subscribe.rs` and `publish.rs`.
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => {
                (false, Some(HookResult::AuthResult(self.authenticate(info))))
            }
            Parameter::ClientConnack(_, code) if !code.success() && self.drain.is_draining() => (
                false,
                Some(HookResult::ConnectAckReason(Self::refused_while_draining(
                    code,
                ))),
            ),
            Parameter::ClientConnected(session) => {
                self.connected(session);
                (true, acc)
            }
            Parameter::ClientDisconnected(session, reason) => {
                self.disconnected(session, reason);
                (true, acc)
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let result = self.check_subscribe(session, subscribe).await;
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let result = self.check_publish(session, publish).await;
                (false, Some(HookResult::PublishAclResult(result)))
            }
            _ => (true, acc),
        }
    }
}
