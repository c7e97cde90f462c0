//! The notification service's promises end to end: an owed push survives
//! an FCM outage and a `kill -9` of chatd and goes out once; messages that
//! stay unread are e-mailed once, in the reader's language, through a real
//! SMTP server; read ones are not.

use std::time::Duration;

use chat_e2e::smtp::SmtpServer;
use chat_e2e::{Client, Server, Via, fake_fcm, wait_for};
use serde_json::{Value, json};

use crate::CHATD;

/// Sends `text` into `thread` and returns the stored message id.
async fn send(seller: &mut Client, thread: &str, cmid: &str, text: &str) -> String {
    seller.send_text(thread, cmid, text).await.expect("stored")
}

/// The pushes the FCM stand-in accepted for `token` about `thread`.
fn pushes(fake: &fake_fcm::Shared, token: &str, thread: &str) -> Vec<Value> {
    fake.lock()
        .unwrap()
        .sent
        .iter()
        .filter(|m| m["message"]["token"] == token && m["message"]["data"]["threadId"] == thread)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owed_pushes_survive_an_fcm_outage_and_a_kill_9_and_go_out_once() {
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
            ("CHAT_PUSH__COLLAPSE_WINDOW_MS", "500"),
        ],
    )
    .await;
    let buyers: Vec<String> = (0..6).map(|i| format!("kb{i}")).collect();
    let mut threads = Vec::new();
    for buyer in &buyers {
        threads.push(server.thread_between(buyer, "ks").await);
        server.put_fcm_device(buyer, &format!("dev-{buyer}")).await;
    }
    // kb0 also has two unread messages from another shop: its badge counts
    // every thread, not only the one being notified.
    let other_thread = server.thread_between("kb0", "ks2").await;
    let mut other_seller = Client::connect(&server, "ks2", "seller", Via::Tcp).await;
    other_seller.subscribe_inbox().await;
    send(&mut other_seller, &other_thread, "o-1", "Hàng về rồi").await;
    send(&mut other_seller, &other_thread, "o-2", "Bạn ghé nhé").await;
    wait_for("kb0's pushes from ks2", Duration::from_secs(10), || {
        (pushes(&fake, "dev-kb0", &other_thread).len() == 2).then_some(())
    })
    .await;

    let mut seller = Client::connect(&server, "ks", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let mut owed = Vec::new();
    // FCM up: three pushes go out at once.
    for (i, thread) in threads.iter().enumerate().take(3) {
        owed.push(send(&mut seller, thread, &format!("up-{i}"), &format!("tin {i}")).await);
    }
    wait_for("the first three pushes", Duration::from_secs(10), || {
        (0..3)
            .all(|i| !pushes(&fake, &format!("dev-kb{i}"), &threads[i]).is_empty())
            .then_some(())
    })
    .await;
    let badge = &pushes(&fake, "dev-kb0", &threads[0])[0]["message"]["android"]["notification"]["notification_count"];
    assert_eq!(*badge, 3, "two unread from ks2 and one from ks");
    // Let chatd record them (marks, outbox) before the crash.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // FCM down: three more are owed, attempted, refused; chatd is killed.
    fake.lock().unwrap().down = true;
    for (i, thread) in threads.iter().enumerate().skip(3) {
        owed.push(
            send(
                &mut seller,
                thread,
                &format!("down-{i}"),
                &format!("tin {i}"),
            )
            .await,
        );
    }
    wait_for(
        "attempts during the outage",
        Duration::from_secs(10),
        || (fake.lock().unwrap().refused_while_down.len() >= 3).then_some(()),
    )
    .await;
    drop(seller);
    drop(other_seller);
    server.kill9();
    fake.lock().unwrap().down = false;
    server.restart().await;

    wait_for(
        "the owed pushes after the restart",
        Duration::from_secs(30),
        || {
            (3..6)
                .all(|i| !pushes(&fake, &format!("dev-kb{i}"), &threads[i]).is_empty())
                .then_some(())
        },
    )
    .await;
    // Room for a duplicate to show up, if the service were to send one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, message_id) in owed.iter().enumerate() {
        let got = pushes(&fake, &format!("dev-kb{i}"), &threads[i]);
        let ids: Vec<&str> = got
            .iter()
            .map(|p| p["message"]["data"]["messageId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [message_id.as_str()], "buyer kb{i}: exactly one push");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_messages_are_emailed_once_in_the_readers_language() {
    let smtp = SmtpServer::start().await;
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_EMAIL__SMTP_URL", &smtp.url()),
            ("CHAT_EMAIL__FROM", "Chat Shop <no-reply@shop.example>"),
            ("CHAT_EMAIL__DELAY_SECS", "2"),
            ("CHAT_EMAIL__APP_URL", "https://shop.example/chat"),
        ],
    )
    .await;
    let vi_thread = server.thread_between("mvi", "ms").await;
    let en_thread = server.thread_between("men", "ms").await;
    let read_thread = server.thread_between("mread", "ms").await;
    server
        .put_user_with_email("mvi", "lan@example.com", "vi")
        .await;
    server
        .put_user_with_email("men", "john@example.com", "en-GB")
        .await;
    server
        .put_user_with_email("mread", "doc@example.com", "vi")
        .await;

    let mut seller = Client::connect(&server, "ms", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    send(&mut seller, &vi_thread, "v-1", "Shop đã gửi hàng rồi ạ").await;
    send(&mut seller, &vi_thread, "v-2", "Mã vận đơn: GHN123").await;
    send(&mut seller, &en_thread, "e-1", "Your parcel has shipped").await;
    let read_id = send(&mut seller, &read_thread, "r-1", "Bạn xem giúp shop nhé").await;
    // mread reads it on the web within the delay: no e-mail for it.
    let (status, body) = server
        .request(
            "POST",
            &format!("/chat/threads/{read_thread}/read"),
            &server.token("mread", "buyer"),
            Some(json!({"upTo": read_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unreadCount"], 0);

    let mails = wait_for("two digest e-mails", Duration::from_secs(20), || {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    // Past another delay: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mails_after = smtp.mails();
    assert_eq!(mails_after.len(), 2, "{mails:?}");

    let to = |address: &str| {
        mails_after
            .iter()
            .find(|m| m.to.contains(address))
            .unwrap_or_else(|| panic!("no e-mail to {address}: {mails_after:?}"))
    };
    let vi = to("lan@example.com");
    assert_eq!(vi.subject, "Tên ms đã nhắn cho bạn (2 tin chưa đọc)");
    assert!(vi.body.contains("Chào Tên mvi"), "{}", vi.body);
    assert!(vi.body.contains("> Shop đã gửi hàng rồi ạ"), "{}", vi.body);
    assert!(vi.body.contains("> Mã vận đơn: GHN123"), "{}", vi.body);
    assert!(
        vi.body
            .contains(&format!("https://shop.example/chat/threads/{vi_thread}")),
        "{}",
        vi.body
    );
    let en = to("john@example.com");
    assert_eq!(en.subject, "Tên ms sent you a message (1 unread)");
    assert!(en.body.contains("> Your parcel has shipped"), "{}", en.body);
    assert!(
        mails_after
            .iter()
            .all(|m| !m.to.contains("doc@example.com"))
    );

    // Support staff see the e-mail in the notification log.
    let (status, log) = server
        .request(
            "GET",
            "/admin/notifications?user=mvi",
            &server.token("support-1", "admin"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let entry = &log["notifications"][0];
    assert_eq!(entry["channel"], "email");
    assert_eq!(entry["outcome"], "sent");
    assert_eq!(entry["device"], "l***@example.com");
}
