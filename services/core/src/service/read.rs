//! Read receipts and typing.

use super::*;

impl ChatService {
    /// `message_read` on the thread: `user_id` has read up to `up_to`.
    pub(super) async fn publish_read(
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
        if !self.membership.is_member(thread_id, user_id).await? {
            return Err(ServiceError::Forbidden);
        }
        let marked = {
            let _timer = chat_ops::metrics().store_timer("mark_read");
            self.store.mark_read(thread_id, user_id, up_to).await?
        };
        tracing::info!(user_id, thread_id, up_to = %marked.up_to, moved = marked.moved, "read marker");
        if marked.moved {
            self.publish_read(thread_id, user_id, &marked.up_to, crate::now_millis())
                .await;
        }
        self.emit_thread_updated(&marked.thread, &[user_id]).await;
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
