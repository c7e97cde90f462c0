//! Publishes from MQTT clients: decode, budget, dispatch, and the answers to refused ones.

use super::*;

impl ChatService {
    /// Handles a payload a participant published to `thread/<id>/in`. The
    /// caller has checked membership; every outcome, good or bad, is told
    /// to the sender on `user/<id>`.
    /// One publish to `thread/<id>/in`, already allowed by the broker's ACL.
    /// `connection` is the MQTT client id it came on (`None` from a
    /// persistence worker): sends, typing and receipts each spend their own
    /// budget of it, and refusals beyond its refusal budget go unanswered,
    /// then close it.
    pub async fn handle_inbound(
        &self,
        user_id: &str,
        connection: Option<&str>,
        thread_id: &str,
        payload: &[u8],
    ) -> AfterInbound {
        let topic = topics::thread_inbound(thread_id);
        if payload.len() > self.limits.max_payload_bytes {
            tracing::debug!(
                user_id,
                thread_id,
                size = payload.len(),
                "inbound too large"
            );
            let send = chat_protocol::send_reference(payload);
            return self
                .refuse(
                    user_id,
                    connection,
                    thread_id,
                    ErrorCode::TooLarge,
                    send,
                    None,
                    None,
                )
                .await;
        }
        let event = match chat_protocol::decode_client(payload) {
            Ok(event) => event,
            Err(e) => {
                // Its detail may quote the payload: not at info.
                tracing::debug!(user_id, thread_id, error = ?e, "inbound does not decode");
                let send = chat_protocol::send_reference(payload);
                let reference = match &e {
                    DecodeError::UnknownEvent(name)
                    | DecodeError::InvalidField { event: name, .. } => {
                        Some(truncated(name, 32).to_owned())
                    }
                    _ => None,
                };
                return self
                    .refuse(
                        user_id,
                        connection,
                        thread_id,
                        e.code(),
                        send,
                        reference,
                        None,
                    )
                    .await;
            }
        };
        if let Some(connection) = connection
            && let Err(after) = self
                .within_budget(user_id, connection, thread_id, &event)
                .await
        {
            return after;
        }
        match event {
            ClientEvent::SendMessage {
                client_msg_id,
                kind,
                content,
            } => {
                let metrics = chat_ops::metrics();
                let received = Instant::now();
                match self
                    .send_message(user_id, thread_id, &client_msg_id, kind, content)
                    .await
                {
                    Ok(appended) => {
                        if !appended.duplicate {
                            metrics.messages_in.inc();
                        }
                    }
                    Err(e) => {
                        tracing::info!(user_id, thread_id, client_msg_id, error = %e, "send refused");
                        metrics.publish_refused(e.code().as_str());
                        self.send_failed(
                            user_id,
                            thread_id,
                            client_msg_id,
                            e.code(),
                            e.retry_after_ms(),
                        )
                        .await;
                    }
                }
                metrics
                    .ack_latency
                    .observe(received.elapsed().as_secs_f64());
            }
            ClientEvent::MarkRead { up_to } => {
                if let Err(e) = self.mark_read(user_id, thread_id, &up_to).await {
                    tracing::info!(user_id, thread_id, error = %e, "mark_read refused");
                    self.send_error(user_id, e.code(), Some(topic), Some("mark_read".into()))
                        .await;
                }
            }
            ClientEvent::Typing { active } => self.typing(user_id, thread_id, active).await,
        }
        AfterInbound::Keep
    }

    /// Spends `event`'s budget of `connection`: sends and read receipts
    /// have one each (typing has the user's, in [`ChatService::typing`]).
    /// Over it, the event is refused here: a send with its ack.
    pub async fn within_budget(
        &self,
        user_id: &str,
        connection: &str,
        thread_id: &str,
        event: &ClientEvent,
    ) -> Result<(), AfterInbound> {
        let (limited, send, reference) = match event {
            ClientEvent::SendMessage { client_msg_id, .. } => {
                match self.limiter.check_connection(user_id, connection) {
                    Ok(()) => return Ok(()),
                    Err(limited) => (limited, Some(client_msg_id.clone()), None),
                }
            }
            ClientEvent::MarkRead { .. } => match self.limiter.check_receipt(connection) {
                Ok(()) => return Ok(()),
                Err(limited) => (limited, None, Some("mark_read".to_owned())),
            },
            ClientEvent::Typing { .. } => return Ok(()),
        };
        tracing::info!(
            user_id,
            connection,
            ?limited,
            "publish limited on its connection"
        );
        let code = match limited {
            Limited::RateLimited(_) => ErrorCode::RateLimited,
            Limited::Muted(_) => ErrorCode::Muted,
        };
        let retry = Some(limited.retry_after().as_millis() as u64);
        Err(self
            .refuse(
                user_id,
                Some(connection),
                thread_id,
                code,
                send,
                reference,
                retry,
            )
            .await)
    }

