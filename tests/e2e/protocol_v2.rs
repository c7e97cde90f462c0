//! Protocol v2 (`docs/asyncapi.yaml`): one subscription per user, the
//! answer in the MQTT 5 PUBACK, and what one text costs on the wire,
//! counted by a TCP proxy between each client and chatd.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_e2e::{Client, Server, Via};
use chat_protocol::v2::{self, Command, Event};
use chat_protocol::{ErrorCode, MessageType};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event as V5Event, MqttOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::CHATD;

/// Bytes each way through one proxied connection.
#[derive(Default)]
struct Wire {
    up: AtomicU64,
    down: AtomicU64,
}

impl Wire {
    fn total(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

/// A TCP proxy to chatd's MQTT port that counts bytes; returns its port.
async fn counting_proxy(server: &Server) -> (u16, Arc<Wire>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let wire = Arc::new(Wire::default());
    let target = server.tcp_port;
    let counted = wire.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let up = counted.clone();
        tokio::spawn(async move { copy(&mut cr, &mut uw, &up.up).await });
        copy(&mut ur, &mut cw, &counted.down).await;
    });
    (port, wire)
}

async fn copy(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    count: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        count.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// What an MQTT 5 client saw.
#[derive(Debug)]
enum Seen {
    Publish(String, Box<Event>),
    PubAck(PubAckReason, Vec<(String, String)>, Option<String>),
    SubAck,
}

struct V5 {
    mqtt: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Packets in and out after the CONNACK and SUBACK.
    packets: Arc<AtomicU64>,
}

impl V5 {
    async fn connect(server: &Server, user: &str, role: &str, device: &str, port: u16) -> V5 {
        let mut opts = MqttOptions::new(format!("{user}:{device}"), "127.0.0.1", port);
        opts.set_credentials(user, server.token(user, role));
        opts.set_keep_alive(Duration::from_secs(30));
        let (mqtt, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let packets = Arc::new(AtomicU64::new(0));
        let counted = packets.clone();
        tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(V5Event::Incoming(packet)) => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        match packet {
                            Packet::Publish(p) => {
                                let topic = String::from_utf8(p.topic.to_vec()).unwrap();
                                let event = v2::decode_event(&p.payload)
                                    .unwrap_or_else(|e| panic!("undecodable on {topic}: {e}"));
                                Seen::Publish(topic, Box::new(event))
                            }
                            Packet::PubAck(ack) => {
                                let (props, reason) = ack
                                    .properties
                                    .map(|p| (p.user_properties, p.reason_string))
                                    .unwrap_or_default();
                                Seen::PubAck(ack.reason, props, reason)
                            }
                            Packet::SubAck(_) => Seen::SubAck,
                            _ => continue,
                        }
                    }
                    Ok(V5Event::Outgoing(_)) => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    Err(_) => return,
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        let mut client = V5 { mqtt, rx, packets };
        client
            .mqtt
            .subscribe_many([Filter {
                nolocal: true,
                ..Filter::new(v2::user(user), QoS::AtLeastOnce)
            }])
            .await
            .unwrap();
        loop {
            match client.next().await {
                Some(Seen::SubAck) => break,
                Some(_) => continue,
                None => panic!("no SUBACK"),
            }
        }
        // Let the SUBACK's own counting settle, then count from zero.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.packets.store(0, Ordering::SeqCst);
        client
    }

    async fn next(&mut self) -> Option<Seen> {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next publish, whatever it is; panics on anything else.
    async fn event(&mut self) -> (String, Event) {
        match self.next().await {
            Some(Seen::Publish(topic, event)) => (topic, *event),
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    async fn quiet_for(&mut self, d: Duration) -> Option<Seen> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    async fn send(&mut self, thread: &str, key: &str, text: &str) -> Seen {
        let command = Command::Msg {
            client_msg_id: key.into(),
            content: text.into(),
            kind: MessageType::Text,
        };
        self.mqtt
            .publish(
                v2::thread(thread),
                QoS::AtLeastOnce,
                false,
                v2::encode(&command),
            )
            .await
            .unwrap();
        match self.next().await {
            Some(ack @ Seen::PubAck(..)) => ack,
            Some(other) => panic!("before the PUBACK: {other:?}"),
            None => panic!("no PUBACK"),
        }
    }
}

fn property<'a>(props: &'a [(String, String)], name: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Twenty Vietnamese characters, as the issue measured.
const TEXT: &str = "Còn size M không ạ?!";

#[tokio::test]
async fn an_mqtt5_text_costs_four_packets_and_fits_the_byte_budget() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("v2buyer", "v2seller").await;
    assert_eq!(TEXT.chars().count(), 20);
    let (buyer_port, buyer_wire) = counting_proxy(&server).await;
    let (seller_port, seller_wire) = counting_proxy(&server).await;
    let mut buyer = V5::connect(&server, "v2buyer", "buyer", "phone", buyer_port).await;
    let mut seller = V5::connect(&server, "v2seller", "seller", "web", seller_port).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (buyer_before, seller_before) = (buyer_wire.total(), seller_wire.total());

    let Seen::PubAck(reason, props, _) = buyer.send(&thread, "k-1", TEXT).await else {
        unreachable!()
    };
    assert_eq!(reason, PubAckReason::Success);
    let id = property(&props, v2::puback::ID)
        .expect("the PUBACK names the message")
        .to_owned();
    let ts: i64 = property(&props, v2::puback::TS).unwrap().parse().unwrap();

    let (topic, Event::Msg(msg)) = seller.event().await else {
        panic!("the seller got no message")
    };
    assert_eq!(topic, v2::user("v2seller"));
    assert_eq!(
        (
            msg.id.as_str(),
            msg.thread_id.as_str(),
            msg.content.as_str()
        ),
        (id.as_str(), thread.as_str(), TEXT)
    );
    assert_eq!(
        (msg.from.as_deref(), msg.created_at, msg.unread),
        (Some("v2buyer"), ts, 1)
    );
    assert_eq!(msg.client_msg_id, None, "the key is the sender's business");
    // No Local: the sending connection gets nothing more.
    let extra = buyer.quiet_for(Duration::from_millis(700)).await;
    assert!(extra.is_none(), "the sender got {extra:?}");
    assert!(seller.quiet_for(Duration::from_millis(300)).await.is_none());

    let packets = buyer.packets.load(Ordering::SeqCst) + seller.packets.load(Ordering::SeqCst);
    let sender_bytes = {
        let (up, down) = buyer_wire.total();
        (up - buyer_before.0) + (down - buyer_before.1)
    };
    let recipient_bytes = {
        let (up, down) = seller_wire.total();
        (up - seller_before.0) + (down - seller_before.1)
    };
    println!(
        "v2 over MQTT 5, a 20-character text: {packets} packets, sender {sender_bytes} B, recipient {recipient_bytes} B"
    );
    assert_eq!(packets, 4, "PUBLISH + PUBACK on each side");
    assert!(sender_bytes <= 350, "sender {sender_bytes} B");
    assert!(recipient_bytes <= 350, "recipient {recipient_bytes} B");
}

/// The own copy is skipped only when no other session of the sender's
/// subscribes (`Outbound::reaches_anyone`): a second device gets it, and
/// gets it again once it is the only other one left after a third leaves.
#[tokio::test]
async fn the_senders_other_devices_get_its_own_copy_and_the_sender_does_not() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("odbuyer", "odseller").await;
    let port = server.tcp_port;
    let mut phone = V5::connect(&server, "odbuyer", "buyer", "phone", port).await;
    let mut seller = V5::connect(&server, "odseller", "seller", "web", port).await;

    // Alone: nobody else of the buyer's gets anything.
    assert!(matches!(
        phone.send(&thread, "od-1", "một").await,
        Seen::PubAck(PubAckReason::Success, ..)
    ));
    let (_, Event::Msg(first)) = seller.event().await else {
        panic!("no message")
    };
    assert_eq!(first.content, "một");

    let mut tablet = V5::connect(&server, "odbuyer", "buyer", "tablet", port).await;
    let mut laptop = V5::connect(&server, "odbuyer", "buyer", "laptop", port).await;
    assert!(matches!(
        phone.send(&thread, "od-2", "hai").await,
        Seen::PubAck(PubAckReason::Success, ..)
    ));
    for device in [&mut tablet, &mut laptop] {
        let (topic, Event::Msg(copy)) = device.event().await else {
            panic!("no own copy")
        };
        assert_eq!(topic, v2::user("odbuyer"));
        assert_eq!(
            (copy.content.as_str(), copy.client_msg_id.as_deref()),
            ("hai", Some("od-2"))
        );
    }
    let (_, Event::Msg(second)) = seller.event().await else {
        panic!("no message")
    };
    assert_eq!(second.content, "hai");

    laptop.mqtt.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        phone.send(&thread, "od-3", "ba").await,
        Seen::PubAck(PubAckReason::Success, ..)
    ));
    let (_, Event::Msg(copy)) = tablet.event().await else {
        panic!("no own copy")
    };
    assert_eq!(copy.content, "ba");
    assert!(
        phone.quiet_for(Duration::from_millis(500)).await.is_none(),
        "No Local"
    );
}

