//! Push notifications end to end: chatd's notification service against the
//! local FCM stand-in (`chat_e2e::fake_fcm`), which checks the OAuth2 grant
//! and answers as FCM does.

use std::time::{Duration, Instant};

use chat_e2e::{Client, Server, Via, fake_fcm, send_message, wait_for};
use chat_protocol::v2;
use serde_json::{Value, json};

use crate::CHATD;

/// The FCM messages the stand-in received for one device token.
fn pushes_to(fake: &fake_fcm::Shared, token: &str) -> Vec<Value> {
    fake.lock()
        .unwrap()
        .sent
        .iter()
        .filter(|m| m["message"]["token"] == token)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_buyers_get_one_collapsed_push_and_online_ones_none() {
    let (fcm_base, fake) = fake_fcm::start().await;
    let credentials = fake_fcm::credentials_file(&fcm_base);
    let server = Server::start_with(
        CHATD,
        &[
            (
                "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
                credentials.path().to_str().unwrap(),
            ),
            ("CHAT_PUSH__FCM__BASE_URL", &fcm_base),
            ("CHAT_PUSH__COLLAPSE_WINDOW_MS", "3000"),
        ],
    )
    .await;
    let thread = server.thread_between("pb", "ps").await;
    let buyer_token = server.token("pb", "buyer");
    fake.lock().unwrap().retry_after_secs = Some(1);
    for device in ["phone-1", "gone-2", "busy-3"] {
        let (status, body) = server
            .request(
                "PUT",
                "/chat/devices",
                &buyer_token,
                Some(json!({"platform": "fcm", "token": device, "appId": "vn.example.shop"})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }

    let mut seller = Client::connect(&server, "ps", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let inbound = v2::thread(&thread);
    let send = |text: &str, cmid: &str| (cmid.to_owned(), send_message(cmid, text));
    seller
        .send_text(&thread, "s-0", "Dạ shop còn hàng ạ")
        .await
        .expect("stored");

    // The buyer has no session: one push to the live device, at once.
    let first = wait_for("the first push", Duration::from_secs(10), || {
        pushes_to(&fake, "phone-1").into_iter().next()
    })
    .await;
    assert_eq!(
        first["message"]["notification"]["body"],
        "Dạ shop còn hàng ạ"
    );
    assert_eq!(first["message"]["notification"]["title"], "Tên ps");
    assert_eq!(first["message"]["data"]["threadId"], thread.as_str());
    assert_eq!(
        first["message"]["android"]["notification"]["notification_count"],
        1
    );
    // The dead token was tried once and pruned.
    wait_for(
        "the dead token to be pruned",
        Duration::from_secs(10),
        || (!pushes_to(&fake, "gone-2").is_empty()).then_some(()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = server
            .request("GET", "/chat/devices", &buyer_token, None)
            .await;
        let mut tokens: Vec<&str> = list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["token"].as_str().unwrap())
            .collect();
        tokens.sort();
        if tokens == ["busy-3", "phone-1"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gone-2 still registered: {tokens:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // FCM answered 503 (Retry-After: 1) for the third device: sent again
    // after a second, and then delivered.
    let busy = wait_for("the retried push", Duration::from_secs(10), || {
        let pushes = pushes_to(&fake, "busy-3");
        (pushes.len() >= 2).then_some(pushes)
    })
    .await;
    assert_eq!(busy.len(), 2, "one refusal, one delivery");
    assert_eq!(
        busy[1]["message"]["notification"]["body"],
        "Dạ shop còn hàng ạ"
    );

    // Nine more quick answers (ten in all) inside the window: one update
    // when it closes, replacing the first (same collapse key), showing the
    // latest text and the full unread count.
    for i in 1..=9 {
        let (_, payload) = send(&format!("tin nhắn {i}"), &format!("s-{i}"));
        seller.publish(&inbound, payload).await;
    }
    let pushes = wait_for("the collapsed update", Duration::from_secs(10), || {
        let pushes = pushes_to(&fake, "phone-1");
        (pushes.len() >= 2).then_some(pushes)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pushes_after = pushes_to(&fake, "phone-1");
    assert_eq!(
        pushes_after.len(),
        2,
        "ten quick messages must not storm: {pushes:?}"
    );
    let update = &pushes_after[1]["message"];
    assert_eq!(update["notification"]["body"], "tin nhắn 9");
    assert_eq!(update["android"]["notification"]["notification_count"], 10);
    assert_eq!(
        update["android"]["collapse_key"],
        first["message"]["android"]["collapse_key"]
    );

    // Support staff see every attempt; nobody else does.
    let admin = server.token("support-1", "admin");
    let (status, log) = server
        .request("GET", "/admin/notifications?user=pb&limit=50", &admin, None)
        .await;
    assert_eq!(status, 200, "{log}");
    let outcomes: Vec<(&str, &str)> = log["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["device"].as_str().unwrap(),
                n["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("…hone-1", "sent"),
        ("…gone-2", "token_gone"),
        ("…busy-3", "retry"),
        ("…busy-3", "sent"),
    ] {
        assert!(
            outcomes.contains(&expected),
            "{expected:?} not in {outcomes:?}"
        );
    }
    let (status, _) = server
        .request("GET", "/admin/notifications?user=pb", &buyer_token, None)
        .await;
    assert_eq!(status, 403);

    // The buyer opens the app: nothing more is pushed.
    let _buyer = Client::connect(&server, "pb", "buyer", Via::Tcp).await;
    let (_, payload) = send("Bạn đang online", "s-online");
    seller.publish(&inbound, payload).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(pushes_to(&fake, "phone-1").len(), 2, "no push while online");
}

/// SIGTERM to a single `chatd serve` (embedded store, notifications in
/// process): the update its collapse window holds goes out before it
/// exits, instead of waiting in the outbox for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_sends_the_folded_update_before_it_exits() {
    let (fcm_base, fake) = fake_fcm::start().await;
    let credentials = fake_fcm::credentials_file(&fcm_base);
    let mut server = Server::start_with(
        CHATD,
        &[
            (
                "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
                credentials.path().to_str().unwrap(),
            ),
            ("CHAT_PUSH__FCM__BASE_URL", &fcm_base),
            // Far longer than the test.
            ("CHAT_PUSH__COLLAPSE_WINDOW_MS", "600000"),
            ("CHAT_LOG", "info,chatd=debug,chat_push=debug"),
        ],
    )
    .await;
    let thread = server.thread_between("fb", "fs").await;
    server.put_fcm_device("fb", "fb-phone").await;
    let mut seller = Client::connect(&server, "fs", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            seller
                .send_text(&thread, &format!("f-{i}"), &format!("tin {i}"))
                .await
                .expect("stored"),
        );
    }
    let pushed = || fake_fcm::pushed_message_ids(&fake, "fb-phone");
    wait_for(
        "the first push and two folded",
        Duration::from_secs(20),
        || (!pushed().is_empty() && server.log().matches("push folded").count() == 2).then_some(()),
    )
    .await;
    assert_eq!(pushed(), vec![ids[0].clone()]);
    seller.disconnect().await;

    let status = server
        .terminate(Duration::from_secs(30))
        .await
        .expect("chatd exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(
        pushed(),
        vec![ids[0].clone(), ids[2].clone()],
        "the folded update (latest message) went out before the exit"
    );
}
