//! Domain events for other services (push, analytics). In one process an
//! in-process broadcast; when scaled, NATS JetStream behind the same trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// `chat.message.sent`: a message was stored and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSent {
    pub thread_id: String,
    pub message_id: String,
    pub from_user_id: String,
    pub to_user_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DomainEvent {
    MessageSent(MessageSent),
}

impl DomainEvent {
    /// Subject name on the bus.
    pub fn subject(&self) -> &'static str {
        match self {
            DomainEvent::MessageSent(_) => "chat.message.sent",
        }
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn emit(&self, event: DomainEvent);
}

/// In-process bus: every subscriber gets every event emitted after it
/// subscribed. Slow subscribers lose old events (they are told so by
/// `RecvError::Lagged`), which is acceptable only for in-process consumers
/// that can resync from the store.
pub struct InProcessBus {
    sender: broadcast::Sender<DomainEvent>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> Self {
        InProcessBus {
            sender: broadcast::channel(capacity).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.sender.subscribe()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn emit(&self, event: DomainEvent) {
        tracing::debug!(subject = event.subject(), "event emitted");
        // No receiver is not an error: nobody consumes events yet.
        let _ = self.sender.send(event);
    }
}