#[tokio::test]
async fn a_refused_mqtt5_send_is_answered_in_its_puback() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("v2b2", "v2s2").await;
    let mut buyer = V5::connect(&server, "v2b2", "buyer", "phone", server.tcp_port).await;
    let Seen::PubAck(reason, props, why) = buyer.send(&thread, "k-1", " \u{200b} ").await else {
        unreachable!()
    };
    assert_eq!(reason, PubAckReason::PayloadFormatInvalid);
    assert_eq!(property(&props, v2::puback::CODE), Some("invalid_field"));
    assert!(why.is_some_and(|w| !w.is_empty()), "a localised reason");
    assert_eq!(property(&props, v2::puback::ID), None);
    // Not a member: the topic's thread is someone else's.
    let other = server.thread_between("v2b3", "v2s2").await;
    let Seen::PubAck(reason, props, _) = buyer.send(&other, "k-2", "chào").await else {
        unreachable!()
    };
    assert_eq!(reason, PubAckReason::NotAuthorized);
    assert_eq!(property(&props, v2::puback::CODE), Some("forbidden"));
    // A retry of a stored message gets the same id, and nothing is resent.
    let Seen::PubAck(_, first, _) = buyer.send(&thread, "k-3", "một lần").await else {
        unreachable!()
    };
    let Seen::PubAck(_, again, _) = buyer.send(&thread, "k-3", "một lần").await else {
        unreachable!()
    };
    assert_eq!(property(&first, "id"), property(&again, "id"));
    assert!(property(&first, "id").is_some());
    let ids = server.text_message_ids("v2b2", "buyer", &thread).await;
    assert_eq!(ids.len(), 1);
}

