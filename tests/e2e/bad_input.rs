use std::time::Duration;

use chat_e2e::{Client, Server, Via, send_message};
use chat_protocol::ErrorCode;
use chat_protocol::v2::{self, Event};

use crate::CHATD;

/// The code of the first refusal: an `error`, or an `ack` with `err`.
fn error_code(_: &str, e: &Event) -> Option<ErrorCode> {
    match e {
        Event::Error { code, .. } => Some(*code),
        Event::Ack { err: Some(err), .. } => Some(err.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_error_events_and_change_nothing() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("b1", "s1").await;
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(&server, "s1", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let commands = v2::thread(&thread);

    #[derive(serde::Serialize)]
    struct Named {
        e: &'static str,
    }
    let unknown = rmp_serde::to_vec_named(&Named { e: "join" }).unwrap();
    let missing_fields = rmp_serde::to_vec_named(&Named { e: "msg" }).unwrap();
    // v2 has no version key (the topic is the version): a v1 envelope,
    // `v` and `event` and all, is no v2 command. (v1's "future version"
    // case has no v2 equivalent.)
    let v1_envelope = chat_e2e::v1_send_message("v1-1", "chào");
    let huge = send_message("big", &"a".repeat(40 * 1024));
    let too_long = send_message("long", &"ệ".repeat(4001));
    let empty = send_message("empty", "   ");
    let image = v2::encode(&v2::Command::Msg {
        client_msg_id: "img".into(),
        content: "upload-1".into(),
        kind: chat_protocol::MessageType::Image,
    });
    // 800 levels of arrays in a field nobody reads: overflowed the stack of
    // a debug build before the shape check.
    let mut deep = v2::encode(&v2::Command::Typing { active: true });
    assert_eq!(deep[0], 0x82, "a map of two");
    deep[0] = 0x83;
    deep.extend([0xa1, b'x']);
    deep.extend(std::iter::repeat_n(0x91u8, 800));
    deep.push(0x90);
    let array = rmp_serde::to_vec(&("msg", "arr-1", "hi")).unwrap();
    let mut trailing = send_message("trail-1", "chào");
    trailing.push(0xc0);
    let contact_key = send_message("zalo.me/0938471265", "chào shop");
    let invisible = send_message("zw-1", "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}");
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("nested 800 deep", deep, ErrorCode::Malformed),
        ("an array envelope", array, ErrorCode::Malformed),
        ("bytes after the map", trailing, ErrorCode::Malformed),
        (
            "a key carrying a link",
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
            br#"{"e":"msg","k":"j-1","b":"hi"}"#.to_vec(),
            ErrorCode::Malformed,
        ),
        ("empty payload", vec![], ErrorCode::Malformed),
        ("unknown event", unknown, ErrorCode::UnknownEvent),
        ("a v1 envelope", v1_envelope, ErrorCode::Malformed),
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
        buyer.publish(&commands, payload).await;
        let code = buyer.expect(what, error_code).await;
        assert_eq!(code, expected, "{what}");
    }
    // Marking an unknown message read is an error, not a silent no-op.
    buyer.read(&thread, "nope").await;
    let (code, reference) = buyer
        .expect("read error", |_, e| match e {
            Event::Error {
                code, reference, ..
            } => Some((*code, reference.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        (code, reference.as_deref()),
        (ErrorCode::NotFound, Some("read"))
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
        .send_text(&thread, "ok-1", "vẫn chạy")
        .await
        .expect("stored");
}

/// Every refusal of a send whose key can be read is an `ack` naming it
/// (the outbox settles it), whatever the reason: bad fields, an unknown or
/// forbidden type, too large, too fast.
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
    buyer.subscribe_inbox().await;
    let commands = v2::thread(&thread);
    #[derive(serde::Serialize)]
    struct Send<'a> {
        e: &'a str,
        k: &'a str,
        t: &'a str,
        b: &'a str,
    }
    let send = |k: &'static str, t: &'static str, b: &str| {
        rmp_serde::to_vec_named(&Send { e: "msg", k, t, b }).unwrap()
    };
    let cases = [
        (
            "vid-1",
            send("vid-1", "video", "x"),
            Some(ErrorCode::UnsupportedType),
        ),
        (
            "sys-1",
            send("sys-1", "system", "x"),
            Some(ErrorCode::InvalidField),
        ),
        (
            "big-1",
            send("big-1", "text", &"a".repeat(40 * 1024)),
            Some(ErrorCode::TooLarge),
        ),
        ("ok-1", send("ok-1", "text", "một"), None),
        ("ok-2", send("ok-2", "text", "hai"), None),
        (
            "fast-1",
            send("fast-1", "text", "ba"),
            Some(ErrorCode::RateLimited),
        ),
    ];
    for (k, payload, expected) in cases {
        buyer.publish(&commands, payload).await;
        let refusal = buyer
            .expect(k, |_, e| match e {
                // Stored: the sender's own copy answers.
                Event::Msg(m) if m.client_msg_id.as_deref() == Some(k) => Some(None),
                Event::Ack {
                    client_msg_id, err, ..
                } if client_msg_id == k => {
                    let err = err
                        .as_ref()
                        .unwrap_or_else(|| panic!("{k}: an ack without err"));
                    Some(Some((err.code, err.retry)))
                }
                Event::Error { reference, .. } => {
                    panic!("{k}: an error event (reference {reference:?}), not an ack")
                }
                _ => None,
            })
            .await;
        assert_eq!(refusal.map(|(code, _)| code), expected, "{k}");
        if expected == Some(ErrorCode::RateLimited) {
            let retry = refusal.and_then(|(_, retry)| retry);
            assert!(retry.is_some_and(|r| r > 0), "{k}: retry {retry:?}");
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
            v2::thread(&thread),
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
    seller.subscribe_inbox().await;
}

/// A WebSocket frame announcing more than one MQTT packet may hold is
/// refused from its header: the server closes the connection instead of
/// buffering megabytes (tungstenite's default would wait for up to 16 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_frame_above_the_packet_limit_is_refused_from_its_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start(CHATD).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.ws_port))
        .await
        .unwrap();
    let upgrade = format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        server.ws_port
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "upgrade answered");
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");

    // FIN + binary, masked, 64-bit length of 8 MiB, then the mask: no payload.
    let mut header = vec![0x82, 0xFF];
    header.extend_from_slice(&(8u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();

    let mut rest = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut rest).await {
                // A close frame may come first; the socket then ends.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection must be closed on the frame's header, not kept waiting for 8 MiB"
    );
}
