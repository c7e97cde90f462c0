//! Rate limits and anti-spam end to end: a flooding client is limited (and
//! then muted) while another user is unaffected; the same text into many
//! threads is refused; buyers start a limited number of threads; REST
//! answers 429 with `Retry-After`.

use std::time::Duration;

use chat_e2e::{Client, Server, Via, send_message};
use chat_protocol::ErrorCode;
use chat_protocol::v2::{self, Event};
use serde_json::json;

use crate::CHATD;

/// Sends and waits for the answer: the error code and `retry` (ms), if
/// refused.
async fn send(
    client: &mut Client,
    thread: &str,
    cmid: &str,
    text: &str,
) -> Result<(), (ErrorCode, Option<u64>)> {
    client
        .send_text(thread, cmid, text)
        .await
        .map(|_| ())
        .map_err(|e| (e.code, e.retry))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_limited_then_muted_and_others_are_unaffected() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__MESSAGES_PER_MINUTE", "60"),
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "5"),
            ("CHAT_RATE_LIMITS__STRIKES_TO_MUTE", "4"),
            ("CHAT_RATE_LIMITS__MUTE_SECS", "120"),
            ("CHAT_RATE_LIMITS__DUPLICATE_THREADS", "2"),
            ("CHAT_RATE_LIMITS__NEW_THREADS_PER_HOUR", "3"),
            ("CHAT_RATE_LIMITS__REST_PER_MINUTE", "60"),
            ("CHAT_RATE_LIMITS__REST_BURST", "5"),
        ],
    )
    .await;
    let thread = server.thread_between("flooder", "lseller").await;
    let calm_thread = server.thread_between("calm", "lseller2").await;
    let mut flooder = Client::connect(&server, "flooder", "buyer", Via::Tcp).await;
    flooder.subscribe_inbox().await;
    let mut calm = Client::connect(&server, "calm", "buyer", Via::Tcp).await;
    calm.subscribe_inbox().await;

    // The burst passes; then "too fast", with when to retry.
    for i in 0..5 {
        send(&mut flooder, &thread, &format!("f{i}"), &format!("tin {i}"))
            .await
            .unwrap();
    }
    let (code, retry) = send(&mut flooder, &thread, "f5", "tin 5")
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::RateLimited);
    let retry = retry.expect("retry");
    assert!((1..=1000).contains(&retry), "{retry}");
    // Someone else sends at the same moment, unaffected.
    for i in 0..4 {
        send(
            &mut calm,
            &calm_thread,
            &format!("c{i}"),
            &format!("chào {i}"),
        )
        .await
        .unwrap();
    }
    // Keeps hammering: muted for the configured time.
    let mut last = None;
    for i in 6..12 {
        last = Some(
            send(&mut flooder, &thread, &format!("f{i}"), "spam")
                .await
                .unwrap_err(),
        );
    }
    let (code, retry) = last.unwrap();
    assert_eq!(code, ErrorCode::Muted);
    assert!(retry.unwrap() > 100_000, "about two minutes: {retry:?}");
    send(&mut calm, &calm_thread, "c4", "vẫn gửi được")
        .await
        .unwrap();

    // The same text into many threads (a second buyer, fresh limits).
    let spam_threads: Vec<String> = {
        let mut v = Vec::new();
        for seller in ["s1", "s2", "s3"] {
            v.push(server.thread_between("spammer", seller).await);
        }
        v
    };
    let mut spammer = Client::connect(&server, "spammer", "buyer", Via::Tcp).await;
    spammer.subscribe_inbox().await;
    let ad = "Sale sốc 50% tại shop em, inbox ngay!";
    send(&mut spammer, &spam_threads[0], "a0", ad)
        .await
        .unwrap();
    send(&mut spammer, &spam_threads[1], "a1", ad)
        .await
        .unwrap();
    let (code, _) = send(&mut spammer, &spam_threads[2], "a2", ad)
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::RateLimited);
    send(
        &mut spammer,
        &spam_threads[2],
        "a3",
        "Chào shop, còn hàng không?",
    )
    .await
    .unwrap();

    // New threads per buyer: three were started; a fourth is refused, an
    // existing one reopens.
    let token = server.token("spammer", "buyer");
    server.put_sellers(&["s4"]).await;
    let (status, body) = server
        .request(
            "POST",
            "/chat/threads",
            &token,
            Some(json!({"sellerId": "s4"})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, body) = server
        .request(
            "POST",
            "/chat/threads",
            &token,
            Some(json!({"sellerId": "s1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // REST: a burst of 5, then 429 with Retry-After; others unaffected.
    let reader = server.token("reader", "buyer");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (status, headers) = server.get_with_headers("/chat/threads", &reader).await;
        statuses.push((
            status,
            headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ));
    }
    assert!(statuses[..5].iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(statuses[5], (429, Some("1".to_owned())), "{statuses:?}");
    let (status, _) = server
        .request("GET", "/chat/threads", &server.token("calm", "buyer"), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runaway_device_is_limited_not_the_users_other_devices() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_PER_MINUTE", "60"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "3"),
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "10"),
        ],
    )
    .await;
    let thread = server.thread_between("twodev", "dseller").await;
    let token = server.token("twodev", "buyer");
    let connect = |device: &str| {
        chat_e2e::options(
            &server,
            &format!("twodev:{device}"),
            "twodev",
            &token,
            Via::Tcp,
        )
    };
    let mut phone = match Client::try_connect(connect("phone"), "twodev").await {
        chat_e2e::Connect::Accepted(c) => c,
        chat_e2e::Connect::Refused(why) => panic!("{why}"),
    };
    phone.subscribe_inbox().await;
    for i in 0..3 {
        send(&mut phone, &thread, &format!("p{i}"), "tin")
            .await
            .unwrap();
    }
    phone
        .publish(&v2::thread(&thread), send_message("p3", "tin"))
        .await;
    // The refusal is the send's ack: the outbox can settle it.
    let retry = phone
        .expect("the refused ack", |_, e| match e {
            Event::Ack {
                client_msg_id,
                err: Some(err),
                ..
            } if client_msg_id == "p3" => {
                assert_eq!(err.code, ErrorCode::RateLimited);
                err.retry
            }
            Event::Error { .. } => panic!("an error event instead of the ack: {e:?}"),
            _ => None,
        })
        .await;
    assert!((1..=1000).contains(&retry), "{retry}");
    // The same user's laptop is a connection of its own.
    let mut laptop = match Client::try_connect(connect("laptop"), "twodev").await {
        chat_e2e::Connect::Accepted(c) => c,
        chat_e2e::Connect::Refused(why) => panic!("{why}"),
    };
    laptop.subscribe_inbox().await;
    send(&mut laptop, &thread, "l0", "từ laptop").await.unwrap();
}

/// Typing and read receipts have budgets of their own: a user who types and
/// reads a lot can still send. Stopping typing counts too (it is relayed
/// like starting), so many connections cannot relay more than the user's
/// typing budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_receipts_do_not_spend_the_send_budget() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "3"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_PER_MINUTE", "1"),
            ("CHAT_RATE_LIMITS__TYPING_BURST", "5"),
            ("CHAT_RATE_LIMITS__TYPING_PER_MINUTE", "6"),
            ("CHAT_RATE_LIMITS__RECEIPTS_BURST", "40"),
        ],
    )
    .await;
    let thread = server.thread_between("typist", "tseller").await;
    let mut seller = Client::connect(&server, "tseller", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let mut typist = Client::connect(&server, "typist", "buyer", Via::Tcp).await;
    typist.subscribe_inbox().await;
    let first = typist.send_text(&thread, "t0", "chào").await.unwrap();
    for i in 0..30 {
        typist.typing(&thread, i % 2 == 0).await;
        typist.read(&thread, &first).await;
    }
    // Two more sends fit the connection's burst of 3: typing and reading
    // spent none of it.
    send(&mut typist, &thread, "t1", "còn size M không?")
        .await
        .unwrap();
    send(&mut typist, &thread, "t2", "ship Hà Nội nhé")
        .await
        .unwrap();

    // Five connections of one user, 20 "stopped typing" each.
    let token = server.token("typist", "buyer");
    let mut devices = Vec::new();
    for d in 0..5 {
        let opts = chat_e2e::options(&server, &format!("typist:d{d}"), "typist", &token, Via::Tcp);
        match Client::try_connect(opts, "typist").await {
            chat_e2e::Connect::Accepted(c) => devices.push(c),
            chat_e2e::Connect::Refused(why) => panic!("{why}"),
        }
    }
    for device in &mut devices {
        for _ in 0..20 {
            device.typing(&thread, false).await;
        }
    }
    let relayed = seller
        .drain(Duration::from_millis(800))
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::Typing { .. }))
        .count();
    // The burst of 5 was spent by the first typist loop; 6 a minute refill.
    assert!(
        relayed <= 8,
        "{relayed} typing events relayed for a budget of 5"
    );
}

