//! rmqtt hook handlers: authentication, ACL, hand-off to the chat service.

use std::collections::HashSet;
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
        }
    }

    fn is_service(&self, client_id: &str) -> bool {
        self.service_clients.lock().contains(client_id)
    }

    /// Hands an allowed inbound publish to the persistence workers.
    async fn hand_to_workers(&self, user_id: &str, thread_id: &str, payload: &[u8]) {
        use chat_core::outbound::Outbound;
        self.handover
            .publish(
                format!("{PERSIST_PREFIX}{thread_id}/{user_id}"),
                payload.to_vec(),
                chat_core::outbound::Qos::AtLeastOnce,
            )
            .await;
    }

    fn is_loadtest(&self, client_id: &str) -> bool {
        self.loadtest_clients.lock().contains(client_id)
    }

    fn authenticate(&self, info: &ConnectInfo) -> AuthResult {
        let client_id = info.client_id().to_string();
        let addr = info.id().remote_addr;
        let token = info
            .password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let metrics = chat_ops::metrics();
        if self.drain.is_draining() {
            // The CONNACK code becomes "use another server" (ClientConnack).
            tracing::info!(client_id, ?addr, "connect refused: draining");
            metrics.connect_refused("draining");
            return AuthResult::NotAuthorized;
        }
        // Refusals are logged and audited a few a minute per address; a
        // flood of them is counted in metrics only.
        let record = || {
            self.service
                .rate_limiter()
                .record_refused_connect(addr.map(|a| a.ip()))
        };
        if let Some(addr) = addr
            && !self.service.rate_limiter().allow_connect(addr.ip())
        {
            if record() {
                tracing::info!(
                    client_id,
                    ?addr,
                    "connect refused: too many attempts from this address"
                );
            }
            metrics.connect_refused("rate_limited");
            return AuthResult::NotAuthorized;
        }
        let claims = match self.verifier.verify(&token) {
            Ok(claims) => claims,
            Err(e) => {
                metrics.connect_refused("bad_token");
                if !record() {
                    return AuthResult::BadUsernameOrPassword;
                }
                tracing::info!(client_id, ?addr, reason = %e, "connect refused: bad token");
                let service = self.service.clone();
                let actor = match addr {
                    Some(addr) => format!("ip:{}", addr.ip()),
                    None => "ip:unknown".to_owned(),
                };
                let detail = format!("client id {client_id}: {e}");
                tokio::spawn(async move {
                    service
                        .audit(chat_core::model::AuditEntry::new(
                            &actor,
                            "login_refused",
                            "mqtt",
                            detail,
                        ))
                        .await;
                });
                return AuthResult::BadUsernameOrPassword;
            }
        };
        // rmqtt publishes a will without any ACL check, so a will could put
        // a forged event on another user's topic. Presence comes from the
        // connect/disconnect hooks instead; wills are refused outright.
        if info.last_will().is_some() {
            record().then(|| tracing::info!(client_id, user_id = %claims.sub, ?addr, "connect refused: will messages are not supported"));
            metrics.connect_refused("not_allowed");
            return AuthResult::NotAuthorized;
        }
        if !client_id_belongs_to(&client_id, &claims.sub) {
            record().then(|| tracing::info!(client_id, user_id = %claims.sub, ?addr, "connect refused: client id of another user"));
            metrics.connect_refused("not_allowed");
            return AuthResult::NotAuthorized;
        }
        let cap = self.service.limits().max_connections_per_user;
        if cap > 0 && claims.role != Role::Loadtest && claims.role != Role::Service {
            let live = self.service.presence().local_client_ids(&claims.sub);
            if live.len() >= cap && !live.contains(&client_id) {
                if record() {
                    tracing::info!(client_id, user_id = %claims.sub, ?addr, live = live.len(), "connect refused: too many connections for this user");
                }
                metrics.connect_refused("too_many_connections");
                return AuthResult::NotAuthorized;
            }
        }
        if claims.role == Role::Loadtest {
            if !self.allow_loadtest {
                if record() {
                    tracing::info!(
                        client_id,
                        ?addr,
                        "connect refused: loadtest role is disabled"
                    );
                }
                metrics.connect_refused("not_allowed");
                return AuthResult::NotAuthorized;
            }
            self.loadtest_clients.lock().insert(client_id.clone());
        } else {
            self.loadtest_clients.lock().remove(&client_id);
        }
        if claims.role == Role::Service {
            self.service_clients.lock().insert(client_id.clone());
        } else {
            self.service_clients.lock().remove(&client_id);
        }
        tracing::info!(client_id, user_id = %claims.sub, role = ?claims.role, ?addr, "connect authenticated");
        let auth_info = AuthInfo {
            superuser: false,
            // The same leeway as the verifier, or a token accepted inside
            // the leeway would be cut off at once.
            expire_at: Some(Duration::from_secs(
                claims.exp.max(0) as u64 + self.verifier.leeway_secs(),
            )),
            rules: Vec::new(),
        };
        AuthResult::Allow(false, Some(auth_info))
    }

    /// Closes the session when its token expires, unless it already ended
    /// or was replaced by a newer connection with the same client id.
    fn schedule_expiry(&self, session: &Session) {
        let Some(expire_at) = session.auth_info.as_ref().and_then(|a| a.expire_at) else {
            return;
        };
        let now = Duration::from_millis(chat_core::now_millis().max(0) as u64);
        let wait = expire_at.saturating_sub(now);
        let scx = self.scx.clone();
        let id = session.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let entry = scx.extends.shared().await.entry(id.clone());
            let Some(current) = entry.session() else {
                return;
            };
            if current.id.create_time != id.create_time {
                return;
            }
            if let Some(tx) = entry.tx() {
                tracing::info!(client_id = %id.client_id, "token expired: disconnecting");
                // MQTT 5: DISCONNECT 0x87 "token expired", so the client
                // refreshes its token instead of retrying the old one.
                let reason = crate::drain::disconnect_reason(DisconnectReasonCode::NotAuthorized);
                let _ = tx.unbounded_send(Message::Closed(reason));
            }
        });
    }

    /// A refused publish to `topic`, logged with the topic cut short.
    async fn refuse_topic(
        &self,
        user_id: &str,
        client_id: &str,
        topic: &str,
        code: ErrorCode,
    ) -> AfterInbound {
        self.service
            .refuse_topic(user_id, client_id, topic, code)
            .await
    }

    /// Closes `session`: MQTT 5 clients get `DISCONNECT` with `code` first.
    fn disconnect(&self, session: &Session, code: DisconnectReasonCode) {
        let scx = self.scx.clone();
        let id = session.id.clone();
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
            Topic::User(id) => id == user_id,
            Topic::Thread(id) => self.is_member(id, user_id).await == Ok(true),
            Topic::ThreadInbound(_) | Topic::Other => false,
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
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => {
                (false, Some(HookResult::AuthResult(self.authenticate(info))))
            }
            // A CONNECT refused while draining: tell the client to go
            // elsewhere rather than that it is not authorised (reaches here
            // through the vendored rmqtt patch).
            Parameter::ClientConnack(_, code) if !code.success() && self.drain.is_draining() => {
                let code = match code {
                    ConnectAckReason::V5(_) => {
                        ConnectAckReason::V5(ConnectAckReasonV5::UseAnotherServer)
                    }
                    ConnectAckReason::V3(_) => {
                        ConnectAckReason::V3(ConnectAckReasonV3::ServiceUnavailable)
                    }
                };
                (false, Some(HookResult::ConnectAckReason(code)))
            }
            Parameter::ClientConnected(session) => {
                tracing::info!(client_id = %session.id.client_id, addr = ?session.id.remote_addr, "client connected");
                self.schedule_expiry(session);
                self.service.presence().session_started(
                    user_of_client_id(&session.id.client_id),
                    &session_key(session),
                );
                (true, acc)
            }
            Parameter::ClientDisconnected(session, reason) => {
                tracing::info!(client_id = %session.id.client_id, %reason, "client disconnected");
                self.service.presence().session_ended(
                    user_of_client_id(&session.id.client_id),
                    &session_key(session),
                );
                (true, acc)
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let user_id = user_of_client_id(&session.id.client_id);
                let filter = subscribe.topic_filter.to_string();
                let group = subscribe.opts.shared_group().map(|g| g.to_string());
                let allowed = if self.is_service(&session.id.client_id) {
                    // Workers share the hand-over topic; nothing else.
                    filter == PERSIST_FILTER && group.as_deref() == Some(PERSIST_GROUP)
                } else if group.is_some() {
                    // A user in a shared group could take deliveries meant
                    // for others in it.
                    false
                } else if self.is_loadtest(&session.id.client_id) {
                    filter.starts_with(LOADTEST_PREFIX)
                } else {
                    self.may_subscribe(user_id, &filter).await
                };
                let result = if allowed {
                    SubscribeAclResult::new_success(subscribe.opts.qos(), None)
                } else {
                    // Counted like refused publishes: a flood of them is
                    // not logged, then closes the connection.
                    match self.service.rate_limiter().refusal(&session.id.client_id) {
                        Refusal::Tell => {
                            let shown = chat_core::service::truncated(&filter, 128);
                            tracing::info!(user_id, filter = ?shown, "subscribe refused");
                        }
                        Refusal::Quiet => {}
                        Refusal::Disconnect => {
                            self.disconnect(session, DisconnectReasonCode::MessageRateTooHigh)
                        }
                    }
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                // Counted until the PUBACK can go: a drain waits for it.
                let _sending = self.drain.begin_send();
                let user_id = user_of_client_id(&session.id.client_id).to_owned();
                let topic = publish.topic.to_string();
                if self.is_loadtest(&session.id.client_id) {
                    // Plain pub/sub, no chat processing, confined to bench/.
                    let result = if topic.starts_with(LOADTEST_PREFIX) {
                        PublishAclResult::allow()
                    } else {
                        PublishAclResult::rejected(false, None)
                    };
                    return (false, Some(HookResult::PublishAclResult(result)));
                }
                if self.is_service(&session.id.client_id) {
                    // A worker publishes processed events to their topics.
                    let result = match topics::parse(&topic) {
                        Topic::Thread(_) | Topic::User(_) => PublishAclResult::allow(),
                        _ => PublishAclResult::rejected(false, None),
                    };
                    return (false, Some(HookResult::PublishAclResult(result)));
                }
                let client_id = session.id.client_id.to_string();
                // Allowed: a member's publish, answered by the chat service
                // (its PUBACK is success even when the answer is a refusal:
                // the refusal is the ack or error event). Rejected: others.
                let mut allowed = false;
                let after = match topics::parse(&topic) {
                    Topic::ThreadInbound(thread_id) => {
                        match self.is_member(thread_id, &user_id).await {
                            Ok(true) => match self.inbound {
                                Inbound::InProcess => {
                                    allowed = true;
                                    self.service
                                        .handle_inbound(
                                            &user_id,
                                            Some(&client_id),
                                            thread_id,
                                            &publish.payload,
                                        )
                                        .await
                                }
                                Inbound::Workers => {
                                    allowed = true;
                                    // The budgets are the gateway's: it
                                    // holds the connection. Whatever does
                                    // not decode is the worker's to refuse.
                                    let within =
                                        match chat_protocol::decode_client(&publish.payload) {
                                            Ok(event) => {
                                                self.service
                                                    .within_budget(
                                                        &user_id, &client_id, thread_id, &event,
                                                    )
                                                    .await
                                            }
                                            Err(_) => Ok(()),
                                        };
                                    match within {
                                        Ok(()) => {
                                            self.hand_to_workers(
                                                &user_id,
                                                thread_id,
                                                &publish.payload,
                                            )
                                            .await;
                                            AfterInbound::Keep
                                        }
                                        Err(after) => after,
                                    }
                                }
                            },
                            Ok(false) => {
                                self.refuse_topic(
                                    &user_id,
                                    &client_id,
                                    &topic,
                                    ErrorCode::Forbidden,
                                )
                                .await
                            }
                            Err(code) => {
                                // Retry later: a send gets its ack.
                                let send = chat_protocol::send_reference(&publish.payload);
                                self.service
                                    .refuse(
                                        &user_id,
                                        Some(&client_id),
                                        thread_id,
                                        code,
                                        send,
                                        None,
                                        None,
                                    )
                                    .await
                            }
                        }
                    }
                    _ => {
                        self.refuse_topic(&user_id, &client_id, &topic, ErrorCode::Forbidden)
                            .await
                    }
                };
                if after == AfterInbound::Disconnect {
                    self.disconnect(session, DisconnectReasonCode::MessageRateTooHigh);
                }
                let result = if allowed {
                    PublishAclResult::allow()
                } else {
                    PublishAclResult::rejected(false, None)
                };
                (false, Some(HookResult::PublishAclResult(result)))
            }
            _ => (true, acc),
        }
    }
}
