//! Server-originated publishes, routed by rmqtt to local subscribers.

use async_trait::async_trait;
use bytestring::ByteString;
use chat_core::outbound::{Outbound, Qos};
use rmqtt::codec::types::Publish as CodecPublish;
use rmqtt::codec::types::QoS;
use rmqtt::context::ServerContext;
use rmqtt::session::SessionState;
use rmqtt::types::{From, Id, Publish};

pub struct BrokerOutbound {
    scx: ServerContext,
    from: Id,
}

impl BrokerOutbound {
    pub fn new(scx: ServerContext) -> Self {
        let from = Id::from(scx.node.id(), ByteString::from_static("chatd"));
        BrokerOutbound { scx, from }
    }
}

impl BrokerOutbound {
    async fn forward(&self, from: Id, topic: String, payload: Vec<u8>, qos: Qos) {
        chat_ops::metrics().message_out(&topic);
        let publish = CodecPublish {
            dup: false,
            retain: false,
            qos: match qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            },
            topic: ByteString::from(topic),
            packet_id: None,
            payload: payload.into(),
            properties: None,
        };
        let publish = Publish::from(publish).create_time(chat_core::now_millis());
        let from = From::from_system(from);
        if let Err(e) = SessionState::forwards(&self.scx, from, publish, false, None).await {
            tracing::warn!(error = %e, "server publish failed");
        }
    }
}

#[async_trait]
impl Outbound for BrokerOutbound {
    async fn publish(&self, topic: String, payload: Vec<u8>, qos: Qos) {
        self.forward(self.from.clone(), topic, payload, qos).await
    }

    /// The router's No Local check compares node and client id
    /// (`vendor/rmqtt/PATCHED.md`, change 9).
    async fn publish_as(&self, topic: String, payload: Vec<u8>, qos: Qos, connection: &str) {
        let from = Id::from(self.scx.node.id(), ByteString::from(connection));
        self.forward(from, topic, payload, qos).await
    }

    /// This node's subscriptions to exactly `topic` (the router's
    /// relations): a chat topic has no other filter that matches it,
    /// since people's filters never hold wildcards (`topics::parse`) and
    /// services subscribe only under `$share/` and `bench/`
    /// (`hooks/subscribe.rs`). A persistent session that is offline keeps
    /// its subscription, so it counts.
    async fn reaches_anyone(&self, topic: &str, connection: Option<&str>) -> bool {
        let router = self.scx.extends.router().await;
        // The publishing connection itself gets it unless it subscribed
        // with No Local (an MQTT 3.1.1 client is answered by its copy).
        router.relations().get(topic).is_some_and(|subscribers| {
            subscribers.iter().any(|(client_id, (_, opts))| {
                Some(client_id.as_ref()) != connection || opts.no_local() != Some(true)
            })
        })
    }
}
