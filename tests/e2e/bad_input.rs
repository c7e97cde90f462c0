use std::time::Duration;

use chat_e2e::{Client, Server, Via, send_message};
use chat_protocol::{ErrorCode, ServerEvent, topics};

use crate::CHATD;

fn error_code(_: &str, e: &ServerEvent) -> Option<ErrorCode> {
    match e {
        ServerEvent::Error { error, .. } => Some(error.code),
        ServerEvent::MessageSentAck {
            error: Some(error), ..
        } => Some(error.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_error_events_and_change_nothing() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("b1", "s1").await;
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    assert!(buyer.subscribe("user/b1").await);
    let mut seller = Client::connect(&server, "s1", "seller", Via::Tcp).await;
    assert!(seller.subscribe(&topics::thread(&thread)).await);
    let inbound = topics::thread_inbound(&thread);

    #[derive(serde::Serialize)]
    struct Unknown {
        v: u8,
        event: &'static str,
    }
    let unknown = rmp_serde::to_vec_named(&Unknown {
        v: 1,
        event: "join",
    })
    .unwrap();
    let future = rmp_serde::to_vec_named(&Unknown {
        v: 99,
        event: "typing",
    })
    .unwrap();
    let missing_fields = rmp_serde::to_vec_named(&Unknown {
        v: 1,
        event: "send_message",
    })
    .unwrap();
    let huge = send_message("big", &"a".repeat(40 * 1024));
    let too_long = send_message("long", &"ệ".repeat(4001));
    let empty = send_message("empty", "   ");
    let image = chat_protocol::encode(&chat_protocol::ClientEvent::SendMessage {
        client_msg_id: "img".into(),
        kind: chat_protocol::MessageType::Image,
        content: "upload-1".into(),
    });
    // 800 levels of arrays in a field nobody reads: overflowed the stack of
    // a debug build before the shape check.
    let mut deep = rmp_serde::to_vec_named(&Unknown {
        v: 1,
        event: "typing",
    })
    .unwrap();
    deep[0] = 0x83;
    deep.extend([0xa1, b'x']);
    deep.extend(std::iter::repeat_n(0x91u8, 800));
    deep.push(0x90);
    let array = rmp_serde::to_vec(&(1u8, "send_message", "arr-1", "text", "hi")).unwrap();
    let mut trailing = send_message("trail-1", "chào");
    trailing.push(0xc0);
    let contact_key = send_message("zalo.me/0938471265", "chào shop");
    let invisible = send_message("zw-1", "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}");
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("nested 800 deep", deep, ErrorCode::Malformed),
        ("an array envelope", array, ErrorCode::Malformed),
        ("bytes after the map", trailing, ErrorCode::Malformed),
        (
            "a client_msg_id carrying a link",
            contact_key,
            ErrorCode::InvalidField,
        ),
        (
            "zero-width characters only",
            invisible,
            ErrorCode::InvalidField,
        ),
        (
            "garbage",
            b"\xc1\xff not msgpack".to_vec(),
            ErrorCode::Malformed,
        ),
        (
            "json",
            br#"{"event":"send_message"}"#.to_vec(),
            ErrorCode::Malformed,
        ),
        ("empty payload", vec![], ErrorCode::Malformed),
        ("unknown event", unknown, ErrorCode::UnknownEvent),
        ("future version", future, ErrorCode::UnsupportedVersion),
        ("missing fields", missing_fields, ErrorCode::InvalidField),
        ("oversized payload", huge, ErrorCode::TooLarge),
        ("too many characters", too_long, ErrorCode::TooLarge),
        ("blank text", empty, ErrorCode::InvalidField),
        (
            "an image whose upload does not exist",
            image,
            ErrorCode::InvalidAttachment,
        ),
    ];
    for (what, payload, expected) in cases {
        buyer.publish(&inbound, payload).await;
        let code = buyer.expect(what, error_code).await;
        assert_eq!(code, expected, "{what}");
    }
    // Marking an unknown message read is an error, not a silent no-op.
    buyer
        .publish(
            &inbound,
            chat_protocol::encode(&chat_protocol::ClientEvent::MarkRead {
                up_to: "nope".into(),
            }),
        )
        .await;
    assert_eq!(
        buyer.expect("mark_read error", error_code).await,
        ErrorCode::NotFound
    );

    // Nothing reached the seller, nothing was stored, the connection lives.
    let leaked = seller.drain(Duration::from_millis(500)).await;
    assert!(leaked.is_empty(), "{leaked:?}");
    let (_, page) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &server.token("b1", "buyer"),
            None,
        )
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 0);
    buyer
        .publish(&inbound, send_message("ok-1", "vẫn chạy"))
        .await;
    let ok = buyer
        .expect("ack", |_, e| match e {
            ServerEvent::MessageSentAck {
                client_msg_id,
                message_id,
                ..
            } if client_msg_id == "ok-1" => Some(message_id.clone()),
            _ => None,
        })
        .await;
    assert!(ok.is_some());
}

