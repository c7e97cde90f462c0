//! The wire contract as fixtures for clients in other languages: one
//! envelope of every event (and every card), as MessagePack hex and as the
//! JSON of the same value. `web/sdk` decodes each with its TypeScript
//! codec and must get the JSON back, and checks it against its types, so
//! the two cannot drift: a change here changes the file, and this test
//! fails until it is regenerated
//! (`CHAT_UPDATE_FIXTURES=1 cargo test -p chat-protocol --test fixtures`),
//! which in turn makes the SDK's tests check the new shape.

use chat_protocol::*;
use serde_json::{Value, json};

fn message(card: Option<Card>, kind: MessageType) -> Message {
    Message {
        id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        thread_id: "t_01".into(),
        from: "buyer-1".into(),
        kind,
        content: "Shop ơi còn hàng không?".into(),
        card,
        client_msg_id: Some("c-1".into()),
        created_at: 1_795_717_800_000,
    }
}

fn client_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "client/send_message",
            encode(&ClientEvent::SendMessage {
                client_msg_id: "c-1".into(),
                kind: MessageType::Text,
                content: "xin chào".into(),
            }),
        ),
        (
            "client/mark_read",
            encode(&ClientEvent::MarkRead { up_to: "m1".into() }),
        ),
        (
            "client/typing",
            encode(&ClientEvent::Typing { active: true }),
        ),
    ]
}

