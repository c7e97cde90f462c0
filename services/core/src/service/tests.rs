//! The domain's invariants, in process: a [`ChatService`] over the memory
//! store, with an outbound that records every event, driven the way the
//! broker drives it (`handle_inbound` with MessagePack payloads).

use async_trait::async_trait;

use super::*;
use crate::bus::InProcessBus;
use crate::model::User;
use crate::presence::{LocalPresence, Presence};
use crate::store::memory::MemoryStore;
use crate::store::prelude::*;

/// One event the service published.
struct Published {
    topic: String,
    payload: Vec<u8>,
    qos: Qos,
    /// For a successful `message_sent_ack`: whether its message was in the
    /// store at the moment the ack was published.
    acked_message_stored: Option<bool>,
}

/// An [`Outbound`] that keeps everything published, and looks into the
/// store whenever an ack goes out.
struct Recording {
    store: Arc<MemoryStore>,
    published: Mutex<Vec<Published>>,
}

#[async_trait]
impl Outbound for Recording {
    async fn publish(&self, topic: String, payload: Vec<u8>, qos: Qos) {
        let acked_message_stored = match chat_protocol::decode_server(&payload) {
            Ok(ServerEvent::MessageSentAck {
                thread_id,
                message_id: Some(message_id),
                ..
            }) => {
                let stored = self
                    .store
                    .messages(&thread_id, &MessageRange::default(), 10_000)
                    .await
                    .expect("the memory store answers");
                Some(stored.iter().any(|m| m.id == message_id))
            }
            _ => None,
        };
        self.published.lock().push(Published {
            topic,
            payload,
            qos,
            acked_message_stored,
        });
    }
}

/// What a `message_sent_ack` said.
#[derive(Debug)]
struct Ack {
    client_msg_id: String,
    message_id: Option<String>,
    error: Option<ErrorCode>,
    stored_when_published: Option<bool>,
    qos: Qos,
}

const BUYER: &str = "buyer-1";
const SELLER: &str = "shop-1";

/// A service over an empty memory store, a registered seller, and the
/// thread a buyer opened with it.
struct World {
    service: ChatService,
    store: Arc<MemoryStore>,
    outbound: Arc<Recording>,
    thread: Thread,
}

fn claims(sub: &str, role: Role) -> Claims {
    Claims {
        sub: sub.to_owned(),
        role,
        iss: "test".into(),
        aud: "chat".into(),
        exp: i64::MAX / 1000,
        nbf: None,
        iat: None,
    }
}

impl World {
    async fn new() -> World {
        World::with_push(PushRoute::Nowhere, Arc::new(LocalPresence::new())).await
    }

    async fn with_push(push: PushRoute, presence: Arc<LocalPresence>) -> World {
        World::build(push, presence, Limits::default()).await
    }

    async fn with_limits(limits: Limits) -> World {
        World::build(PushRoute::Nowhere, Arc::new(LocalPresence::new()), limits).await
    }

    async fn build(push: PushRoute, presence: Arc<LocalPresence>, limits: Limits) -> World {
        let store = Arc::new(MemoryStore::new());
        let chat_store: Arc<dyn ChatStore> = store.clone();
        let outbound = Arc::new(Recording {
            store: store.clone(),
            published: Mutex::new(Vec::new()),
        });
        let service = ChatService::new(Deps {
            store: chat_store.clone(),
            membership: Arc::new(MembershipCache::new(chat_store.clone())),
            outbound: outbound.clone(),
            bus: Arc::new(InProcessBus::new(64)),
            limits,
            presence,
            moderation: Arc::new(Moderation::without_keywords(
                crate::moderation::ModerationConfig::default(),
                chat_store,
            )),
            limiter: Arc::new(RateLimiter::new(
                crate::ratelimit::RateLimitConfig::default(),
            )),
            attachments: None,
            push,
            sandbox_prefix: None,
            protocol_v1: true,
        });
        let shop = User {
            id: SELLER.into(),
            display_name: "Shop Một".into(),
            avatar_url: None,
            email: None,
            locale: "vi".into(),
            seller: true,
        };
        service
            .put_record(&claims("platform", Role::Platform), &Record::User(shop))
            .await
            .expect("the platform registers the shop");
        let thread = service
            .open_thread(
                &claims(BUYER, Role::Buyer),
                OpenFrom::Seller {
                    seller_id: SELLER.into(),
                    product_id: None,
                },
            )
            .await
            .expect("the buyer opens a thread with the shop");
        World {
            service,
            store,
            outbound,
            thread,
        }
    }