/// Every refusal of a send whose `client_msg_id` can be read is a failed
/// `message_sent_ack` naming it (the outbox settles it), whatever the
/// reason: bad fields, an unknown or forbidden type, too large, too fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_readable_send_are_acks_naming_it() {
    let server = Server::start_with(
        CHATD,
        &[
            // sys-1, ok-1 and ok-2 decode and spend it; fast-1 is over.
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "3"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_PER_MINUTE", "1"),
        ],
    )
    .await;
    let thread = server.thread_between("b2", "s2").await;
    let mut buyer = Client::connect(&server, "b2", "buyer", Via::Tcp).await;
    assert!(buyer.subscribe("user/b2").await);
    let inbound = topics::thread_inbound(&thread);
    #[derive(serde::Serialize)]
    struct Send<'a> {
        v: u8,
        event: &'a str,
        client_msg_id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        content: &'a str,
    }
    let send = |cmid: &'static str, kind: &'static str, content: &str| {
        rmp_serde::to_vec_named(&Send {
            v: 1,
            event: "send_message",
            client_msg_id: cmid,
            kind,
            content,
        })
        .unwrap()
    };
    let cases = [
        (
            "vid-1",
            send("vid-1", "video", "x"),
            ErrorCode::UnsupportedType,
        ),
        (
            "sys-1",
            send("sys-1", "system", "x"),
            ErrorCode::InvalidField,
        ),
        (
            "big-1",
            send("big-1", "text", &"a".repeat(40 * 1024)),
            ErrorCode::TooLarge,
        ),
        ("ok-1", send("ok-1", "text", "một"), ErrorCode::Unavailable),
        ("ok-2", send("ok-2", "text", "hai"), ErrorCode::Unavailable),
        (
            "fast-1",
            send("fast-1", "text", "ba"),
            ErrorCode::RateLimited,
        ),
    ];
    for (cmid, payload, expected) in cases {
        buyer.publish(&inbound, payload).await;
        let (code, retry) = buyer
            .expect(cmid, |_, e| match e {
                ServerEvent::MessageSentAck {
                    client_msg_id,
                    error,
                    ..
                } if client_msg_id == cmid => {
                    Some(error.as_ref().map(|e| (e.code, e.retry_after_ms)))
                }
                ServerEvent::Error { reference, .. } => {
                    panic!("{cmid}: an error event (reference {reference:?}), not an ack")
                }
                _ => None,
            })
            .await
            .map_or((ErrorCode::Unavailable, None), |e| e);
        // `Unavailable` stands for "stored": no error in the ack.
        assert_eq!(code, expected, "{cmid}");
        if expected == ErrorCode::RateLimited {
            assert!(
                retry.is_some_and(|r| r > 0),
                "{cmid}: retry_after_ms {retry:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_above_the_broker_limit_closes_only_that_connection() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("b1", "s1").await;
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    buyer
        .mqtt
        .publish(
            topics::thread_inbound(&thread),
            rumqttc::QoS::AtLeastOnce,
            false,
            vec![0u8; 512 * 1024],
        )
        .await
        .unwrap();
    assert!(
        buyer.closed(Duration::from_secs(10)).await.is_some(),
        "a 512 KiB packet must be refused"
    );
    // The server is still up for everyone else.
    let mut seller = Client::connect(&server, "s1", "seller", Via::Tcp).await;
    assert!(seller.subscribe("user/s1").await);
}