/// A connection that keeps publishing garbage gets answers for a while,
/// then none, then is closed; the server's answers stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_are_answered_then_dropped_then_the_connection_closed() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__REFUSALS_BURST", "5"),
            ("CHAT_RATE_LIMITS__REFUSALS_PER_MINUTE", "1"),
            ("CHAT_RATE_LIMITS__REFUSALS_TO_DISCONNECT", "10"),
        ],
    )
    .await;
    let thread = server.thread_between("noisy", "nseller").await;
    let mut noisy = Client::connect(&server, "noisy", "buyer", Via::Tcp).await;
    noisy.subscribe_inbox().await;
    let inbound = v2::thread(&thread);
    let foreign = format!("t/{}", "x".repeat(60_000));
    for i in 0..15 {
        let topic = if i % 2 == 0 { &inbound } else { &foreign };
        noisy.publish(topic, b"\xc1 not msgpack".to_vec()).await;
    }
    let mut errors = Vec::new();
    while let Some((_, e)) = noisy.event(Duration::from_millis(500)).await {
        if let Event::Error { topic, .. } = e {
            errors.push(topic.unwrap_or_default());
        }
    }
    assert_eq!(errors.len(), 5, "answered within the budget only");
    assert!(
        errors.iter().all(|t| t.len() <= 128),
        "echoed topics are cut short"
    );
    // Still refused after the budget: closed.
    noisy
        .mqtt
        .publish(&inbound, rumqttc::QoS::AtLeastOnce, false, b"\xc1".to_vec())
        .await
        .unwrap();
    assert!(
        noisy.closed(Duration::from_secs(5)).await.is_some(),
        "closed after 10 unanswered refusals"
    );
    // Others are fine.
    let mut other = Client::connect(&server, "nseller", "seller", Via::Tcp).await;
    other.subscribe_inbox().await;
}

