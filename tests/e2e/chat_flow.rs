use std::time::Duration;

use chat_e2e::{Client, PLATFORM, Server, Via};
use chat_protocol::MessageType;
use chat_protocol::v2::Event;
use serde_json::json;

use crate::CHATD;

async fn history(server: &Server, token: &str, thread: &str, query: &str) -> serde_json::Value {
    let (status, body) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages{query}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `(unreadBuyer, unreadSeller)` of the caller's first inbox row.
async fn unread_counts(server: &Server, token: &str) -> (u64, u64) {
    let (status, inbox) = server.request("GET", "/chat/threads", token, None).await;
    assert_eq!(status, 200, "{inbox}");
    let row = &inbox["threads"][0];
    (
        row["unreadBuyer"].as_u64().unwrap(),
        row["unreadSeller"].as_u64().unwrap(),
    )
}

async fn chat_flow(via: Via) {
    chat_flow_on(Server::start(CHATD).await, via).await;
}

/// The whole product path on a given server (any store backend).
pub async fn chat_flow_on(server: Server, via: Via) {
    let thread = server.thread_between("buyer-a", "seller-a").await;
    let mut buyer = Client::connect(&server, "buyer-a", "buyer", via).await;
    let mut seller = Client::connect(&server, "seller-a", "seller", via).await;
    // One subscription each: every thread's events come on `u/<me>`.
    buyer.subscribe_inbox().await;
    seller.subscribe_inbox().await;
    let seller_token = server.token("seller-a", "seller");
    let buyer_token = server.token("buyer-a", "buyer");

    // Send: the answer (the sender's own copy) only after the message is stored.
    let message_id = buyer
        .send_text(&thread, "c-1", "Shop ơi, áo còn size M không?")
        .await
        .expect("stored");
    let stored = history(&server, &seller_token, &thread, "").await;
    assert_eq!(
        ids(&stored),
        vec![message_id.clone()],
        "acked message must already be stored"
    );

    // Delivery to the other participant, with the seller's unread count.
    let delivered = seller
        .expect("the buyer's msg", |_, e| match e {
            Event::Msg(m) if m.kind == MessageType::Text => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(delivered.id, message_id);
    assert_eq!(delivered.thread_id, thread);
    assert_eq!(delivered.from.as_deref(), Some("buyer-a"));
    assert_eq!(delivered.content, "Shop ơi, áo còn size M không?");
    assert_eq!(delivered.unread, 1, "the seller's unread count");
    // v2 has no thread_updated per message: the inbox row follows from
    // the msg, and REST says the same.
    assert_eq!(unread_counts(&server, &seller_token).await, (0, 1));

    // A retry with the same key: the same id (an `ack`), nothing new.
    assert_eq!(
        buyer
            .send_text(&thread, "c-1", "Shop ơi, áo còn size M không?")
            .await
            .expect("a retry of a stored message"),
        message_id
    );
    let extra = seller.drain(Duration::from_millis(800)).await;
    assert!(
        !extra.iter().any(|(_, e)| matches!(e, Event::Msg(_))),
        "a retry was delivered again: {extra:?}"
    );
    assert_eq!(
        ids(&history(&server, &seller_token, &thread, "").await).len(),
        1
    );

    // Typing: relayed to the other side at most once per throttle window, never stored.
    for _ in 0..3 {
        seller.typing(&thread, true).await;
    }
    let typing: Vec<_> = buyer
        .drain(Duration::from_millis(800))
        .await
        .into_iter()
        .filter(|(_, e)| {
            matches!(e, Event::Typing { thread_id, user_id, active: true } if user_id == "seller-a" && *thread_id == thread)
        })
        .collect();
    assert_eq!(typing.len(), 1, "typing must be throttled to one relay");
    assert_eq!(
        history(&server, &seller_token, &thread, "").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Read receipt: the buyer sees `read`, the seller's own devices get
    // its unread count, down to 0.
    seller.read(&thread, &message_id).await;
    let read_up_to = buyer
        .expect("read", |_, e| match e {
            Event::Read {
                thread_id,
                user_id,
                up_to,
                unread,
                ..
            } if user_id == "seller-a" && *thread_id == thread => {
                assert_eq!(*unread, None, "the reader's count is the reader's");
                Some(up_to.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(read_up_to, message_id);
    let after_read = seller
        .expect("the seller's own read", |_, e| match e {
            Event::Read {
                user_id, unread, ..
            } if user_id == "seller-a" => Some(*unread),
            _ => None,
        })
        .await;
    assert_eq!(after_read, Some(0));
    let (_, inbox) = server
        .request("GET", "/chat/threads", &seller_token, None)
        .await;
    assert_eq!(inbox["threads"][0]["unreadCount"], 0);
    assert_eq!(inbox["threads"][0]["otherDisplayName"], "Tên buyer-a");

    // The seller answers; the buyer's unread count rises.
    let reply_id = seller
        .send_text(&thread, "s-1", "Dạ còn ạ")
        .await
        .expect("stored");
    let buyer_unread = buyer
        .expect("the seller's reply", |_, e| match e {
            Event::Msg(m) if m.from.as_deref() == Some("seller-a") => {
                assert_eq!(m.id, reply_id);
                assert_eq!(m.client_msg_id, None, "the key is the sender's");
                Some(m.unread)
            }
            _ => None,
        })
        .await;
    assert_eq!(buyer_unread, 1);
    let (_, inbox) = server
        .request("GET", "/chat/threads", &buyer_token, None)
        .await;
    assert_eq!(inbox["threads"][0]["unreadCount"], 1);
    assert_eq!(inbox["threads"][0]["lastMessage"]["text"], "Dạ còn ạ");

    // Seller Center and web pages mark read over REST: same rules, same events.
    let (status, read) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/read"),
            &buyer_token,
            Some(serde_json::json!({"upTo": reply_id})),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["unreadCount"], 0);
    let seen_by_seller = seller
        .expect("read from REST", |_, e| match e {
            Event::Read { user_id, up_to, .. } if user_id == "buyer-a" => Some(up_to.clone()),
            _ => None,
        })
        .await;
    assert_eq!(seen_by_seller, reply_id);
    // The buyer's devices are told too, with its unread count.
    let own = buyer
        .expect("the buyer's own read from REST", |_, e| match e {
            Event::Read {
                user_id, unread, ..
            } if user_id == "buyer-a" => Some(*unread),
            _ => None,
        })
        .await;
    assert_eq!(own, Some(0));
    // After a reload, history says how far each side has read ("Đã xem").
    let page = history(&server, &seller_token, &thread, "").await;
    let marker_of = |user: &str| {
        page["readMarkers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["userId"] == user)
            .cloned()
            .unwrap_or_else(|| panic!("no marker for {user}: {page}"))
    };
    assert_eq!(marker_of("buyer-a")["upTo"], reply_id.as_str());
    assert!(marker_of("buyer-a")["readAt"].as_i64().unwrap() > 0);
    assert_eq!(marker_of("seller-a")["upTo"], reply_id.as_str());

    // History, keyset pagination in both directions.
    for i in 0..5 {
        buyer
            .send_text(&thread, &format!("p-{i}"), &format!("tin {i}"))
            .await
            .expect("stored");
    }
    let all = ids(&history(&server, &buyer_token, &thread, "?limit=100").await);
    assert_eq!(all.len(), 7);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "history is oldest first, ids time-ordered");
    let newest = history(&server, &buyer_token, &thread, "?limit=3").await;
    assert_eq!(ids(&newest), all[4..7]);
    assert_eq!(newest["hasMore"], true);
    let older = history(
        &server,
        &buyer_token,
        &thread,
        &format!("?limit=3&before={}", all[4]),
    )
    .await;
    assert_eq!(ids(&older), all[1..4]);
    let newer = history(
        &server,
        &buyer_token,
        &thread,
        &format!("?limit=3&after={}", all[1]),
    )
    .await;
    assert_eq!(ids(&newer), all[2..5]);
    assert_eq!(newer["hasMore"], true);
    let tail = history(
        &server,
        &buyer_token,
        &thread,
        &format!("?limit=3&after={}", all[4]),
    )
    .await;
    assert_eq!(ids(&tail), all[5..7]);
    assert_eq!(tail["hasMore"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_and_seller_chat_over_tcp() {
    chat_flow(Via::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_and_seller_chat_over_websocket() {
    chat_flow(Via::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_open_from_products_and_orders_idempotently() {
    let server = Server::start(CHATD).await;
    server.put_users(&["b1", "b2"]).await;
    server.put_sellers(&["s1"]).await;
    let platform = server.token(PLATFORM, "platform");
    for (id, title) in [("p1", "Áo thun"), ("p2", "Quần jean")] {
        let (status, _) = server
            .request(
                "PUT",
                &format!("/internal/products/{id}"),
                &platform,
                Some(json!({"sellerId": "s1", "title": title, "price": 150000})),
            )
            .await;
        assert_eq!(status, 204);
    }
    let (status, _) = server
        .request(
            "PUT",
            "/internal/orders/o1",
            &platform,
            Some(json!({"buyerId": "b1", "sellerId": "s1", "summary": "2 x Áo thun"})),
        )
        .await;
    assert_eq!(status, 204);
    let b1 = server.token("b1", "buyer");

    // General thread: one per pair, product context as system cards.
    let open = |product: &str| json!({"sellerId": "s1", "productId": product});
    let (_, first) = server
        .request("POST", "/chat/threads", &b1, Some(open("p1")))
        .await;
    let (_, again) = server
        .request("POST", "/chat/threads", &b1, Some(open("p1")))
        .await;
    let (_, other) = server
        .request("POST", "/chat/threads", &b1, Some(open("p2")))
        .await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["id"], other["id"]);
    assert_eq!(other["productId"], "p2");
    let thread = first["id"].as_str().unwrap();
    let (_, page) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &b1,
            None,
        )
        .await;
    let cards: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["card"]["productId"].clone())
        .collect();
    assert_eq!(
        cards,
        vec![json!("p1"), json!("p2")],
        "one card per change of product"
    );

    // Order thread: its own thread, with the order card; idempotent.
    let (status, order_thread) = server
        .request("POST", "/chat/threads", &b1, Some(json!({"orderId": "o1"})))
        .await;
    assert_eq!(status, 200, "{order_thread}");
    assert_ne!(order_thread["id"], first["id"]);
    assert_eq!(order_thread["orderId"], "o1");
    let (_, seller_view) = server
        .request(
            "POST",
            "/chat/threads",
            &server.token("s1", "seller"),
            Some(json!({"orderId": "o1"})),
        )
        .await;
    assert_eq!(seller_view["id"], order_thread["id"]);
    let order_id = order_thread["id"].as_str().unwrap();
    let (_, page) = server
        .request(
            "GET",
            &format!("/chat/threads/{order_id}/messages"),
            &b1,
            None,
        )
        .await;
    assert_eq!(
        page["messages"][0]["card"],
        json!({"card": "order", "orderId": "o1", "summary": "2 x Áo thun"})
    );

    // Someone else's order answers like an unknown one (see
    // security::order_and_user_ids_cannot_be_probed).
    let (status, body) = server
        .request(
            "POST",
            "/chat/threads",
            &server.token("b2", "buyer"),
            Some(json!({"orderId": "o1"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // A product of another seller does not open a thread.
    server.put_sellers(&["s2"]).await;
    let (status, _) = server
        .request(
            "POST",
            "/chat/threads",
            &b1,
            Some(json!({"sellerId": "s2", "productId": "p1"})),
        )
        .await;
    assert_eq!(status, 400);

    // The inbox lists both, newest activity first, with cursor pagination.
    let (_, inbox) = server
        .request("GET", "/chat/threads?limit=1", &b1, None)
        .await;
    assert_eq!(inbox["threads"][0]["id"], order_thread["id"]);
    let cursor = inbox["nextCursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let (_, rest) = server
        .request(
            "GET",
            &format!("/chat/threads?limit=1&cursor={cursor}"),
            &b1,
            None,
        )
        .await;
    assert_eq!(rest["threads"][0]["id"], first["id"]);
    assert!(rest["nextCursor"].is_null());
}

/// `(otherOnline, otherLastSeen)` of the caller's first inbox row.
pub async fn other_presence(server: &Server, token: &str) -> (bool, Option<i64>) {
    let (status, inbox) = server.request("GET", "/chat/threads", token, None).await;
    assert_eq!(status, 200, "{inbox}");
    (
        inbox["threads"][0]["otherOnline"].as_bool().unwrap(),
        inbox["threads"][0]["otherLastSeen"].as_i64(),
    )
}

/// Replying marks the thread read for the replier (answering means having
/// read), and the other side knows at once: "Đã xem" updates live. In v2
/// the reply itself is the receipt (`docs/protocol.md` §5.1): no separate
/// `read` is sent, for a turn of the conversation or for a second message
/// in a row; the replier's marker and unread count follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_tells_the_other_side_its_messages_were_read() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("rdb", "rds").await;
    let mut buyer = Client::connect(&server, "rdb", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(&server, "rds", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let seller_token = server.token("rds", "seller");
    let marker_of = |user: &'static str| {
        let (server, token, thread) = (&server, &seller_token, &thread);
        async move {
            let page = history(server, token, thread, "").await;
            page["readMarkers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["userId"] == user)
                .and_then(|m| m["upTo"].as_str())
                .map(str::to_owned)
        }
    };
    buyer
        .send_text(&thread, "q1", "còn size M không?")
        .await
        .unwrap();
    buyer.send_text(&thread, "q2", "màu đen nhé").await.unwrap();
    let mut unread = Vec::new();
    while unread.len() < 2 {
        unread.push(
            seller
                .expect("the buyer's questions", |_, e| match e {
                    Event::Msg(m) if m.from.as_deref() == Some("rdb") => Some(m.unread),
                    _ => None,
                })
                .await,
        );
    }
    assert_eq!(unread, [1, 2], "the seller has two unread");
    assert_eq!(marker_of("rds").await, None, "the seller read nothing yet");
    buyer.drain(Duration::from_millis(300)).await;

    let reply = seller.send_text(&thread, "a1", "còn ạ").await.unwrap();
    let seen = buyer.drain(Duration::from_millis(500)).await;
    let replies: Vec<&str> = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Msg(m) if m.from.as_deref() == Some("rds") => Some(m.id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [reply.as_str()], "the reply reached the buyer");
    assert!(
        !seen.iter().any(|(_, e)| matches!(e, Event::Read { .. })),
        "v2 sends no read for a reply: {seen:?}"
    );
    assert_eq!(
        marker_of("rds").await.as_deref(),
        Some(reply.as_str()),
        "the seller read up to its reply"
    );
    assert_eq!(unread_counts(&server, &seller_token).await, (1, 0));

    let second = seller
        .send_text(&thread, "a2", "size M màu đen còn 3 cái")
        .await
        .unwrap();
    let seen = buyer.drain(Duration::from_millis(500)).await;
    let unread: Vec<u32> = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Msg(m) if m.id == second => Some(m.unread),
            _ => None,
        })
        .collect();
    assert_eq!(unread, [2], "the second reply, unread by the buyer");
    assert!(
        !seen.iter().any(|(_, e)| matches!(e, Event::Read { .. })),
        "nothing new was read: {seen:?}"
    );
    assert_eq!(marker_of("rds").await.as_deref(), Some(second.as_str()));
}
