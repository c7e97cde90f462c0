//! Which protocol an answer or an event is spoken in, and where it goes.
//!
//! While clients move from v1 to v2 (`docs/protocol.md`), every stored
//! message, read marker and typing indicator is published in v2 on
//! `u/<user>`, and in v1 on `thread/<id>` and `user/<id>` when the
//! deployment still speaks v1 (`ChatService::speaks_v1`). A client's own
//! answers (acks, refusals) go in the protocol it spoke.

use super::*;
use chat_protocol::v2;

/// Where the answer to one client publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// v1 events on `user/<me>`.
    V1,
    /// v2 events on `u/<me>`: the sender's own copy of a stored message,
    /// or an `ack`.
    V2,
    /// v2 over MQTT 5 at QoS 1, handled before the PUBACK: the PUBACK
    /// carries the answer, no event is published for it.
    Puback,
}

impl Reply {
    pub fn is_v1(self) -> bool {
        self == Reply::V1
    }
}

/// What the PUBACK of a [`Reply::Puback`] publish says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubackAnswer {
    Stored {
        id: String,
        created_at: i64,
    },
    Refused {
        code: ErrorCode,
        /// In the user's locale.
        message: String,
        retry_after_ms: Option<u64>,
    },
}

/// The outcome of one client publish, for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub after: AfterInbound,
    /// Set for [`Reply::Puback`] when there is something to say.
    pub puback: Option<PubackAnswer>,
}

impl Handled {
    pub fn keep(puback: Option<PubackAnswer>) -> Self {
        Handled {
            after: AfterInbound::Keep,
            puback,
        }
    }
}

impl From<AfterInbound> for Handled {
    fn from(after: AfterInbound) -> Self {
        Handled {
            after,
            puback: None,
        }
    }
}

/// A stored message as `user`'s topic gets it.
pub(super) fn v2_msg(message: &Message, thread: &Thread, user: &str) -> v2::Event {
    let own = message.from == user;
    v2::Event::Msg(v2::Msg {
        thread_id: message.thread_id.clone(),
        id: message.id.clone(),
        from: (!message.from.is_empty()).then(|| message.from.clone()),
        kind: message.kind,
        content: message.content.clone(),
        card: message.card.clone(),
        created_at: message.created_at,
        client_msg_id: if own {
            message.client_msg_id.clone()
        } else {
            None
        },
        unread: thread.unread_for(user),
    })
}

/// A thread's row in `user`'s inbox.
pub(super) fn v2_thread(thread: &Thread, user: &str) -> v2::Event {
    v2::Event::Thread(v2::ThreadRow {
        thread_id: thread.id.clone(),
        buyer: thread.buyer_id.clone(),
        seller: thread.seller_id.clone(),
        product: thread.product_id.clone(),
        order: thread.order_id.clone(),
        last: thread.last_message.as_ref().map(|p| v2::Preview {
            id: p.message_id.clone(),
            from: (!p.from.is_empty()).then(|| p.from.clone()),
            kind: p.kind,
            text: p.text.clone(),
            created_at: p.created_at,
        }),
        unread: thread.unread_for(user),
    })
}

impl ChatService {
    /// Whether v1 events are still published (`mqtt.protocol_v1`).
    pub fn speaks_v1(&self) -> bool {
        self.v1
    }

    /// A v2 event to every device of `user_id`.
    pub(super) async fn emit_v2(&self, user_id: &str, event: &v2::Event, qos: Qos) {
        self.outbound
            .publish(v2::user(user_id), v2::encode(event), qos)
            .await;
    }

    /// A v1 event to `user/<user_id>`, when v1 is spoken.
    pub(super) async fn emit_v1(&self, user_id: &str, event: &ServerEvent) {
        if self.v1 {
            self.emit_to_user(user_id, event).await;
        }
    }

    /// A thread's row to each of `users` (v2; v1 has `thread_updated`).
    pub(super) async fn emit_v2_thread(&self, thread: &Thread, users: &[&str]) {
        for user in users {
            self.emit_v2(user, &v2_thread(thread, user), Qos::AtLeastOnce)
                .await;
        }
    }

    /// A refusal in the protocol the publish came in: a failed ack for a
    /// send, an `error` otherwise, or the PUBACK's answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer_refusal(
        &self,
        user_id: &str,
        thread_id: &str,
        code: ErrorCode,
        send: Option<String>,
        topic: Option<String>,
        reference: Option<String>,
        retry_after_ms: Option<u64>,
        reply: Reply,
    ) -> Option<PubackAnswer> {
        chat_ops::metrics().publish_refused(code.as_str());
        let lang = self.lang_of(user_id).await;
        let message = error_text(code, lang).to_owned();
        match (reply, send) {
            (Reply::Puback, _) => {
                return Some(PubackAnswer::Refused {
                    code,
                    message,
                    retry_after_ms,
                });
            }
            (Reply::V1, Some(client_msg_id)) => {
                let ack = ServerEvent::MessageSentAck {
                    client_msg_id,
                    thread_id: thread_id.to_owned(),
                    message_id: None,
                    created_at: None,
                    error: Some(ErrorBody {
                        code,
                        message,
                        retry_after_ms,
                    }),
                };
                // A v1 client told its version is gone is the exception:
                // nothing else it could read says so.
                if self.v1 || code == ErrorCode::UnsupportedVersion {
                    self.emit_to_user(user_id, &ack).await;
                }
            }
            (Reply::V1, None) => {
                let event = ServerEvent::Error {
                    error: ErrorBody {
                        code,
                        message,
                        retry_after_ms,
                    },
                    topic,
                    reference,
                };
                if self.v1 || code == ErrorCode::UnsupportedVersion {
                    self.emit_to_user(user_id, &event).await;
                }
            }
            (Reply::V2, Some(client_msg_id)) => {
                let ack = v2::Event::Ack {
                    thread_id: thread_id.to_owned(),
                    client_msg_id,
                    id: None,
                    created_at: None,
                    err: Some(v2::Err {
                        code,
                        msg: message,
                        retry: retry_after_ms,
                    }),
                };
                self.emit_v2(user_id, &ack, Qos::AtLeastOnce).await;
            }
            (Reply::V2, None) => {
                let event = v2::Event::Error {
                    code,
                    msg: message,
                    retry: retry_after_ms,
                    topic,
                    reference,
                };
                self.emit_v2(user_id, &event, Qos::AtLeastOnce).await;
            }
        }
        None
    }
}
