//! PUBLISH: the topic is parsed once; a person's publish to one of their
//! threads is handed to the chat service (here, before the PUBACK, or to
//! the persistence workers), everything else is refused.

use super::*;

impl ChatHooks {
    pub(super) async fn check_publish(
        &self,
        session: &Session,
        publish: &rmqtt::types::Publish,
    ) -> PublishAclResult {
        // Counted until the PUBACK can go: a drain waits for it.
        let _sending = self.drain.begin_send();
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
                Topic::Thread(_) | Topic::User(_) => PublishAclResult::allow(),
                _ => PublishAclResult::rejected(false, None),
            };
        }
        let user_id = user_of_client_id(&client_id).to_owned();
        // Allowed: a member's publish, answered by the chat service (its
        // PUBACK is success even when the answer is a refusal: the refusal
        // is the ack or error event). Rejected: others.
        let (allowed, after) = match topic {
            Topic::ThreadInbound(thread_id) => {
                self.inbound(
                    &user_id,
                    &client_id,
                    thread_id,
                    &topic_name,
                    &publish.payload,
                )
                .await
            }
            _ => (
                false,
                self.refuse_topic(&user_id, &client_id, &topic_name, ErrorCode::Forbidden)
                    .await,
            ),
        };
        if after == AfterInbound::Disconnect {
            self.disconnect(session, DisconnectReasonCode::MessageRateTooHigh);
        }
        if allowed {
            PublishAclResult::allow()
        } else {
            PublishAclResult::rejected(false, None)
        }
    }

    /// A person's publish to `thread/<thread_id>/in`: whether the broker
    /// accepts it, and what to do with the connection after.
    async fn inbound(
        &self,
        user_id: &str,
        client_id: &str,
        thread_id: &str,
        topic: &str,
        payload: &[u8],
    ) -> (bool, AfterInbound) {
        match self.is_member(thread_id, user_id).await {
            Ok(true) => {}
            Ok(false) => {
                let after = self
                    .refuse_topic(user_id, client_id, topic, ErrorCode::Forbidden)
                    .await;
                return (false, after);
            }
            Err(code) => {
                // Retry later: a send gets its ack.
                let send = chat_protocol::send_reference(payload);
                let after = self
                    .service
                    .refuse(user_id, Some(client_id), thread_id, code, send, None, None)
                    .await;
                return (false, after);
            }
        }
        let after = match self.inbound {
            Inbound::InProcess => {
                self.service
                    .handle_inbound(user_id, Some(client_id), thread_id, payload)
                    .await
            }
            Inbound::Workers => {
                // The budgets are the gateway's: it holds the connection.
                // Whatever does not decode is the worker's to refuse.
                let within = match chat_protocol::decode_client(payload) {
                    Ok(event) => {
                        self.service
                            .within_budget(user_id, client_id, thread_id, &event)
                            .await
                    }
                    Err(_) => Ok(()),
                };
                match within {
                    Ok(()) => {
                        self.hand_to_workers(user_id, thread_id, payload).await;
                        AfterInbound::Keep
                    }
                    Err(after) => after,
                }
            }
        };
        (true, after)
    }

    /// Hands an allowed inbound publish to the persistence workers.
    pub(super) async fn hand_to_workers(&self, user_id: &str, thread_id: &str, payload: &[u8]) {
        use chat_core::outbound::Outbound;
        self.handover
            .publish(
                format!("{PERSIST_PREFIX}{thread_id}/{user_id}"),
                payload.to_vec(),
                chat_core::outbound::Qos::AtLeastOnce,
            )
            .await;
    }

    /// A refused publish to `topic`, logged with the topic cut short.
    pub(super) async fn refuse_topic(
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
}
