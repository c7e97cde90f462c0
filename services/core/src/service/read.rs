//! Read receipts and typing.

use super::*;

impl ChatService {
    /// v1 `message_read` on the thread: `user_id` has read up to `up_to`.
    pub(super) async fn publish_read_v1(
        &self,
        thread_id: &str,
        user_id: &str,
        up_to: &str,
        read_at: i64,
    ) {
        let read = ServerEvent::MessageRead {
            thread_id: thread_id.to_owned(),
            user_id: user_id.to_owned(),
            up_to: up_to.to_owned(),
            read_at,
        };
        self.outbound
            .publish(
                topics::thread(thread_id),
                chat_protocol::encode(&read),
                Qos::AtLeastOnce,
            )
            .await;
    }

    pub async fn mark_read(
        &self,
        user_id: &str,
        thread_id: &str,
        up_to: &str,
    ) -> Result<ReadMarked, ServiceError> {
        self.mark_read_via(user_id, thread_id, up_to, None).await
    }

    /// Moves `user_id`'s read marker. v2: `read` to the other participant
    /// when it moved, and to the reader's devices (with their unread count;
    /// on behalf of `connection`, which knows); v1: `message_read` on the
    /// thread and `thread_updated` to the reader.
    pub(super) async fn mark_read_via(
        &self,
        user_id: &str,
        thread_id: &str,
        up_to: &str,
        connection: Option<&str>,
    ) -> Result<ReadMarked, ServiceError> {
        if !self.membership.is_member(thread_id, user_id).await? {
            return Err(ServiceError::Forbidden);
        }
        let marked = {
            let _timer = chat_ops::metrics().store_timer("mark_read");
            self.store.mark_read(thread_id, user_id, up_to).await?
        };
        tracing::debug!(user_id, thread_id, up_to = %marked.up_to, moved = marked.moved, "read marker");
        let read_at = crate::now_millis();
        let read = |unread: Option<u32>| {
            chat_protocol::v2::encode(&chat_protocol::v2::Event::Read {
                thread_id: thread_id.to_owned(),
                user_id: user_id.to_owned(),
                up_to: marked.up_to.clone(),
                read_at,
                unread,
            })
        };
        if marked.moved {
            let other = marked.thread.other_participant(user_id);
            self.outbound
                .publish(chat_protocol::v2::user(other), read(None), Qos::AtLeastOnce)
                .await;
        }
        let topic = chat_protocol::v2::user(user_id);
        if self.outbound.reaches_anyone(&topic, connection).await {
            let own = read(Some(marked.thread.unread_for(user_id)));
            match connection {
                Some(connection) => {
                    self.outbound
                        .publish_as(topic, own, Qos::AtLeastOnce, connection)
                        .await
                }
                None => self.outbound.publish(topic, own, Qos::AtLeastOnce).await,
            }
        }
        if self.v1 {
            if marked.moved {
                self.publish_read_v1(thread_id, user_id, &marked.up_to, read_at)
                    .await;
            }
            self.emit_thread_updated(&marked.thread, &[user_id]).await;
        }
        Ok(marked)
    }

    /// Relays a typing indicator to the thread, throttled, never stored.
    pub async fn typing(&self, user_id: &str, thread_id: &str, active: bool) {
        if !self.limiter.allow_typing(user_id) {
            return;
        }
        if active {
            let throttle = Duration::from_millis(self.limits.typing_throttle_ms);
            let now = Instant::now();
            let mut seen = self.typing_seen.lock();
            let key = (user_id.to_owned(), thread_id.to_owned());
            if seen
                .get(&key)
                .is_some_and(|last| now.duration_since(*last) < throttle)
            {
                return;
            }
            if seen.len() > 100_000 {
                seen.retain(|_, last| now.duration_since(*last) < throttle);
            }
            seen.insert(key, now);
        } else {
            self.typing_seen
                .lock()
                .remove(&(user_id.to_owned(), thread_id.to_owned()));
        }
        // Only the other participant: a typist knows they are typing.
        if let Ok(Some(participants)) = self.membership.participants(thread_id).await {
            let other = if participants.buyer_id == user_id {
                &participants.seller_id
            } else {
                &participants.buyer_id
            };
            let event = chat_protocol::v2::Event::Typing {
                thread_id: thread_id.to_owned(),
                user_id: user_id.to_owned(),
                active,
            };
            self.emit_v2(other, &event, Qos::AtMostOnce).await;
        }
        if self.v1 {
            let event = ServerEvent::Typing {
                thread_id: thread_id.to_owned(),
                user_id: user_id.to_owned(),
                active,
            };
            self.outbound
                .publish(
                    topics::thread(thread_id),
                    chat_protocol::encode(&event),
                    Qos::AtMostOnce,
                )
                .await;
        }
    }
}