    /// A `send_message` published by `from` to `thread/<id>/in`.
    async fn send(&self, from: &str, client_msg_id: &str, text: &str) {
        let payload = chat_protocol::encode(&ClientEvent::SendMessage {
            client_msg_id: client_msg_id.into(),
            kind: MessageType::Text,
            content: text.into(),
        });
        let connection = format!("{from}:phone");
        let after = self
            .service
            .handle_inbound(from, Some(&connection), &self.thread.id, &payload)
            .await;
        assert_eq!(after, AfterInbound::Keep);
    }

    /// Every event published on `topic`, in order, decoded.
    fn events_on(&self, topic: &str) -> Vec<(ServerEvent, Qos)> {
        self.outbound
            .published
            .lock()
            .iter()
            .filter(|p| p.topic == topic)
            .map(|p| {
                let event = chat_protocol::decode_server(&p.payload).expect("a server event");
                (event, p.qos)
            })
            .collect()
    }

    /// The acks `user` got, in order.
    fn acks_of(&self, user: &str) -> Vec<Ack> {
        let topic = topics::user(user);
        self.outbound
            .published
            .lock()
            .iter()
            .filter(|p| p.topic == topic)
            .filter_map(|p| match chat_protocol::decode_server(&p.payload) {
                Ok(ServerEvent::MessageSentAck {
                    client_msg_id,
                    message_id,
                    error,
                    ..
                }) => Some(Ack {
                    client_msg_id,
                    message_id,
                    error: error.map(|e| e.code),
                    stored_when_published: p.acked_message_stored,
                    qos: p.qos,
                }),
                _ => None,
            })
            .collect()
    }

