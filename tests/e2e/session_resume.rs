//! A phone on a flaky network keeps a persistent MQTT session
//! (`clean_session = false`) and acknowledges a message only once it has
//! it safely on screen. When the connection dies with messages received
//! but not acknowledged, the broker sends them again on resume — in the
//! order they were first sent, then what queued while the phone was away
//! (MQTT-4.6.0-1; rmqtt 0.24.0 resent them newest first,
//! `vendor/rmqtt/PATCHED.md` §4).

use std::time::Duration;

use chat_e2e::{Client, Server, Via, options};
use chat_protocol::v2;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};

use crate::CHATD;

/// Polls until CONNACK; returns whether the broker had the session.
async fn connected(events: &mut EventLoop) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
                return ack.session_present;
            }
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
}

/// The next `count` `msg` publishes on `topic`, unacknowledged.
async fn msgs(events: &mut EventLoop, topic: &str, count: usize) -> Vec<(String, Publish)> {
    let mut out = Vec::new();
    while out.len() < count {
        let Ok(polled) = tokio::time::timeout(Duration::from_secs(10), events.poll()).await else {
            panic!("only {} of {count} messages", out.len());
        };
        let event = polled.expect("connection");
        if let Event::Incoming(Packet::Publish(p)) = event
            && p.topic == topic
            && let Ok(v2::Event::Msg(message)) = v2::decode_event(&p.payload)
        {
            out.push((message.id, p));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_gets_unacked_messages_again_in_order_then_the_queued_ones() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("rb", "rs").await;
    let inbox = v2::user("rb");
    let mut seller = Client::connect(&server, "rs", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    let token = server.token("rb", "buyer");
    let phone = || {
        let mut opts = options(&server, "rb:phone", "rb", &token, Via::Tcp);
        opts.set_clean_session(false).set_manual_acks(true);
        opts
    };
    let (buyer, mut events) = AsyncClient::new(phone(), 64);
    assert!(!connected(&mut events).await, "a new session");
    buyer.subscribe(&inbox, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }

    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(
            seller
                .send_text(&thread, &format!("r{i}"), &format!("tin {i}"))
                .await
                .unwrap(),
        );
    }
    let first: Vec<String> = msgs(&mut events, &inbox, 6)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(first, sent, "live, in order");
    // The network goes: no DISCONNECT, nothing acknowledged.
    drop(buyer);
    drop(events);
    // Meanwhile the seller goes on.
    for i in 6..9 {
        sent.push(
            seller
                .send_text(&thread, &format!("r{i}"), &format!("tin {i}"))
                .await
                .unwrap(),
        );
    }

    let (buyer, mut events) = AsyncClient::new(phone(), 64);
    assert!(connected(&mut events).await, "the session was kept");
    let again = msgs(&mut events, &inbox, 9).await;
    let ids: Vec<String> = again.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids, sent,
        "the six unacknowledged again, in their order, then the three queued"
    );
    assert!(again[..6].iter().all(|(_, p)| p.dup), "resent ones are DUP");
    for (_, publish) in &again {
        buyer.ack(publish).await.unwrap();
    }
    // Acknowledged now: a second resume brings nothing back.
    let _ = buyer.disconnect().await;
    // The acks, then the DISCONNECT, go out as the event loop turns.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    drop(events);
    let (_buyer, mut events) = AsyncClient::new(phone(), 64);
    assert!(connected(&mut events).await);
    let nothing = tokio::time::timeout(Duration::from_secs(2), msgs(&mut events, &inbox, 1)).await;
    assert!(nothing.is_err(), "nothing owed any more");
}

/// QoS 0 events are for the moment: a persistent session that was offline
/// gets the messages it missed (QoS 1), not the `typing` of that time (a
/// typing indicator, and v1's five stale `thread_updated`, were replayed
/// before; `vendor/rmqtt/PATCHED.md` §5). v2 has no per-message inbox
/// event at all: nothing but the messages comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_session_gets_the_missed_messages_not_stale_qos0_events() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("qb", "qs").await;
    let token = server.token("qb", "buyer");
    let phone = || {
        let mut opts = options(&server, "qb:phone", "qb", &token, Via::Tcp);
        opts.set_clean_session(false);
        opts
    };
    let connect = |opts| async move {
        match Client::try_connect(opts, "qb").await {
            chat_e2e::Connect::Accepted(c) => c,
            chat_e2e::Connect::Refused(why) => panic!("{why}"),
        }
    };
    let mut buyer = connect(phone()).await;
    buyer.subscribe_inbox().await;
    buyer.disconnect().await;

    let mut seller = Client::connect(&server, "qs", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    seller.typing(&thread, true).await;
    for i in 0..5 {
        seller
            .send_text(&thread, &format!("q{i}"), &format!("tin {i}"))
            .await
            .unwrap();
    }

    let mut buyer = connect(phone()).await;
    let replayed = buyer.drain(Duration::from_secs(2)).await;
    let news = replayed
        .iter()
        .filter(|(_, e)| matches!(e, v2::Event::Msg(_)))
        .count();
    let stale: Vec<&v2::Event> = replayed
        .iter()
        .map(|(_, e)| e)
        .filter(|e| !matches!(e, v2::Event::Msg(_)))
        .collect();
    assert_eq!(news, 5, "the missed messages: {replayed:?}");
    assert!(
        stale.is_empty(),
        "stale QoS 0 (or per-message) events replayed: {stale:?}"
    );
    // Live QoS 0 events still arrive once connected (`false` first: it
    // resets the typing throttle of the first `true`).
    seller.typing(&thread, false).await;
    seller.typing(&thread, true).await;
    buyer
        .expect("a live typing", |_, e| {
            matches!(e, v2::Event::Typing { user_id, active: true, .. } if user_id == "qs")
                .then_some(())
        })
        .await;
}

/// An offline session holds a bounded number of bytes, not only of
/// messages: 30 messages of ~6 KB for a session bounded to 64 KiB keep
/// the newest few (an abusive correspondent cannot pin megabytes per
/// victim); the rest are in history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_session_holds_a_bounded_number_of_bytes() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_MQTT__MAX_MQUEUE_BYTES", "65536"),
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "1000"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "1000"),
        ],
    )
    .await;
    let thread = server.thread_between("bb", "bs").await;
    let token = server.token("bb", "buyer");
    let phone = || {
        let mut opts = options(&server, "bb:phone", "bb", &token, Via::Tcp);
        opts.set_clean_session(false);
        opts
    };
    let connect = |opts| async move {
        match Client::try_connect(opts, "bb").await {
            chat_e2e::Connect::Accepted(c) => c,
            chat_e2e::Connect::Refused(why) => panic!("{why}"),
        }
    };
    let mut buyer = connect(phone()).await;
    buyer.subscribe_inbox().await;
    buyer.disconnect().await;

    let mut seller = Client::connect(&server, "bs", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    // 4000 characters, a few of them two or three bytes: ~5.2 KB each as
    // a v2 `msg` (v1's message_new was ~5.4 KB), so a dozen fit in 64 KiB
    // (30 without the bound).
    let long = "Shop gửi bạn thông tin chi tiết về sản phẩm. ".repeat(90);
    let long: String = long.chars().take(4000).collect();
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(
            seller
                .send_text(&thread, &format!("b{i}"), &long)
                .await
                .unwrap(),
        );
    }

    let mut buyer = connect(phone()).await;
    let messages: Vec<v2::Msg> = buyer
        .drain(Duration::from_secs(3))
        .await
        .into_iter()
        .filter_map(|(_, e)| match e {
            v2::Event::Msg(message) => Some(message),
            _ => None,
        })
        .collect();
    // The queue weighs a message as payload + topic + 128 bytes
    // (vendor/rmqtt/PATCHED.md §7).
    let first = messages.first().expect("some messages replayed").clone();
    let weight = v2::encode(&v2::Event::Msg(first)).len() + "u/bb".len() + 128;
    let fit = 65536 / weight;
    let replayed: Vec<String> = messages.into_iter().map(|m| m.id).collect();
    assert!(
        (fit - 2..=fit).contains(&replayed.len()),
        "{} messages replayed for a 64 KiB session ({weight} B each: {fit} fit)",
        replayed.len()
    );
    assert_eq!(
        replayed,
        sent[sent.len() - replayed.len()..],
        "the newest ones, in order"
    );
    // The others are in history, as always.
    let stored = server.text_message_ids("bb", "buyer", &thread).await;
    assert_eq!(stored.len(), 30);
}