/// A 3.1.1 client has no PUBACK properties and no No Local: its own copy
/// (with its key) is the answer, and a refusal comes as `ack`. Its other
/// devices get the copy too.
#[tokio::test]
async fn an_mqtt311_client_is_answered_by_its_own_copy_or_an_ack() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("v2b4", "v2s4").await;
    let mut phone = Client::connect(&server, "v2b4", "buyer", Via::Tcp).await;
    assert!(phone.subscribe(&v2::user("v2b4")).await);
    let mut tablet = V5::connect(&server, "v2b4", "buyer", "tablet", server.tcp_port).await;
    let send = Command::Msg {
        client_msg_id: "k-1".into(),
        content: "Shop ơi".into(),
        kind: MessageType::Text,
    };
    phone.publish(&v2::thread(&thread), v2::encode(&send)).await;
    let (topic, payload) = phone.raw(Duration::from_secs(5)).await.expect("own copy");
    assert_eq!(topic, v2::user("v2b4"));
    let Event::Msg(own) = v2::decode_event(&payload).unwrap() else {
        panic!("not a msg")
    };
    assert_eq!(own.client_msg_id.as_deref(), Some("k-1"));
    assert_eq!(own.content, "Shop ơi");
    // The other device of the sender sees it too (it did not send it).
    let (_, Event::Msg(copy)) = tablet.event().await else {
        panic!("the tablet missed it")
    };
    assert_eq!(copy.id, own.id);

    let too_long = Command::Msg {
        client_msg_id: "k-2".into(),
        content: "a".repeat(4001),
        kind: MessageType::Text,
    };
    phone
        .publish(&v2::thread(&thread), v2::encode(&too_long))
        .await;
    let (_, payload) = phone.raw(Duration::from_secs(5)).await.expect("an ack");
    let Event::Ack {
        client_msg_id, err, ..
    } = v2::decode_event(&payload).unwrap()
    else {
        panic!("not an ack")
    };
    assert_eq!(client_msg_id, "k-2");
    assert_eq!(err.map(|e| e.code), Some(ErrorCode::TooLarge));
}