    /// Refuses a publish of `user_id` into `thread_id` (or, with an empty
    /// thread id, to a topic that is no thread's): a decodable send
    /// (`send` = its `client_msg_id`) gets a failed `message_sent_ack` its
    /// outbox can settle, anything else an `error` event. Within the
    /// connection's refusal budget only; beyond it nothing is answered.
    #[allow(clippy::too_many_arguments)]
    pub async fn refuse(
        &self,
        user_id: &str,
        connection: Option<&str>,
        thread_id: &str,
        code: ErrorCode,
        send: Option<String>,
        reference: Option<String>,
        retry_after_ms: Option<u64>,
    ) -> AfterInbound {
        let verdict = connection.map_or(Refusal::Tell, |c| self.limiter.refusal(c));
        match verdict {
            Refusal::Tell => {
                tracing::info!(
                    user_id,
                    connection,
                    thread_id,
                    code = code.as_str(),
                    "publish refused"
                );
            }
            Refusal::Quiet => {
                chat_ops::metrics().publish_refused(code.as_str());
                return AfterInbound::Keep;
            }
            Refusal::Disconnect => {
                chat_ops::metrics().publish_refused(code.as_str());
                tracing::info!(
                    user_id,
                    connection,
                    "disconnecting: too many refused publishes"
                );
                return AfterInbound::Disconnect;
            }
        }
        match send {
            Some(client_msg_id) => {
                chat_ops::metrics().publish_refused(code.as_str());
                self.send_failed(user_id, thread_id, client_msg_id, code, retry_after_ms)
                    .await
            }
            None => {
                let topic = if thread_id.is_empty() {
                    None
                } else {
                    Some(topics::thread_inbound(thread_id))
                };
                self.send_error_retry(user_id, code, topic, reference, retry_after_ms)
                    .await
            }
        }
        AfterInbound::Keep
    }

    /// A publish to a topic no user may publish to, or a thread the user
    /// is not in: an `error` naming the topic (cut to 128 bytes), within
    /// the connection's refusal budget.
    pub async fn refuse_topic(
        &self,
        user_id: &str,
        connection: &str,
        topic: &str,
        code: ErrorCode,
    ) -> AfterInbound {
        match self.limiter.refusal(connection) {
            Refusal::Tell => {
                let topic = truncated(topic, MAX_ECHOED_TOPIC).to_owned();
                tracing::info!(user_id, connection, topic = ?topic, code = code.as_str(), "publish refused");
                self.send_error(user_id, code, Some(topic), None).await;
                AfterInbound::Keep
            }
            Refusal::Quiet => {
                chat_ops::metrics().publish_refused(code.as_str());
                AfterInbound::Keep
            }
            Refusal::Disconnect => {
                chat_ops::metrics().publish_refused(code.as_str());
                tracing::info!(
                    user_id,
                    connection,
                    "disconnecting: too many refused publishes"
                );
                AfterInbound::Disconnect
            }
        }
    }

    /// The failed `message_sent_ack` of a send: nothing was stored.
    pub(super) async fn send_failed(
        &self,
        user_id: &str,
        thread_id: &str,
        client_msg_id: String,
        code: ErrorCode,
        retry_after_ms: Option<u64>,
    ) {
        let lang = self.lang_of(user_id).await;
        let ack = ServerEvent::MessageSentAck {
            client_msg_id,
            thread_id: thread_id.to_owned(),
            message_id: None,
            created_at: None,
            error: Some(ErrorBody {
                code,
                message: error_text(code, lang).to_owned(),
                retry_after_ms,
            }),
        };
        self.emit_to_user(user_id, &ack).await;
    }

    /// Sets aside a hand-over that the server failed on (a persistence
    /// worker crashed on it, or panicked): recorded in the audit log as
    /// `persist_dead_letter`, and its sender told with a failed ack
    /// (`internal`) when the payload names a send, so that the outbox
    /// settles instead of resending the poison forever. `why` is ours
    /// (never message text).
    pub async fn dead_letter(&self, user_id: &str, thread_id: &str, payload: &[u8], why: &str) {
        let reference = chat_protocol::send_reference(payload);
        tracing::error!(
            user_id,
            thread_id,
            size = payload.len(),
            why,
            "hand-over set aside"
        );
        self.audit(AuditEntry::new(
            "system",
            "persist_dead_letter",
            thread_id,
            format!(
                "from {user_id}, {} bytes, client_msg_id {}: {why}",
                payload.len(),
                reference.as_deref().unwrap_or("-")
            ),
        ))
        .await;
        if let Some(client_msg_id) = reference {
            self.send_failed(user_id, thread_id, client_msg_id, ErrorCode::Internal, None)
                .await;
        }
    }

    /// Tells a user that something they published was refused.
    pub async fn send_error(
        &self,
        user_id: &str,
        code: ErrorCode,
        topic: Option<String>,
        reference: Option<String>,
    ) {
        self.send_error_retry(user_id, code, topic, reference, None)
            .await
    }

    /// [`ChatService::send_error`] with when to try again.
    pub async fn send_error_retry(
        &self,
        user_id: &str,
        code: ErrorCode,
        topic: Option<String>,
        reference: Option<String>,
        retry_after_ms: Option<u64>,
    ) {
        chat_ops::metrics().publish_refused(code.as_str());
        let lang = self.lang_of(user_id).await;
        let event = ServerEvent::Error {
            error: ErrorBody {
                code,
                message: error_text(code, lang).to_owned(),
                retry_after_ms,
            },
            topic,
            reference,
        };
        self.emit_to_user(user_id, &event).await;
    }
}
