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
