//! PUBLISH: the topic is parsed once; a person's publish to one of their
//! threads is handed to the chat service (here, before the PUBACK, or to
//! the persistence workers), everything else is refused.

use super::*;
use chat_core::service::{Handled, PubackAnswer, Reply};
use chat_protocol::v2::puback;

impl ChatHooks {
    pub(super) async fn check_publish(
        &self,
        session: &Session,
        publish: &rmqtt::types::Publish,
    ) -> PublishAclResult {
        // Counted until the PUBACK can go: a drain waits for it.
        let sending = self.drain.begin_send();
        let client_id = session.id.client_id.to_string();
        let topic_name = publish.topic.to_string();
        let topic = topics::parse(&topic_name);
        if self.is_loadtest(&client_id) {
            // Plain pub/sub, no chat processing, confined to bench/.
            return if topic_name.starts_with(LOADTEST_PREFIX) {
                PublishAclResult::allow()
            } else {
                PublishAclResult::rejected(false, None)
            };
        }
        if self.is_service(&client_id) {
            // A worker publishes processed events to their topics.
            return match topic {
                Topic::Thread(_) | Topic::User(_) | Topic::Inbox(_) => PublishAclResult::allow(),
                _ => PublishAclResult::rejected(false, None),
            };
        }
        let user_id = user_of_client_id(&client_id).to_owned();
        // v2 over MQTT 5 at QoS 1, handled here: the PUBACK answers.
        let v5 = session.protocol().await.is_ok_and(|p| p == 5);
        let acked = publish.qos != rmqtt::codec::types::QoS::AtMostOnce;
        let v2_reply = if v5 && acked && self.inbound == Inbound::InProcess {
            Reply::Puback
        } else {
            Reply::V2
        };
        if v2_reply == Reply::Puback
            && publish.qos == rmqtt::codec::types::QoS::AtLeastOnce
            && let Topic::Commands(thread_id) = topic
        {
            return self
                .pipelined(session, user_id, client_id, thread_id, publish, sending)
                .await;
        }
        let handled = match topic {
            Topic::ThreadInbound(thread_id) => {
                self.inbound(&user_id, &client_id, thread_id, &publish.payload, Reply::V1)
                    .await
            }
            Topic::Commands(thread_id) => {
                self.inbound(&user_id, &client_id, thread_id, &publish.payload, v2_reply)
                    .await
            }
            _ => {
                // Answered in the protocol the topic looks like.
                let reply = if self.service.speaks_v1() && !looks_v2(&topic_name) {
                    Reply::V1
                } else {
                    v2_reply
                };
                self.service
                    .refuse_topic(
                        &user_id,
                        &client_id,
                        &topic_name,
                        ErrorCode::Forbidden,
                        reply,
                    )
                    .await
            }
        };
        if handled.after == AfterInbound::Disconnect {
            self.disconnect(session, DisconnectReasonCode::MessageRateTooHigh);
        }
        acl_result(handled)
    }

    /// A command answered by its PUBACK, on its own task
    /// (`chat_core::pipeline`): returns once its message's write is queued,
    /// and the session reads the next publish while this one commits; the
    /// broker sends the PUBACKs in order (`vendor/rmqtt/PATCHED.md` §10).
    async fn pipelined(
        &self,
        session: &Session,
        user_id: String,
        client_id: String,
        thread_id: &str,
        publish: &rmqtt::types::Publish,
        sending: crate::drain::SendGuard,
    ) -> PublishAclResult {
        let hooks = self.clone();
        let session_id = session.id.clone();
        let thread_id = thread_id.to_owned();
        let payload = publish.payload.clone();
        let send = async move {
            let handled = hooks
                .inbound(&user_id, &client_id, &thread_id, &payload, Reply::Puback)
                .await;
            if handled.after == AfterInbound::Disconnect {
                hooks.disconnect_id(session_id, DisconnectReasonCode::MessageRateTooHigh);
            }
            // The guard goes with the answer: a drain waits until the
            // session has it.
            (acl_result(handled).0, sending)
        };
        let spawned = {
            let mut pipelines = self.pipelines.lock();
            let key = pipeline_key(session);
            let (link, spawned) = chat_core::pipeline::spawn(pipelines.remove(&key), send);
            pipelines.insert(key, link);
            spawned
        };
        let outcome = spawned.queued().await;
        PublishAclResult(rmqtt::types::PublishResult {
            handled: true,
            deferred: Some(rmqtt::types::DeferredAck::new(async move {
                match outcome.await {
                    Ok((result, _sending)) => result,
                    // The send's task panicked (and logged it).
                    Err(_) => rmqtt::types::PublishResult {
                        reason_code: refusal_reason(ErrorCode::Internal),
                        properties: vec![(
                            puback::CODE.into(),
                            ErrorCode::Internal.as_str().into(),
                        )],
                        ..Default::default()
                    },
                }
            })),
            ..Default::default()
        })
    }

