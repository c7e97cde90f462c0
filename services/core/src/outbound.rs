//! Delivery of server-originated events to MQTT subscribers.

use async_trait::async_trait;

/// Quality of service of an outgoing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Ephemeral events (typing): lost if the subscriber is away.
    AtMostOnce,
    /// Everything that matters: queued for persistent sessions.
    AtLeastOnce,
}

#[async_trait]
pub trait Outbound: Send + Sync + 'static {
    /// Publishes `payload` on `topic` to whoever subscribes. Must not wait
    /// on the subscribers; errors are logged by the implementation.
    async fn publish(&self, topic: String, payload: Vec<u8>, qos: Qos);

    /// [`Outbound::publish`] on behalf of the MQTT client `connection`:
    /// an MQTT 5 subscription with No Local on that connection does not
    /// get it (a sender's own copy, already answered by its PUBACK).
    /// Outbounds that are not the broker publish as usual.
    async fn publish_as(&self, topic: String, payload: Vec<u8>, qos: Qos, connection: &str) {
        let _ = connection;
        self.publish(topic, payload, qos).await
    }

    /// Whether a publish on `topic` (as `connection`, if given) could
    /// reach any subscriber, so a caller may skip encoding an event
    /// nobody gets: a sender's own copy when no other device of theirs is
    /// connected, a message to someone with no session. True unless the
    /// implementation knows every subscriber it would deliver to.
    async fn reaches_anyone(&self, topic: &str, connection: Option<&str>) -> bool {
        let _ = (topic, connection);
        true
    }
}

/// Which topics this node's MQTT clients subscribe to. The broker reports
/// the first subscription to a topic filter and the end of the last one;
/// a cluster backbone uses it to receive only what its clients want.
/// `subscribed` returns once the backbone routes the topic here, before
/// the client gets its SUBACK.
#[async_trait]
pub trait TopicInterest: Send + Sync + 'static {
    async fn subscribed(&self, topic_filter: &str);
    fn unsubscribed(&self, topic_filter: &str);
}