    /// The messages delivered to the thread (`message_new`), in order.
    fn delivered(&self) -> Vec<Message> {
        self.events_on(&topics::thread(&self.thread.id))
            .into_iter()
            .filter_map(|(event, _)| match event {
                ServerEvent::MessageNew { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// The thread's stored messages that people sent (no system notices).
    async fn stored_texts(&self) -> Vec<Message> {
        self.store
            .messages(&self.thread.id, &MessageRange::default(), 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == MessageType::Text)
            .collect()
    }

    async fn unread(&self) -> (u32, u32) {
        let thread = self.store.thread(&self.thread.id).await.unwrap().unwrap();
        (thread.unread_buyer, thread.unread_seller)
    }
}

/// With the outbox route a message owes a push only to a recipient with
/// no live session; the memory store refuses any append that owes one
/// (it has no outbox), which is what shows the obligation here.
#[tokio::test]
async fn a_push_is_owed_with_the_message_only_to_a_recipient_away() {
    let presence = Arc::new(LocalPresence::new());
    let world = World::with_push(PushRoute::WithTheMessage, presence.clone()).await;
    let buyer = claims(BUYER, Role::Buyer);
    let send = |key: &'static str| {
        world.service.send_message(
            &buyer.sub,
            &world.thread.id,
            key,
            MessageType::Text,
            "Shop ơi, còn hàng không?".into(),
        )
    };
    presence.session_started(SELLER, "shop-1:web@1");
    assert!(
        send("c-online").await.is_ok(),
        "an online seller is owed nothing"
    );
    presence.session_ended(SELLER, "shop-1:web@1");
    let away = send("c-away").await;
    assert!(
        matches!(&away, Err(ServiceError::Store(StoreError::Refused { .. }))),
        "an offline seller is owed a push: {away:?}"
    );
}

#[tokio::test]
async fn the_ack_is_published_only_once_the_message_is_stored() {
    let world = World::new().await;
    world
        .send(BUYER, "c-1", "Shop ơi, áo này còn size M không?")
        .await;

    let acks = world.acks_of(BUYER);
    assert_eq!(acks.len(), 1, "{acks:?}");
    let ack = &acks[0];
    assert_eq!(ack.client_msg_id, "c-1");
    assert_eq!(ack.error, None);
    assert_eq!(ack.qos, Qos::AtLeastOnce);
    assert_eq!(
        ack.stored_when_published,
        Some(true),
        "the acked message was in the store when its ack went out"
    );
    let stored = world.stored_texts().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(ack.message_id.as_deref(), Some(stored[0].id.as_str()));
}

#[tokio::test]
async fn a_retry_stores_one_message_and_acks_the_same_id_twice() {
    let world = World::new().await;
    world.send(BUYER, "c-retry", "Còn hàng không shop?").await;
    // The ack was lost: the client sends again under the same key.
    world.send(BUYER, "c-retry", "Còn hàng không shop?").await;

    let stored = world.stored_texts().await;
    assert_eq!(stored.len(), 1, "one message stored: {stored:?}");
    let acks = world.acks_of(BUYER);
    assert_eq!(acks.len(), 2, "{acks:?}");
    for ack in &acks {
        assert_eq!(ack.client_msg_id, "c-retry");
        assert_eq!(ack.error, None);
        assert_eq!(ack.message_id.as_deref(), Some(stored[0].id.as_str()));
    }
    assert_eq!(
        world.delivered().len(),
        1,
        "the retry is not delivered again"
    );
    assert_eq!(world.unread().await, (0, 1), "and not counted again");
}

#[tokio::test]
async fn a_phone_number_is_masked_before_it_is_stored_and_delivered() {
    let world = World::new().await;
    world.send(BUYER, "c-phone", "gọi 0938 471 265 nhé").await;

    let digits = |text: &str| text.chars().filter(char::is_ascii_digit).count();
    let stored = world.stored_texts().await;
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].content.starts_with("gọi ") && stored[0].content.ends_with(" nhé"),
        "the rest of the text is kept: {:?}",
        stored[0].content
    );
    assert_eq!(
        digits(&stored[0].content),
        0,
        "stored: {:?}",
        stored[0].content
    );
    let delivered = world.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].id, stored[0].id);
    assert_eq!(
        digits(&delivered[0].content),
        0,
        "delivered: {:?}",
        delivered[0].content
    );
    // The inbox previews carry no digit of the number either.
    let previews: Vec<String> = [BUYER, SELLER]
        .into_iter()
        .flat_map(|user| world.events_on(&topics::user(user)))
        .filter_map(|(e, _)| match e {
            ServerEvent::ThreadUpdated { thread } => thread.last_message.map(|m| m.text),
            _ => None,
        })
        .collect();
    assert_eq!(previews.len(), 2, "{previews:?}");
    for preview in &previews {
        assert_eq!(digits(preview), 0, "preview: {preview:?}");
    }
    // The sender is told why.
    assert!(
        world.events_on(&topics::user(BUYER)).iter().any(
            |(e, _)| matches!(e, ServerEvent::ModerationNotice { categories, .. }
                if categories.iter().any(|c| c == "phone"))
        ),
        "a moderation notice to the sender"
    );
}

#[tokio::test]
async fn unread_counts_are_kept_per_side() {
    let world = World::new().await;
    world.send(BUYER, "b-1", "Chào shop").await;
    world.send(BUYER, "b-2", "Áo này còn size M không?").await;
    assert_eq!(world.unread().await, (0, 2), "(buyer, seller)");

    world.send(SELLER, "s-1", "Dạ còn ạ").await;
    assert_eq!(
        world.unread().await,
        (1, 0),
        "replying reads the thread for the seller"
    );
    // Both inboxes were told the latest counts.
    let last_update = |user: &str| {
        world
            .events_on(&topics::user(user))
            .into_iter()
            .filter_map(|(e, _)| match e {
                ServerEvent::ThreadUpdated { thread } => Some(thread),
                _ => None,
            })
            .next_back()
            .expect("a thread_updated")
    };
    for user in [BUYER, SELLER] {
        let state = last_update(user);
        assert_eq!((state.unread_buyer, state.unread_seller), (1, 0), "{user}");
    }
}

