//! Moderation in the send flow, end to end: contact details arrive masked
//! at the recipient and in history (also a number split over two
//! messages), the sender is told why, a blocked keyword never reaches the
//! recipient, a flagged message is delivered and waits for review, admins
//! manage lists and the queue over REST.

use std::time::Duration;

use chat_e2e::{Client, Server, Via};
use chat_protocol::v2::Event;
use chat_protocol::{ErrorCode, MessageType};
use serde_json::json;

use crate::CHATD;

/// Sends and waits for the answer: `Ok(message id)` or `Err(error code)`.
async fn send(
    client: &mut Client,
    thread: &str,
    cmid: &str,
    text: &str,
) -> Result<String, ErrorCode> {
    client
        .send_text(thread, cmid, text)
        .await
        .map_err(|e| e.code)
}

/// The text of the next `msg` from the other participant.
async fn next_text(client: &mut Client, from: &str) -> String {
    client
        .expect("msg", |_, e| match e {
            Event::Msg(m) if m.from.as_deref() == Some(from) => Some(m.content.clone()),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_details_are_masked_keywords_block_or_flag_and_admins_review() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("mb", "mseller").await;
    let admin = server.token("mod-admin", "admin");
    let mut buyer = Client::connect(&server, "mb", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(&server, "mseller", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    // Contact details: masked for the buyer, the seller told why.
    let id = send(
        &mut seller,
        &thread,
        "c1",
        "Gọi em 0912 345 678 hoặc mail shop.xinh a còng gmail chấm com nha, giá 150k",
    )
    .await
    .unwrap();
    let masked = "Gọi em [ẩn số điện thoại] hoặc mail [ẩn email] nha, giá 150k";
    assert_eq!(next_text(&mut buyer, "mseller").await, masked);
    // v2's `masked` is v1's moderation notice (`content_masked`), with
    // what was stored and delivered.
    let (categories, message, stored) = seller
        .expect("masked", |_, e| match e {
            Event::Masked {
                thread_id: t,
                client_msg_id,
                id: masked_id,
                content,
                cats,
                msg,
            } if *masked_id == id => {
                assert_eq!(
                    (t.as_str(), client_msg_id.as_str()),
                    (thread.as_str(), "c1")
                );
                Some((cats.clone(), msg.clone(), content.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(categories, ["phone", "email"]);
    assert!(message.starts_with("Thông tin liên hệ"), "{message}");
    assert_eq!(stored, masked, "the sender is shown what was delivered");

    // A number split over two messages: the part that completes it is masked.
    send(&mut seller, &thread, "c2", "số em nè 0912")
        .await
        .unwrap();
    assert_eq!(next_text(&mut buyer, "mseller").await, "số em nè 0912");
    send(&mut seller, &thread, "c3", "345 678").await.unwrap();
    assert_eq!(next_text(&mut buyer, "mseller").await, "[ẩn số điện thoại]");

    // History shows the masked text; only admins see the original.
    let (status, history) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &server.token("mb", "buyer"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let history = history.to_string();
    assert!(history.contains(masked), "{history}");
    assert!(!history.contains("0912 345 678"), "{history}");

    // Keyword lists, managed by admins only.
    let (status, _) = server
        .request(
            "POST",
            "/admin/moderation/keywords",
            &server.token("mb", "buyer"),
            Some(json!({"list": "block", "keyword": "ma túy", "present": true})),
        )
        .await;
    assert_eq!(status, 403);
    for (list, keyword) in [("block", "ma túy"), ("flag", "lừa đảo")] {
        let (status, body) = server
            .request(
                "POST",
                "/admin/moderation/keywords",
                &admin,
                Some(json!({"list": list, "keyword": keyword, "present": true})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let (_, lists) = server
        .request("GET", "/admin/moderation/keywords", &admin, None)
        .await;
    assert_eq!(lists, json!({"block": ["ma túy"], "flag": ["lừa đảo"]}));

    // A blocked keyword (written without diacritics, in capitals): refused,
    // never delivered, queued for review with the original.
    assert_eq!(
        send(&mut buyer, &thread, "b1", "Shop có bán MA TUY không").await,
        Err(ErrorCode::ContentBlocked)
    );
    // A flagged one: delivered as written, queued.
    send(&mut buyer, &thread, "b2", "shop này lừa đảo à")
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut seller, "mb").await,
        "shop này lừa đảo à",
        "the blocked message never reached the seller"
    );

    let (status, queue) = server
        .request("GET", "/admin/moderation/queue", &admin, None)
        .await;
    assert_eq!(status, 200, "{queue}");
    let items = queue["items"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["original"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("blocked", "Shop có bán MA TUY không"),
            ("flagged", "shop này lừa đảo à")
        ],
        "masked records are kept but not queued"
    );
    assert_eq!(items[0]["keywords"], json!(["ma túy"]));
    let flagged = items[1]["id"].as_str().unwrap();
    let resolve = format!("/admin/moderation/records/{flagged}/resolve");
    let (status, _) = server
        .request(
            "POST",
            &resolve,
            &admin,
            Some(json!({"resolution": "dismissed"})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .request(
            "POST",
            &resolve,
            &admin,
            Some(json!({"resolution": "again"})),
        )
        .await;
    assert_eq!(status, 404, "already resolved");
    let (_, queue) = server
        .request("GET", "/admin/moderation/queue", &admin, None)
        .await;
    assert_eq!(queue["items"].as_array().unwrap().len(), 1);
    let (_, record) = server
        .request(
            "GET",
            &format!("/admin/moderation/records/{flagged}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(record["resolution"], "dismissed");
    assert_eq!(record["resolvedBy"], "mod-admin");

    // Support staff try texts out.
    let (status, preview) = server
        .request(
            "POST",
            "/admin/moderation/preview",
            &admin,
            Some(json!({"text": "ib zalo không chín tám 7 sáu 5 4 3 2 1 nhé"})),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["text"], "ib zalo [ẩn số điện thoại] nhé");
    assert_eq!(preview["flagged"], true, "the channel mention is flagged");
    let (status, _) = server
        .request(
            "POST",
            "/admin/moderation/preview",
            &server.token("mb", "buyer"),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_eq!(status, 403);

    // Admin changes are in the audit log, newest first; the blocked
    // message too.
    let (_, log) = server
        .request("GET", "/admin/audit?actor=mod-admin", &admin, None)
        .await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["moderation_resolved", "keyword_added", "keyword_added"]
    );
    let (_, log) = server
        .request("GET", "/admin/audit?actor=system", &admin, None)
        .await;
    assert_eq!(log["entries"][0]["action"], "message_blocked");
    assert_eq!(log["entries"][0]["target"], "mb");

    // Nothing else reached the seller.
    let rest: Vec<_> = seller
        .drain(Duration::from_millis(500))
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::Msg(m) if m.from.as_deref() == Some("mb")))
        .collect();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_stops_both_sides_reports_queue_and_the_audit_log_records_it() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("bb", "bs").await;
    let admin = server.token("audit-admin", "admin");
    let (buyer_token, seller_token) = (server.token("bb", "buyer"), server.token("bs", "seller"));
    let mut buyer = Client::connect(&server, "bb", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(&server, "bs", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    let scam = send(
        &mut seller,
        &thread,
        "s1",
        "Chuyển cọc trước 500k shop mới gửi hàng",
    )
    .await
    .unwrap();

    // The buyer reports the message, then blocks the seller.
    let (status, body) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/reports"),
            &buyer_token,
            Some(json!({"messageId": scam, "reason": "scam"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let report_id = body["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/reports"),
            &buyer_token,
            Some(json!({"reason": "because"})),
        )
        .await;
    assert_eq!(status, 400, "unknown reason");
    let (status, _) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/reports"),
            &server.token("stranger", "buyer"),
            Some(json!({"reason": "spam"})),
        )
        .await;
    assert_eq!(status, 404, "strangers cannot see the thread");

    let (status, body) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/block"),
            &buyer_token,
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // Both sides see the notice in the thread.
    for client in [&mut buyer, &mut seller] {
        let card = client
            .expect("the block notice", |_, e| match e {
                Event::Msg(m) if m.card.is_some() => {
                    assert_eq!(m.kind, MessageType::System);
                    assert_eq!(m.from, None, "a system message has no sender");
                    m.card.clone()
                }
                _ => None,
            })
            .await;
        match card {
            chat_protocol::Card::Notice { code, text } => {
                assert_eq!(code, "blocked");
                assert!(text.starts_with("Cuộc trò chuyện đã bị chặn"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Nobody can send any more, in either direction.
    assert_eq!(
        send(&mut seller, &thread, "s2", "Sao bạn chặn mình?").await,
        Err(ErrorCode::ThreadBlocked)
    );
    assert_eq!(
        send(&mut buyer, &thread, "b1", "...").await,
        Err(ErrorCode::ThreadBlocked)
    );
    // Only a participant can lift it; then messages flow again.
    let (status, _) = server
        .request(
            "DELETE",
            &format!("/chat/threads/{thread}/block"),
            &server.token("stranger", "buyer"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .request(
            "DELETE",
            &format!("/chat/threads/{thread}/block"),
            &buyer_token,
            None,
        )
        .await;
    assert_eq!(status, 204);
    send(&mut seller, &thread, "s3", "Cảm ơn bạn")
        .await
        .unwrap();

    // The report waits for review with the reported message.
    let (_, queue) = server
        .request("GET", "/admin/moderation/queue", &admin, None)
        .await;
    let report = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == report_id.as_str())
        .unwrap_or_else(|| panic!("report not queued: {queue}"))
        .clone();
    assert_eq!(report["kind"], "report");
    assert_eq!(report["userId"], "bs");
    assert_eq!(report["reportedBy"], "bb");
    assert_eq!(report["categories"], json!(["scam"]));
    assert_eq!(
        report["original"],
        "Chuyển cọc trước 500k shop mới gửi hàng"
    );
    let (status, _) = server
        .request(
            "POST",
            &format!("/admin/moderation/records/{report_id}/resolve"),
            &admin,
            Some(json!({"resolution": "seller warned"})),
        )
        .await;
    assert_eq!(status, 204);

    // A connection with a forged token is refused and audited.
    let forged = Client::try_connect(
        chat_e2e::options(&server, "bb:forged", "bb", "not.a.jwt", Via::Tcp),
        "bb",
    )
    .await;
    assert!(matches!(forged, chat_e2e::Connect::Refused(_)));

    // The audit log has all of it, for admins only.
    let (status, _) = server
        .request("GET", "/admin/audit", &seller_token, None)
        .await;
    assert_eq!(status, 403);
    let actions = |log: &serde_json::Value| -> Vec<(String, String)> {
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["target"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (_, log) = server
        .request("GET", "/admin/audit?actor=bb", &admin, None)
        .await;
    assert_eq!(
        actions(&log),
        [
            ("unblock".to_owned(), "bs".to_owned()),
            ("block".to_owned(), "bs".to_owned()),
            ("report".to_owned(), "bs".to_owned())
        ],
        "newest first"
    );
    let (_, log) = server
        .request("GET", "/admin/audit?actor=audit-admin", &admin, None)
        .await;
    assert_eq!(
        actions(&log),
        [("moderation_resolved".to_owned(), report_id.clone())]
    );
    let mut refused = Vec::new();
    for _ in 0..50 {
        let (_, log) = server
            .request("GET", "/admin/audit?actor=ip:127.0.0.1", &admin, None)
            .await;
        refused = actions(&log);
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, [("login_refused".to_owned(), "mqtt".to_owned())]);
}

/// The idempotency key is the sender's business: a phone number used as a
/// `client_msg_id` passed moderation and reached the seller intact. Now the
/// recipient's `msg` carries no `k`, and REST history shows it only in the
/// sender's own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_msg_id_never_reaches_the_other_party() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("kb", "ks").await;
    let mut seller = Client::connect(&server, "ks", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let mut buyer = Client::connect(&server, "kb", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let key = "0938471265";
    buyer
        .send_text(&thread, key, "chào shop")
        .await
        .expect("acked, key and all");
    let delivered = seller
        .expect("msg", |_, e| match e {
            Event::Msg(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(delivered.content, "chào shop");
    assert_eq!(delivered.client_msg_id, None, "the key reached the seller");
    let history = |user: &str, role: &str| {
        let token = server.token(user, role);
        let path = format!("/chat/threads/{thread}/messages");
        let server = &server;
        async move { server.request("GET", &path, &token, None).await.1 }
    };
    let seen_by_seller = history("ks", "seller").await;
    assert_eq!(
        seen_by_seller["messages"][0]["clientMsgId"],
        serde_json::Value::Null
    );
    let seen_by_buyer = history("kb", "buyer").await;
    assert_eq!(
        seen_by_buyer["messages"][0]["clientMsgId"], key,
        "the sender's own"
    );
}
