//! Rate limits and anti-spam end to end: a flooding client is limited (and
//! then muted) while another user is unaffected; the same text into many
//! threads is refused; buyers start a limited number of threads; REST
//! answers 429 with `Retry-After`.

use chat_e2e::{Client, Server, Via, send_message};
use chat_protocol::{ErrorCode, ServerEvent, topics};
use serde_json::json;

use crate::CHATD;

/// Sends and waits for the ack: the error code and `retry_after_ms`, if
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
        .map_err(|e| (e.code, e.retry_after_ms))
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
    assert!(flooder.subscribe(&topics::user("flooder")).await);
    let mut calm = Client::connect(&server, "calm", "buyer", Via::Tcp).await;
    assert!(calm.subscribe(&topics::user("calm")).await);

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
    let retry = retry.expect("retry_after_ms");
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
    assert!(spammer.subscribe(&topics::user("spammer")).await);
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
    server.put_users(&["s4"]).await;
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
    assert!(phone.subscribe(&topics::user("twodev")).await);
    for i in 0..3 {
        send(&mut phone, &thread, &format!("p{i}"), "tin")
            .await
            .unwrap();
    }
    phone
        .publish(&topics::thread_inbound(&thread), send_message("p3", "tin"))
        .await;
    let retry = phone
        .expect("the error event", |_, e| match e {
            ServerEvent::Error { error, topic, .. } => {
                assert_eq!(error.code, ErrorCode::RateLimited);
                assert_eq!(
                    topic.as_deref(),
                    Some(topics::thread_inbound(&thread).as_str())
                );
                error.retry_after_ms
            }
            _ => None,
        })
        .await;
    assert!((1..=1000).contains(&retry), "{retry}");
    // The same user's laptop is a connection of its own.
    let mut laptop = match Client::try_connect(connect("laptop"), "twodev").await {
        chat_e2e::Connect::Accepted(c) => c,
        chat_e2e::Connect::Refused(why) => panic!("{why}"),
    };
    assert!(laptop.subscribe(&topics::user("twodev")).await);
    send(&mut laptop, &thread, "l0", "từ laptop").await.unwrap();
}
