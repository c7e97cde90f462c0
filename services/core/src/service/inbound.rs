//! Publishes from MQTT clients: decode, budget, dispatch, and the answers to refused ones.

use super::*;

impl ChatService {
    /// A v1 publish to `thread/<id>/in`: [`ChatService::handle_command`]
    /// answered in v1.
    pub async fn handle_inbound(
        &self,
        user_id: &str,
        connection: Option<&str>,
        thread_id: &str,
        payload: &[u8],
    ) -> AfterInbound {
        self.handle_command(user_id, connection, thread_id, payload, Reply::V1)
            .await
            .after
    }

    /// One publish of a participant to one of their threads (v1
    /// `thread/<id>/in`, v2 `t/<id>`), already allowed by the broker's
    /// ACL. The caller has checked membership; every outcome, good or bad,
    /// is answered as `reply` says. `connection` is the MQTT client id it
    /// came on (`None` from a persistence worker): sends, typing and
    /// receipts each spend their own budget of it, and refusals beyond its
    /// refusal budget go unanswered, then close it.
    pub async fn handle_command(
        &self,
        user_id: &str,
        connection: Option<&str>,
        thread_id: &str,
        payload: &[u8],
        reply: Reply,
    ) -> Handled {
        let reference_of = |payload: &[u8]| match reply {
            Reply::V1 => chat_protocol::send_reference(payload),
            Reply::V2 | Reply::Puback => chat_protocol::v2::send_reference(payload),
        };
        if reply.is_v1() && !self.v1 {
            let send = reference_of(payload);
            return self
                .refuse(
                    user_id,
                    connection,
                    thread_id,
                    ErrorCode::UnsupportedVersion,
                    send,
                    None,
                    None,
                    reply,
                )
                .await;
        }
        if payload.len() > self.limits.max_payload_bytes {
            tracing::debug!(
                user_id,
                thread_id,
                size = payload.len(),
                "inbound too large"
            );
            let send = reference_of(payload);
            return self
                .refuse(
                    user_id,
                    connection,
                    thread_id,
                    ErrorCode::TooLarge,
                    send,
                    None,
                    None,
                    reply,
                )
                .await;
        }
        let decoded = match reply {
            Reply::V1 => chat_protocol::decode_client(payload),
            Reply::V2 | Reply::Puback => chat_protocol::v2::decode_command(payload),
        };
        let event = match decoded {
            Ok(event) => event,
            Err(e) => {
                // Its detail may quote the payload: not at info.
                tracing::debug!(user_id, thread_id, error = ?e, "inbound does not decode");
                let send = reference_of(payload);
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
                        reply,
                    )
                    .await;
            }
        };
        if let Some(connection) = connection
            && let Err(refused) = self
                .within_budget_for(user_id, connection, thread_id, &event, reply)
                .await
        {
            return refused;
        }
        let puback = match event {
            ClientEvent::SendMessage {
                client_msg_id,
                kind,
                content,
            } => {
                let metrics = chat_ops::metrics();
                let received = Instant::now();
                let answer = match self
                    .send_message_via(
                        user_id,
                        thread_id,
                        &client_msg_id,
                        kind,
                        content,
                        reply,
                        connection,
                    )
                    .await
                {
                    Ok(appended) => {
                        if !appended.duplicate {
                            metrics.messages_in.inc();
                        }
                        (reply == Reply::Puback).then(|| PubackAnswer::Stored {
                            id: appended.message.id.clone(),
                            created_at: appended.message.created_at,
                        })
                    }
                    Err(e) => {
                        tracing::info!(user_id, thread_id, client_msg_id, error = %e, "send refused");
                        self.answer_refusal(
                            user_id,
                            thread_id,
                            e.code(),
                            Some(client_msg_id),
                            None,
                            None,
                            e.retry_after_ms(),
                            reply,
                        )
                        .await
                    }
                };
                metrics
                    .ack_latency
                    .observe(received.elapsed().as_secs_f64());
                answer
            }
            ClientEvent::MarkRead { up_to } => {
                match self
                    .mark_read_via(user_id, thread_id, &up_to, connection)
                    .await
                {
                    Ok(_) => None,
                    Err(e) => {
                        tracing::info!(user_id, thread_id, error = %e, "mark_read refused");
                        let topic = self.inbound_topic(thread_id, reply);
                        self.answer_refusal(
                            user_id,
                            thread_id,
                            e.code(),
                            None,
                            topic,
                            Some(if reply.is_v1() { "mark_read" } else { "read" }.into()),
                            None,
                            reply,
                        )
                        .await
                    }
                }
            }
            ClientEvent::Typing { active } => {
                self.typing(user_id, thread_id, active).await;
                None
            }
        };
        Handled::keep(puback)
    }

    /// The topic a publish into `thread_id` came on (empty: none).
    fn inbound_topic(&self, thread_id: &str, reply: Reply) -> Option<String> {
        if thread_id.is_empty() {
            None
        } else if reply.is_v1() {
            Some(topics::thread_inbound(thread_id))
        } else {
            Some(chat_protocol::v2::thread(thread_id))
        }
    }

    /// Spends `event`'s budget of `connection`: sends and read receipts
    /// have one each (typing has the user's, in [`ChatService::typing`]).
    /// Over it, the event is refused here: a send with its ack (v1).
    pub async fn within_budget(
        &self,
        user_id: &str,
        connection: &str,
        thread_id: &str,
        event: &ClientEvent,
    ) -> Result<(), AfterInbound> {
        self.within_budget_for(user_id, connection, thread_id, event, Reply::V1)
            .await
            .map_err(|h| h.after)
    }

    /// [`ChatService::within_budget`], answered as `reply` says.
    pub async fn within_budget_for(
        &self,
        user_id: &str,
        connection: &str,
        thread_id: &str,
        event: &ClientEvent,
        reply: Reply,
    ) -> Result<(), Handled> {
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
                reply,
            )
            .await)
    }

    /// Refuses a publish of `user_id` into `thread_id` (or, with an empty
    /// thread id, to a topic that is no thread's): a decodable send
    /// (`send` = its key) gets a failed ack its outbox can settle,
    /// anything else an `error`, in the protocol `reply` names. Within the
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
        reply: Reply,
    ) -> Handled {
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
                // A PUBACK still refuses, without the words.
                return Handled::keep((reply == Reply::Puback).then(|| PubackAnswer::Refused {
                    code,
                    message: String::new(),
                    retry_after_ms,
                }));
            }
            Refusal::Disconnect => {
                chat_ops::metrics().publish_refused(code.as_str());
                tracing::info!(
                    user_id,
                    connection,
                    "disconnecting: too many refused publishes"
                );
                return AfterInbound::Disconnect.into();
            }
        }
        let topic = self.inbound_topic(thread_id, reply);
        let puback = self
            .answer_refusal(
                user_id,
                thread_id,
                code,
                send,
                topic,
                reference,
                retry_after_ms,
                reply,
            )
            .await;
        Handled::keep(puback)
    }

    /// A publish to a topic no user may publish to, or a thread the user
    /// is not in: an `error` naming the topic (cut to 128 bytes), within
    /// the connection's refusal budget, in the protocol `reply` names.
    pub async fn refuse_topic(
        &self,
        user_id: &str,
        connection: &str,
        topic: &str,
        code: ErrorCode,
        reply: Reply,
    ) -> Handled {
        match self.limiter.refusal(connection) {
            Refusal::Tell => {
                let topic = truncated(topic, MAX_ECHOED_TOPIC).to_owned();
                tracing::info!(user_id, connection, topic = ?topic, code = code.as_str(), "publish refused");
                let puback = self
                    .answer_refusal(user_id, "", code, None, Some(topic), None, None, reply)
                    .await;
                Handled::keep(puback)
            }
            Refusal::Quiet => {
                chat_ops::metrics().publish_refused(code.as_str());
                Handled::keep((reply == Reply::Puback).then(|| PubackAnswer::Refused {
                    code,
                    message: String::new(),
                    retry_after_ms: None,
                }))
            }
            Refusal::Disconnect => {
                chat_ops::metrics().publish_refused(code.as_str());
                tracing::info!(
                    user_id,
                    connection,
                    "disconnecting: too many refused publishes"
                );
                AfterInbound::Disconnect.into()
            }
        }
    }

    /// Sets aside a hand-over that the server failed on (a persistence
    /// worker crashed on it, or panicked): recorded in the audit log as
    /// `persist_dead_letter`, and its sender told with a failed ack
    /// (`internal`) when the payload names a send, so that the outbox
    /// settles instead of resending the poison forever. `why` is ours
    /// (never message text).
    pub async fn dead_letter(
        &self,
        user_id: &str,
        thread_id: &str,
        payload: &[u8],
        why: &str,
        reply: Reply,
    ) {
        let reference = match reply {
            Reply::V1 => chat_protocol::send_reference(payload),
            Reply::V2 | Reply::Puback => chat_protocol::v2::send_reference(payload),
        };
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
            self.answer_refusal(
                user_id,
                thread_id,
                ErrorCode::Internal,
                Some(client_msg_id),
                None,
                None,
                None,
                reply,
            )
            .await;
        }
    }
}