#[tokio::test]
async fn a_block_refuses_sends_in_both_directions() {
    let world = World::new().await;
    world
        .service
        .set_block(&claims(SELLER, Role::Seller), &world.thread.id, true)
        .await
        .expect("the seller blocks the buyer");

    world.send(BUYER, "b-1", "Sao shop chặn tôi?").await;
    world.send(SELLER, "s-1", "Tin nhắn từ shop").await;

    for (user, client_msg_id) in [(BUYER, "b-1"), (SELLER, "s-1")] {
        let acks = world.acks_of(user);
        assert_eq!(acks.len(), 1, "{user}: {acks:?}");
        assert_eq!(acks[0].client_msg_id, client_msg_id);
        assert_eq!(acks[0].message_id, None, "{user}");
        assert_eq!(acks[0].error, Some(ErrorCode::ThreadBlocked), "{user}");
    }
    assert!(world.stored_texts().await.is_empty(), "nothing stored");
    assert!(
        world
            .delivered()
            .iter()
            .all(|m| m.kind == MessageType::System),
        "only the block notice was delivered"
    );
}

/// A send on `connection`, answered by its PUBACK.
async fn send_on(w: &World, connection: &str, key: &str) -> Result<Appended, ServiceError> {
    w.service
        .send_message_via(
            BUYER,
            &w.thread.id,
            key,
            MessageType::Text,
            "Còn hàng không shop?".into(),
            Reply::Puback,
            Some(connection),
        )
        .await
}

#[tokio::test]
async fn sends_are_shed_while_the_store_has_a_standing_queue_and_admitted_once_it_is_gone() {
    let w = World::with_limits(Limits {
        shed_after_ms: 50,
        shed_interval_ms: 100,
        ..Limits::default()
    })
    .await;
    w.store.slow_appends(Duration::from_millis(250));
    // Two appends an interval apart, both slower than the target: every
    // append of the last interval waited too long.
    for key in ["k1", "k2"] {
        send_on(&w, "c1", key).await.expect("stored");
    }
    let shed = send_on(&w, "c1", "k3").await.expect_err("shed");
    assert_eq!(shed.code(), ErrorCode::Unavailable);
    let retry = shed.retry_after_ms().expect("a retry delay");
    assert!((500..1000).contains(&retry), "twice the wait: {retry} ms");
    assert_eq!(w.stored_texts().await.len(), 2, "nothing stored for it");

    // The store is quick again. Once the verdict is old (two intervals),
    // another connection gets through; c1 was told to wait and is still
    // refused until its delay has passed, so its sends keep their order.
    w.store.slow_appends(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(250)).await;
    send_on(&w, "c2", "k4").await.expect("admitted");
    let held = send_on(&w, "c1", "k3")
        .await
        .expect_err("still told to wait");
    assert_eq!(held.code(), ErrorCode::Unavailable);
    tokio::time::sleep(Duration::from_millis(retry)).await;
    send_on(&w, "c1", "k3").await.expect("its delay has passed");
    assert_eq!(w.stored_texts().await.len(), 4);
}

#[tokio::test]
async fn sends_beyond_the_queue_cap_are_shed() {
    let w = std::sync::Arc::new(
        World::with_limits(Limits {
            max_sends_queued: 1,
            ..Limits::default()
        })
        .await,
    );
    w.store.slow_appends(Duration::from_millis(300));
    let first = {
        let w = w.clone();
        tokio::spawn(async move { send_on(&w, "c1", "k1").await.map(|_| ()) })
    };
    // The first send is waiting for the store: the cap is reached.
    while w.service.admission.queued() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed = send_on(&w, "c2", "k2").await.expect_err("over the cap");
    assert_eq!(shed.code(), ErrorCode::Unavailable);
    first.await.unwrap().expect("the first one is stored");
    w.store.slow_appends(Duration::ZERO);
    send_on(&w, "c3", "k3").await.expect("room again");
}