/// What the same text costs a 3.1.1 sender: its own copy is its answer.
#[tokio::test]
async fn an_mqtt311_sender_pays_for_its_own_copy() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("v2b7", "v2s7").await;
    let (port, wire) = counting_proxy(&server).await;
    let mut opts = rumqttc::MqttOptions::new("v2b7:phone", "127.0.0.1", port);
    opts.set_credentials("v2b7", server.token("v2b7", "buyer"));
    opts.set_keep_alive(Duration::from_secs(30));
    let chat_e2e::Connect::Accepted(mut phone) = Client::try_connect(opts, "v2b7").await else {
        panic!("refused")
    };
    assert!(phone.subscribe(&v2::user("v2b7")).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = wire.total();
    let send = Command::Msg {
        client_msg_id: "k-1".into(),
        content: TEXT.into(),
        kind: MessageType::Text,
    };
    phone.publish(&v2::thread(&thread), v2::encode(&send)).await;
    let (_, payload) = phone.raw(Duration::from_secs(5)).await.expect("own copy");
    assert!(matches!(v2::decode_event(&payload), Ok(Event::Msg(_))));
    // rumqttc acknowledges the copy on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = wire.total();
    let bytes = (after.0 - before.0) + (after.1 - before.1);
    println!("v2 over MQTT 3.1.1, a 20-character text: sender 4 packets, {bytes} B");
    assert!(bytes <= 400, "{bytes} B");
}

#[tokio::test]
async fn reads_and_typing_reach_the_other_side_on_its_user_topic() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("v2b5", "v2s5").await;
    let mut buyer = V5::connect(&server, "v2b5", "buyer", "phone", server.tcp_port).await;
    let mut seller = V5::connect(&server, "v2s5", "seller", "web", server.tcp_port).await;
    let Seen::PubAck(_, props, _) = buyer.send(&thread, "k-1", "alo").await else {
        unreachable!()
    };
    let id = property(&props, "id").unwrap().to_owned();
    let (_, Event::Msg(_)) = seller.event().await else {
        panic!("no msg")
    };
    let read = Command::Read { up_to: id.clone() };
    seller
        .mqtt
        .publish(
            v2::thread(&thread),
            QoS::AtLeastOnce,
            false,
            v2::encode(&read),
        )
        .await
        .unwrap();
    let Some(Seen::PubAck(PubAckReason::Success, ..)) = seller.next().await else {
        panic!("read not acked")
    };
    let (_, Event::Read { user_id, up_to, .. }) = buyer.event().await else {
        panic!("the buyer got no read")
    };
    assert_eq!((user_id.as_str(), up_to.as_str()), ("v2s5", id.as_str()));
    let typing = Command::Typing { active: true };
    seller
        .mqtt
        .publish(
            v2::thread(&thread),
            QoS::AtMostOnce,
            false,
            v2::encode(&typing),
        )
        .await
        .unwrap();
    let (
        _,
        Event::Typing {
            user_id, active, ..
        },
    ) = buyer.event().await
    else {
        panic!("the buyer got no typing")
    };
    assert!(active);
    assert_eq!(user_id, "v2s5");
}