/// One user holds a bounded number of connections (300 of 300 were
/// accepted); a reconnect with a client id already connected is a
/// take-over, not one more, so it is let in at the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped_and_a_takeover_is_not_one_more() {
    let server = Server::start_with(CHATD, &[("CHAT_LIMITS__MAX_CONNECTIONS_PER_USER", "4")]).await;
    let token = server.token("many", "buyer");
    let attempt = |device: String| {
        let opts = chat_e2e::options(&server, &format!("many:{device}"), "many", &token, Via::Tcp);
        Client::try_connect(opts, "many")
    };
    let mut held = Vec::new();
    for d in 0..4 {
        match attempt(format!("d{d}")).await {
            chat_e2e::Connect::Accepted(c) => held.push(c),
            chat_e2e::Connect::Refused(why) => panic!("device {d}: {why}"),
        }
    }
    assert!(
        matches!(attempt("d4".into()).await, chat_e2e::Connect::Refused(_)),
        "a fifth connection"
    );
    assert!(
        matches!(attempt("d0".into()).await, chat_e2e::Connect::Accepted(_)),
        "a take-over of a connected client id"
    );
    // Another user is not affected.
    let mut other = Client::connect(&server, "few", "buyer", Via::Tcp).await;
    other.subscribe_inbox().await;
    // One goes away: room for another.
    held.pop().unwrap().disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        attempt("d5".into()).await,
        chat_e2e::Connect::Accepted(_)
    ));
}

/// Upload slots hold disk until used or swept: a user gets a burst of them,
/// then 429 with `Retry-After` (five 10 MB slots of random bytes, never
/// sent, stayed a day before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_slots_are_rate_limited_per_user() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__UPLOADS_BURST", "3"),
            ("CHAT_RATE_LIMITS__UPLOADS_PER_HOUR", "3"),
        ],
    )
    .await;
    let thread = server.thread_between("upq", "upqs").await;
    let ask = |user: &str, role: &str| {
        let token = server.token(user, role);
        let path = format!("/chat/threads/{thread}/uploads");
        let server = &server;
        async move {
            server
                .request(
                    "POST",
                    &path,
                    &token,
                    Some(json!({"contentType": "image/jpeg", "size": 10_000_000})),
                )
                .await
        }
    };
    for i in 0..3 {
        let (status, body) = ask("upq", "buyer").await;
        assert_eq!(status, 201, "slot {i}: {body}");
    }
    let (status, body) = ask("upq", "buyer").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // The other participant has slots of their own.
    let (status, body) = ask("upqs", "seller").await;
    assert_eq!(status, 201, "{body}");
}
