//! CONNECT and the life of a session: authentication, the CONNACK of a
//! refusal while draining, presence, and the token's expiry.

use super::*;

impl ChatHooks {
    pub(super) fn authenticate(&self, info: &ConnectInfo) -> AuthResult {
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
    pub(super) fn schedule_expiry(&self, session: &Session) {
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

    /// A CONNECT refused while draining: the client is told to go elsewhere
    /// rather than that it is not authorised (reaches here through the
    /// vendored rmqtt patch).
    pub(super) fn refused_while_draining(code: &ConnectAckReason) -> ConnectAckReason {
        match code {
            ConnectAckReason::V5(_) => ConnectAckReason::V5(ConnectAckReasonV5::UseAnotherServer),
            ConnectAckReason::V3(_) => ConnectAckReason::V3(ConnectAckReasonV3::ServiceUnavailable),
        }
    }

    pub(super) fn connected(&self, session: &Session) {
        tracing::info!(client_id = %session.id.client_id, addr = ?session.id.remote_addr, "client connected");
        self.schedule_expiry(session);
        self.service.presence().session_started(
            user_of_client_id(&session.id.client_id),
            &session_key(session),
        );
    }

    pub(super) fn disconnected(&self, session: &Session, reason: &rmqtt::types::Reason) {
        tracing::info!(client_id = %session.id.client_id, %reason, "client disconnected");
        self.pipelines.lock().remove(&pipeline_key(session));
        let key = session_key(session);
        self.service
            .presence()
            .session_ended(user_of_client_id(&session.id.client_id), &key);
    }
}