    /// A person's publish to one of their threads: membership, then the
    /// chat service here or the hand-over to the workers.
    async fn inbound(
        &self,
        user_id: &str,
        client_id: &str,
        thread_id: &str,
        payload: &[u8],
        reply: Reply,
    ) -> Handled {
        let topic = if reply.is_v1() {
            topics::thread_inbound(thread_id)
        } else {
            chat_protocol::v2::thread(thread_id)
        };
        match self.is_member(thread_id, user_id).await {
            Ok(true) => {}
            Ok(false) => {
                return self
                    .service
                    .refuse_topic(user_id, client_id, &topic, ErrorCode::Forbidden, reply)
                    .await;
            }
            Err(code) => {
                // Retry later: a send gets its ack.
                let send = if reply.is_v1() {
                    chat_protocol::send_reference(payload)
                } else {
                    chat_protocol::v2::send_reference(payload)
                };
                return self
                    .service
                    .refuse(
                        user_id,
                        Some(client_id),
                        thread_id,
                        code,
                        send,
                        None,
                        None,
                        reply,
                    )
                    .await;
            }
        }
        match self.inbound {
            Inbound::InProcess => {
                self.service
                    .handle_command(user_id, Some(client_id), thread_id, payload, reply)
                    .await
            }
            Inbound::Workers => {
                // The budgets are the gateway's: it holds the connection.
                // Whatever does not decode is the worker's to refuse.
                let decoded = if reply.is_v1() {
                    chat_protocol::decode_client(payload)
                } else {
                    chat_protocol::v2::decode_command(payload)
                };
                let within = match decoded {
                    Ok(event) => {
                        self.service
                            .within_budget_for(user_id, client_id, thread_id, &event, reply)
                            .await
                    }
                    Err(_) => Ok(()),
                };
                match within {
                    Ok(()) => {
                        self.hand_to_workers(user_id, thread_id, payload, reply)
                            .await;
                        Handled::keep(None)
                    }
                    Err(refused) => refused,
                }
            }
        }
    }

    /// Hands an allowed inbound publish to the persistence workers.
    pub(super) async fn hand_to_workers(
        &self,
        user_id: &str,
        thread_id: &str,
        payload: &[u8],
        reply: Reply,
    ) {
        use chat_core::outbound::Outbound;
        let version = if reply.is_v1() { "" } else { "/v2" };
        self.handover
            .publish(
                format!("{PERSIST_PREFIX}{thread_id}/{user_id}{version}"),
                payload.to_vec(),
                chat_core::outbound::Qos::AtLeastOnce,
            )
            .await;
    }
}

/// Whether a refused topic is in v2's family (`t/…`, `u/…`).
fn looks_v2(topic: &str) -> bool {
    topic.starts_with("t/") || topic.starts_with("u/")
}

/// The PUBACK reason code of a refusal (`chat_protocol::v2::puback`).
fn refusal_reason(code: ErrorCode) -> rmqtt::codec::v5::PublishAckReason {
    use rmqtt::codec::v5::PublishAckReason as R;
    match puback::reason_code(code) {
        0x99 => R::PayloadFormatInvalid,
        0x87 => R::NotAuthorized,
        0x97 => R::QuotaExceeded,
        _ => R::UnspecifiedError,
    }
}

/// The PUBACK of a handled publish.
fn acl_result(handled: Handled) -> PublishAclResult {
    match handled.puback {
        None => PublishAclResult::handled(Vec::new()),
        Some(PubackAnswer::Stored { id, created_at }) => PublishAclResult::handled(vec![
            (puback::ID.into(), id.into()),
            (puback::TS.into(), created_at.to_string().into()),
        ]),
        Some(PubackAnswer::Refused {
            code,
            message,
            retry_after_ms,
        }) => {
            let mut properties = vec![(puback::CODE.into(), code.as_str().into())];
            if let Some(retry) = retry_after_ms {
                properties.push((puback::RETRY.into(), retry.to_string().into()));
            }
            PublishAclResult(rmqtt::types::PublishResult {
                reason_code: refusal_reason(code),
                properties,
                reason_string: (!message.is_empty()).then(|| message.into()),
                disconnect: false,
                handled: false,
                deferred: None,
            })
        }
    }
}