fn server_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let cards = [
        ("server/message_new/text", None, MessageType::Text),
        (
            "server/message_new/product",
            Some(Card::Product {
                product_id: "p1".into(),
                title: "Áo thun".into(),
                price: 150_000,
                currency: "VND".into(),
                image_url: None,
            }),
            MessageType::System,
        ),
        (
            "server/message_new/order",
            Some(Card::Order {
                order_id: "o1".into(),
                summary: "2 món".into(),
            }),
            MessageType::System,
        ),
        (
            "server/message_new/notice",
            Some(Card::Notice {
                code: "blocked".into(),
                text: "Cuộc trò chuyện đã bị chặn".into(),
            }),
            MessageType::System,
        ),
        (
            "server/message_new/image",
            Some(Card::Image {
                width: 64,
                height: 48,
                mime: "image/jpeg".into(),
                thumb_width: 64,
                thumb_height: 48,
                image_key: "images/t_01/u1.jpg".into(),
                thumb_key: "images/t_01/u1-thumb.jpg".into(),
                url: Some("https://files.example/x".into()),
                thumb_url: Some("https://files.example/y".into()),
            }),
            MessageType::Image,
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for (name, card, kind) in cards {
        out.push((
            name,
            encode(&ServerEvent::MessageNew {
                message: message(card, kind),
            }),
        ));
    }
    let events = [
        (
            "server/message_sent_ack/ok",
            ServerEvent::MessageSentAck {
                client_msg_id: "c-1".into(),
                thread_id: "t_01".into(),
                message_id: Some("m1".into()),
                created_at: Some(1),
                error: None,
            },
        ),
        (
            "server/message_sent_ack/error",
            ServerEvent::MessageSentAck {
                client_msg_id: "c-2".into(),
                thread_id: "t_01".into(),
                message_id: None,
                created_at: None,
                error: Some(ErrorBody {
                    code: ErrorCode::RateLimited,
                    message: "Bạn gửi quá nhanh".into(),
                    retry_after_ms: Some(850),
                }),
            },
        ),
        (
            "server/message_read",
            ServerEvent::MessageRead {
                thread_id: "t_01".into(),
                user_id: "seller-1".into(),
                up_to: "m1".into(),
                read_at: 2,
            },
        ),
        (
            "server/typing",
            ServerEvent::Typing {
                thread_id: "t_01".into(),
                user_id: "seller-1".into(),
                active: false,
            },
        ),
        (
            "server/thread_updated",
            ServerEvent::ThreadUpdated {
                thread: ThreadState {
                    thread_id: "t_01".into(),
                    buyer_id: "buyer-1".into(),
                    seller_id: "seller-1".into(),
                    product_id: Some("p1".into()),
                    order_id: None,
                    last_message: Some(MessagePreview {
                        message_id: "m1".into(),
                        from: "buyer-1".into(),
                        kind: MessageType::Text,
                        text: "Shop ơi".into(),
                        created_at: 1,
                    }),
                    last_message_at: Some(1),
                    unread_buyer: 0,
                    unread_seller: 3,
                },
            },
        ),
        (
            "server/moderation_notice",
            ServerEvent::ModerationNotice {
                code: "content_masked".into(),
                message: "Thông tin liên hệ đã được ẩn".into(),
                thread_id: "t_01".into(),
                client_msg_id: "c-1".into(),
                message_id: "m1".into(),
                categories: vec!["phone".into()],
            },
        ),
        (
            "server/error",
            ServerEvent::Error {
                error: ErrorBody {
                    code: ErrorCode::Forbidden,
                    message: "Bạn không có quyền".into(),
                    retry_after_ms: None,
                },
                topic: Some("thread/t_99/in".into()),
                reference: None,
            },
        ),
    ];
    for (name, event) in events {
        out.push((name, encode(&event)));
    }
    out
}

#[test]
fn the_sdk_fixtures_match_the_protocol() {
    for (name, bytes) in client_fixtures() {
        assert!(decode_client(&bytes).is_ok(), "{name}");
    }
    for (name, bytes) in server_fixtures() {
        assert!(decode_server(&bytes).is_ok(), "{name}");
    }
    let rendered: Vec<Value> = client_fixtures()
        .into_iter()
        .chain(server_fixtures())
        .map(|(name, bytes)| {
            let as_json: Value = rmp_serde::from_slice(&bytes).expect("a MessagePack map");
            json!({
                "name": name,
                "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "json": as_json,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&rendered).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../web/sdk/test/fixtures/envelopes.json");
    if std::env::var("CHAT_UPDATE_FIXTURES").is_ok() {
        std::fs::write(&path, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "web/sdk/test/fixtures/envelopes.json is out of date: run \
         CHAT_UPDATE_FIXTURES=1 cargo test -p chat-protocol --test fixtures"
    );
}

/// Protocol v2: one of every command and event (and every card), written
/// to `web/sdk/test/fixtures/v2.json` for the SDK, and checked against
/// `docs/asyncapi.yaml` by `scripts/asyncapi-check.sh`.
/// A message id as the server makes them (UUIDv7).
const M1: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

fn v2_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    use chat_protocol::v2::{self, Command, Event};
    let msg = |card: Option<Card>, kind: MessageType, own: bool| {
        Event::Msg(v2::Msg {
            thread_id: "t_01".into(),
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            from: (kind != MessageType::System).then(|| "buyer-1".to_owned()),
            kind,
            content: if card.is_some() && kind == MessageType::System {
                String::new()
            } else {
                "Shop ơi còn hàng không?".into()
            },
            card,
            created_at: 1_795_717_800_000,
            client_msg_id: own.then(|| "c-1".to_owned()),
            unread: if own { 0 } else { 1 },
        })
    };
    let image = Card::Image {
        width: 64,
        height: 48,
        mime: "image/jpeg".into(),
        thumb_width: 64,
        thumb_height: 48,
        image_key: "images/t_01/u1.jpg".into(),
        thumb_key: "images/t_01/u1-thumb.jpg".into(),
        url: Some("https://files.example/x".into()),
        thumb_url: Some("https://files.example/y".into()),
    };
    let commands = [
        (
            "client/msg",
            Command::Msg {
                client_msg_id: "c-1".into(),
                content: "xin chào".into(),
                kind: MessageType::Text,
            },
        ),
        (
            "client/msg/image",
            Command::Msg {
                client_msg_id: "c-2".into(),
                content: "up_01".into(),
                kind: MessageType::Image,
            },
        ),
        ("client/read", Command::Read { up_to: M1.into() }),
        ("client/typing", Command::Typing { active: true }),
    ];
    let events = [
        ("server/msg/text", msg(None, MessageType::Text, false)),
        ("server/msg/own", msg(None, MessageType::Text, true)),
        (
            "server/msg/product",
            msg(
                Some(Card::Product {
                    product_id: "p1".into(),
                    title: "Áo thun".into(),
                    price: 150_000,
                    currency: "VND".into(),
                    image_url: None,
                }),
                MessageType::System,
                false,
            ),
        ),
        (
            "server/msg/order",
            msg(
                Some(Card::Order {
                    order_id: "o1".into(),
                    summary: "2 món".into(),
                }),
                MessageType::System,
                false,
            ),
        ),
        (
            "server/msg/notice",
            msg(
                Some(Card::Notice {
                    code: "blocked".into(),
                    text: "Cuộc trò chuyện đã bị chặn".into(),
                }),
                MessageType::System,
                false,
            ),
        ),
        (
            "server/msg/image",
            msg(Some(image), MessageType::Image, false),
        ),
        (
            "server/ack/stored",
            Event::Ack {
                thread_id: "t_01".into(),
                client_msg_id: "c-1".into(),
                id: Some(M1.into()),
                created_at: Some(1),
                err: None,
            },
        ),
        (
            "server/ack/error",
            Event::Ack {
                thread_id: "t_01".into(),
                client_msg_id: "c-2".into(),
                id: None,
                created_at: None,
                err: Some(v2::Err {
                    code: ErrorCode::RateLimited,
                    msg: "Bạn gửi quá nhanh".into(),
                    retry: Some(850),
                }),
            },
        ),
        (
            "server/read",
            Event::Read {
                thread_id: "t_01".into(),
                user_id: "seller-1".into(),
                up_to: M1.into(),
                read_at: 2,
                unread: None,
            },
        ),
        (
            "server/read/own",
            Event::Read {
                thread_id: "t_01".into(),
                user_id: "seller-1".into(),
                up_to: M1.into(),
                read_at: 2,
                unread: Some(0),
            },
        ),
        (
            "server/typing",
            Event::Typing {
                thread_id: "t_01".into(),
                user_id: "seller-1".into(),
                active: true,
            },
        ),
        (
            "server/typing/stopped",
            Event::Typing {
                thread_id: "t_01".into(),
                user_id: "seller-1".into(),
                active: false,
            },
        ),
        (
            "server/thread",
            Event::Thread(v2::ThreadRow {
                thread_id: "t_01".into(),
                buyer: "buyer-1".into(),
                seller: "seller-1".into(),
                product: Some("p1".into()),
                order: None,
                last: Some(v2::Preview {
                    id: M1.into(),
                    from: Some("buyer-1".into()),
                    kind: MessageType::Text,
                    text: "Shop ơi".into(),
                    created_at: 1,
                }),
                unread: 3,
            }),
        ),
        (
            "server/masked",
            Event::Masked {
                thread_id: "t_01".into(),
                client_msg_id: "c-1".into(),
                id: M1.into(),
                content: "gọi mình số ***".into(),
                cats: vec!["phone".into()],
                msg: "Thông tin liên hệ đã được ẩn".into(),
            },
        ),
        (
            "server/error",
            Event::Error {
                code: ErrorCode::Forbidden,
                msg: "Bạn không có quyền".into(),
                retry: None,
                topic: Some("t/t_99".into()),
                reference: None,
            },
        ),
    ];
    commands
        .into_iter()
        .map(|(name, c)| (name, v2::encode(&c)))
        .chain(events.into_iter().map(|(name, e)| (name, v2::encode(&e))))
        .collect()
}

#[test]
fn the_v2_fixtures_match_the_protocol() {
    for (name, bytes) in v2_fixtures() {
        let decoded = if name.starts_with("client/") {
            chat_protocol::v2::decode_command(&bytes).map(|_| ())
        } else {
            chat_protocol::v2::decode_event(&bytes).map(|_| ())
        };
        assert!(decoded.is_ok(), "{name}: {decoded:?}");
    }
    let rendered: Vec<Value> = v2_fixtures()
        .into_iter()
        .map(|(name, bytes)| {
            let as_json: Value = rmp_serde::from_slice(&bytes).expect("a MessagePack map");
            json!({
                "name": name,
                "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "json": as_json,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&rendered).unwrap() + "\n";
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/sdk/test/fixtures/v2.json");
    if std::env::var("CHAT_UPDATE_FIXTURES").is_ok() {
        std::fs::write(&path, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "web/sdk/test/fixtures/v2.json is out of date: run \
         CHAT_UPDATE_FIXTURES=1 cargo test -p chat-protocol --test fixtures"
    );
}