/// With v1 switched off, a v1 client is told so, in the one form it reads.
#[tokio::test]
async fn a_v1_client_gets_unsupported_version_when_v1_is_off() {
    let server = Server::start_with(CHATD, &[("CHAT_MQTT__PROTOCOL_V1", "false")]).await;
    let thread = server.thread_between("v2b6", "v2s6").await;
    let mut old = Client::connect(&server, "v2b6", "buyer", Via::Tcp).await;
    assert!(!old.subscribe(&chat_protocol::topics::thread(&thread)).await);
    // `user/<me>` stays open to v1 clients: it is where they are told.
    assert!(old.subscribe(&chat_protocol::topics::user("v2b6")).await);
    old.publish(
        &chat_protocol::topics::thread_inbound(&thread),
        chat_e2e::v1_send_message("c-1", "chào"),
    )
    .await;
    let (topic, payload) = old.raw(Duration::from_secs(5)).await.expect("an answer");
    assert_eq!(topic, chat_protocol::topics::user("v2b6"));
    let event = chat_protocol::decode_server(&payload).unwrap();
    let chat_protocol::ServerEvent::MessageSentAck { error: Some(e), .. } = event else {
        panic!("not a failed ack: {event:?}")
    };
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert!(
        server
            .text_message_ids("v2b6", "buyer", &thread)
            .await
            .is_empty()
    );
}

/// A connection's publishes are pipelined (`chat_core::pipeline`, rmqtt
/// PATCHED.md §10): with a whole Receive Maximum in flight, the PUBACKs
/// still come back in publish order with ascending ids, the other side
/// gets the messages in that order, the history holds each once, and a
/// retry in the middle of the stream is answered with the first id.
#[tokio::test]
async fn a_full_window_of_sends_is_acked_and_delivered_in_order() {
    const WINDOW: usize = 32; // mqtt.max_inflight, the Receive Maximum
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "1000"),
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "1000"),
        ],
    )
    .await;
    let thread = server.thread_between("pipebuyer", "pipeseller").await;
    let mut buyer = V5::connect(&server, "pipebuyer", "buyer", "phone", server.tcp_port).await;
    let mut seller = V5::connect(&server, "pipeseller", "seller", "web", server.tcp_port).await;
    let publish = |n: usize| {
        let command = Command::Msg {
            client_msg_id: format!("p-{}", n.min(WINDOW - 2)),
            content: format!("tin nhắn số {n}"),
            kind: MessageType::Text,
        };
        v2::encode(&command)
    };
    // The last one repeats the key of the one before: a retry.
    for n in 0..WINDOW {
        buyer
            .mqtt
            .publish(v2::thread(&thread), QoS::AtLeastOnce, false, publish(n))
            .await
            .unwrap();
    }
    let mut acked = Vec::new();
    while acked.len() < WINDOW {
        match buyer.next().await {
            Some(Seen::PubAck(reason, props, _)) => {
                assert_eq!(reason, PubAckReason::Success, "{props:?}");
                acked.push(property(&props, v2::puback::ID).unwrap().to_owned());
            }
            other => panic!("expected PUBACK {} of {WINDOW}, got {other:?}", acked.len()),
        }
    }
    let (first, retry) = (&acked[..WINDOW - 1], &acked[WINDOW - 1]);
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "PUBACKs out of publish order: {first:?}"
    );
    assert_eq!(retry, &first[WINDOW - 2], "the retry names the first copy");
    let mut delivered = Vec::new();
    while delivered.len() < WINDOW - 1 {
        let (_, event) = seller.event().await;
        if let Event::Msg(msg) = event {
            assert_eq!(msg.content, format!("tin nhắn số {}", delivered.len()));
            delivered.push(msg.id);
        }
    }
    assert_eq!(delivered, first, "delivered in publish order");
    assert!(
        seller.quiet_for(Duration::from_millis(500)).await.is_none(),
        "the retry is not delivered again"
    );
    let mut stored = server.text_message_ids("pipebuyer", "buyer", &thread).await;
    stored.sort();
    assert_eq!(stored, first, "each stored once");
}
