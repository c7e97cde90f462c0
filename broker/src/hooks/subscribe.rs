//! SUBSCRIBE: a person to their own user topic and their threads; a
//! worker to the hand-over group; a load test to `bench/`.

use super::*;

impl ChatHooks {
    pub(super) async fn check_subscribe(
        &self,
        session: &Session,
        subscribe: &rmqtt::types::Subscribe,
    ) -> SubscribeAclResult {
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
        if allowed {
            return SubscribeAclResult::new_success(subscribe.opts.qos(), None);
        }
        // Counted like refused publishes: a flood of them is not logged,
        // then closes the connection.
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
    }
}
