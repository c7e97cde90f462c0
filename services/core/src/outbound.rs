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
}
