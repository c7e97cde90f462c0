use std::time::Duration;

use chat_e2e::{Client, Connect, PLATFORM, Server, Via, now_secs, options, send_message};
use chat_protocol::v2::{self, Event};
use chat_protocol::{ErrorCode, topics};

use crate::CHATD;

async fn refused(server: &Server, client_id: &str, token: &str) -> String {
    match Client::try_connect(
        options(server, client_id, client_id, token, Via::Tcp),
        client_id,
    )
    .await
    {
        Connect::Accepted(_) => panic!("{client_id} was let in with a bad token"),
        Connect::Refused(why) => why,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_a_refused_connack() {
    let server = Server::start(CHATD).await;
    let good = Server::claims("u1", "buyer");

    let mut expired = Server::claims("u1", "buyer");
    expired.exp = now_secs() - 3600;
    let mut audience = Server::claims("u1", "buyer");
    audience.aud = "another-app".into();
    let mut issuer = Server::claims("u1", "buyer");
    issuer.iss = "evil".into();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret"),
    )
    .unwrap();
    let payload = server
        .token_with(&good)
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    // {"alg":"none","typ":"JWT"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");

    for (what, token) in [
        ("no token", String::new()),
        ("garbage", "not-a-jwt".to_owned()),
        ("bad signature", forged),
        ("alg none", alg_none),
        ("expired", server.token_with(&expired)),
        ("wrong audience", server.token_with(&audience)),
        ("wrong issuer", server.token_with(&issuer)),
    ] {
        let why = refused(&server, "u1", &token).await;
        assert!(why.contains("BadUserNamePassword"), "{what}: {why}");
    }
    // A valid token for u1 cannot take the client id of u2 (no kicking others off).
    let why = refused(&server, "u2", &server.token("u1", "buyer")).await;
    assert!(why.contains("NotAuthorized"), "{why}");
    let why = refused(&server, "u1x", &server.token("u1", "buyer")).await;
    assert!(why.contains("NotAuthorized"), "{why}");
    // A will message would be published without any ACL check, e.g. as a
    // forged command in another user's thread: wills are refused.
    let mut with_will = options(&server, "u1", "u1", &server.token("u1", "buyer"), Via::Tcp);
    with_will.set_last_will(rumqttc::LastWill::new(
        "t/someone-elses",
        b"forged".to_vec(),
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let why = match Client::try_connect(with_will, "u1").await {
        Connect::Accepted(_) => panic!("a will message was accepted"),
        Connect::Refused(why) => why,
    };
    assert!(why.contains("NotAuthorized"), "{why}");
    // The same user with a device suffix is fine.
    let ok = Client::try_connect(
        options(
            &server,
            "u1:phone",
            "u1",
            &server.token("u1", "buyer"),
            Via::Tcp,
        ),
        "u1",
    )
    .await;
    assert!(matches!(ok, Connect::Accepted(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_outside_ones_own_topics_are_refused() {
    let server = Server::start(CHATD).await;
    let own = server.thread_between("b1", "s1").await;
    let foreign = server.thread_between("b2", "s2").await;
    let mut client = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    for filter in [
        "#".to_owned(),
        "+".to_owned(),
        "u/+".to_owned(),
        "u/#".to_owned(),
        "t/+".to_owned(),
        "t/#".to_owned(),
        "u/b2".to_owned(),
        "$SYS/#".to_owned(),
        // Commands topics are for publishing only, one's own thread's too.
        v2::thread(&own),
        v2::thread(&foreign),
        "t/no-such-thread".to_owned(),
        format!("$share/g/{}", v2::user("b1")),
        // v1's family: wildcards and other users' topics.
        "thread/+".to_owned(),
        "thread/#".to_owned(),
        "user/+".to_owned(),
        "user/b2".to_owned(),
        topics::thread(&foreign),
        topics::thread_inbound(&own),
        // The persistence workers' hand-over topics, directly or as a group.
        "svc/persist/#".to_owned(),
        "$share/persist/svc/persist/#".to_owned(),
    ] {
        assert!(!client.subscribe(&filter).await, "{filter} must be refused");
    }
    assert!(client.subscribe(&v2::user("b1")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_into_a_foreign_thread_is_rejected_and_stores_nothing() {
    let server = Server::start(CHATD).await;
    let foreign = server.thread_between("b2", "s2").await;
    server.put_users(&["intruder"]).await;
    let mut intruder = Client::connect(&server, "intruder", "buyer", Via::Tcp).await;
    intruder.subscribe_inbox().await;
    let mut victim = Client::connect(&server, "s2", "seller", Via::Tcp).await;
    victim.subscribe_inbox().await;

    for topic in [
        v2::thread(&foreign),
        v2::user("s2"),
        topics::thread(&foreign),
        "user/s2".into(),
        "anything".into(),
        // Forged hand-overs, as if the broker had authorised them.
        format!("svc/persist/{foreign}/s2"),
        format!("svc/persist/{foreign}/s2/v2"),
    ] {
        intruder
            .publish(&topic, send_message("x-1", "mua ngoài sàn đi"))
            .await;
        let (code, on) = intruder
            .expect("error event", |_, e| match e {
                Event::Error { code, topic, .. } => Some((*code, topic.clone())),
                _ => None,
            })
            .await;
        assert_eq!(code, ErrorCode::Forbidden);
        assert_eq!(on.as_deref(), Some(topic.as_str()));
    }
    // v1's inbound topic of the thread: not answered (the intruder speaks
    // v2 and v1 is off), and refused all the same.
    intruder
        .publish(
            &topics::thread_inbound(&foreign),
            chat_e2e::v1_send_message("x-2", "mua ngoài sàn đi"),
        )
        .await;
    let leaked = victim.drain(Duration::from_millis(500)).await;
    assert!(leaked.is_empty(), "the victim received {leaked:?}");
    let (_, page) = server
        .request(
            "GET",
            &format!("/chat/threads/{foreign}/messages"),
            &server.token("s2", "seller"),
            None,
        )
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refuses_strangers_and_missing_tokens() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("b1", "s1").await;
    let stranger = server.token("b9", "buyer");
    let (status, body) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &stranger,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/read"),
            &stranger,
            Some(serde_json::json!({"upTo": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = server.request("GET", "/chat/threads", "", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = server
        .request(
            "PUT",
            "/internal/users/x",
            &server.token("b1", "buyer"),
            Some(serde_json::json!({"displayName": "x"})),
        )
        .await;
    assert_eq!(status, 403, "only the platform may write platform data");
    // An admin may read any thread (support), a platform token may not open threads.
    let (status, _) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &server.token("ops", "admin"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_closed_when_its_token_expires() {
    let server = Server::start(CHATD).await;
    let mut claims = Server::claims("b1", "buyer");
    claims.exp = now_secs() + 3;
    let token = server.token_with(&claims);
    let Connect::Accepted(mut client) =
        Client::try_connect(options(&server, "b1", "b1", &token, Via::Tcp), "b1").await
    else {
        panic!("a valid token was refused");
    };
    client.subscribe_inbox().await;
    let closed = client.closed(Duration::from_secs(15)).await;
    assert!(closed.is_some(), "the session outlived its token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_are_json_with_stable_codes_in_the_callers_language() {
    let server = Server::start(CHATD).await;
    let token = server.token("b1", "buyer");
    let (status, body) = server
        .request_raw("POST", "/chat/threads", &token, "{not json")
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = server
        .request("GET", "/chat/threads?limit=many", &token, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = server.request("GET", "/no/such/route", &token, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = server
        .request(
            "POST",
            "/chat/threads",
            &token,
            Some(serde_json::json!({"sellerId": "nobody"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Không tìm thấy"),
        "Vietnamese by default: {body}"
    );
    let english = reqwest::Client::new()
        .post(server.url("/chat/threads"))
        .bearer_auth(&token)
        .header("accept-language", "en-US,en;q=0.9")
        .json(&serde_json::json!({"sellerId": "nobody"}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(
        english["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Not found"),
        "{english}"
    );
    // The OpenAPI document describes the facade.
    let (status, doc) = server.request("GET", "/openapi.json", "", None).await;
    assert_eq!(status, 200);
    for path in [
        "/chat/threads",
        "/chat/threads/{id}/messages",
        "/chat/threads/{id}/read",
        "/internal/users/{id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loadtest_role_is_off_by_default_and_confined_to_bench_topics() {
    let server = Server::start(CHATD).await;
    let token = server.token("lt-1", "loadtest");
    let why = refused(&server, "lt-1", &token).await;
    assert!(why.contains("NotAuthorized"), "{why}");
    drop(server);

    let server = Server::start_with(CHATD, &[("CHAT_MQTT__ALLOW_LOADTEST", "true")]).await;
    let thread = server.thread_between("b1", "s1").await;
    let mut a = Client::connect(&server, "lt-1", "loadtest", Via::Tcp).await;
    let mut b = Client::connect(&server, "lt-2", "loadtest", Via::Tcp).await;
    assert!(a.subscribe("bench/#").await);
    for forbidden in [
        "#".to_owned(),
        v2::user("b1"),
        v2::user("lt-1"),
        v2::thread(&thread),
        topics::thread(&thread),
        "user/b1".to_owned(),
        "user/lt-1".to_owned(),
    ] {
        assert!(!a.subscribe(&forbidden).await, "{forbidden}");
    }
    b.publish("bench/t1", b"raw bytes, not chat".to_vec()).await;
    let (topic, payload) = a
        .raw(Duration::from_secs(5))
        .await
        .expect("raw pub/sub under bench/");
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("bench/t1", b"raw bytes, not chat".as_slice())
    );
    // A publish into a chat thread stores nothing and reaches no one.
    let mut seller = Client::connect(&server, "s1", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    b.publish(&v2::thread(&thread), send_message("lt", "spam"))
        .await;
    assert!(seller.drain(Duration::from_millis(500)).await.is_empty());
    let (_, page) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &server.token("s1", "seller"),
            None,
        )
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 0);
    // REST is closed to the role.
    let (status, _) = server
        .request(
            "GET",
            "/chat/threads",
            &server.token("lt-1", "loadtest"),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

/// One MQTT packet: its first byte and its body; `None` at the end.
async fn read_packet(stream: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind).await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await.ok()?;
        len |= usize::from(b[0] & 0x7f) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((kind[0], body))
}

/// A take-over by a second connection with the same client id is `0x8E
/// Session taken over` and an expired token `0x87 Not authorized`: an
/// MQTT 5 client can tell both from a network loss (the socket just closed
/// before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_are_told_why_the_server_closes_their_session() {
    use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
    let server = Server::start(CHATD).await;
    let token = server.token("tk", "buyer");
    // Raw sockets: exactly what the server writes to the first one.
    use tokio::io::AsyncWriteExt;
    let connect = crate::drain::connect_packet(5, "tk:phone", &token);
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", server.tcp_port))
        .await
        .unwrap();
    first.write_all(&connect).await.unwrap();
    let (kind, connack) = read_packet(&mut first).await.expect("a CONNACK");
    assert_eq!((kind, connack[1]), (0x20, 0), "accepted");
    let mut second = tokio::net::TcpStream::connect(("127.0.0.1", server.tcp_port))
        .await
        .unwrap();
    assert_eq!(crate::drain::connack_code(&mut second, &connect).await, 0);
    let disconnect = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((kind, body)) = read_packet(&mut first).await {
            if kind == 0xE0 {
                return Some(body);
            }
        }
        None
    })
    .await
    .expect("something within 5 s");
    let body = disconnect.expect("a DISCONNECT before the socket closed");
    assert_eq!(
        DisconnectReasonCode::try_from(body[0]).ok(),
        Some(DisconnectReasonCode::SessionTakenOver),
        "reason {:#04x}",
        body[0]
    );
    drop(second);

    let mut claims = Server::claims("tx", "buyer");
    claims.exp = now_secs() + 2;
    let short = server.token_with(&claims);
    let mut expiring = tokio::net::TcpStream::connect(("127.0.0.1", server.tcp_port))
        .await
        .unwrap();
    expiring
        .write_all(&crate::drain::connect_packet(5, "tx", &short))
        .await
        .unwrap();
    let (kind, connack) = read_packet(&mut expiring).await.expect("a CONNACK");
    assert_eq!((kind, connack[1]), (0x20, 0), "accepted");
    let disconnect = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some((kind, body)) = read_packet(&mut expiring).await {
            if kind == 0xE0 {
                return Some(body);
            }
        }
        None
    })
    .await
    .expect("closed within 15 s");
    let body = disconnect.expect("a DISCONNECT before the socket closed");
    assert_eq!(
        DisconnectReasonCode::try_from(body[0]).ok(),
        Some(DisconnectReasonCode::NotAuthorized),
        "an expired token: reason {:#04x}",
        body[0]
    );
}

/// Opens `{"sellerId"|"orderId": target}` as `user` with `role`.
async fn open(server: &Server, user: &str, role: &str, body: serde_json::Value) -> (u16, String) {
    let (status, body) = server
        .request(
            "POST",
            "/chat/threads",
            &server.token(user, role),
            Some(body),
        )
        .await;
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_buyers_open_threads_and_only_with_sellers() {
    let server = Server::start(CHATD).await;
    server.put_users(&["rb1", "rb2"]).await;
    server.put_sellers(&["rs1", "rs2"]).await;
    let with = |id: &str| serde_json::json!({ "sellerId": id });

    let (status, body) = open(&server, "rb1", "buyer", with("rs1")).await;
    assert_eq!(status, 200, "a buyer opens a chat with a shop: {body}");
    let (status, body) = open(&server, "rb1", "buyer", with("rb2")).await;
    assert_eq!(
        status, 404,
        "a buyer cannot open one with another buyer: {body}"
    );
    let (status, body) = open(&server, "rs1", "seller", with("rs2")).await;
    assert_eq!(status, 403, "a seller does not cold-open chats: {body}");
    let (status, _) = open(&server, "ops", "admin", with("rs1")).await;
    assert_eq!(status, 403, "nor does an admin");
    let (status, _) = open(&server, PLATFORM, "platform", with("rs1")).await;
    assert_eq!(status, 403, "nor the platform");

    // A shop that closes (registered again without `seller`) can no
    // longer be contacted; its existing threads stay.
    server.put_users(&["rs2"]).await;
    let (status, _) = open(&server, "rb2", "buyer", with("rs2")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_and_user_ids_cannot_be_probed() {
    let server = Server::start(CHATD).await;
    server.put_users(&["pb1", "pb2"]).await;
    server.put_sellers(&["ps1"]).await;
    let (status, body) = server
        .request(
            "PUT",
            "/internal/orders/po1",
            &server.token(PLATFORM, "platform"),
            Some(serde_json::json!({"buyerId": "pb1", "sellerId": "ps1", "summary": "1 x Áo"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let order = |id: &str| serde_json::json!({ "orderId": id });
    let seller = |id: &str| serde_json::json!({ "sellerId": id });

    // Each party opens the order's thread on its own side.
    assert_eq!(open(&server, "pb1", "buyer", order("po1")).await.0, 200);
    assert_eq!(open(&server, "ps1", "seller", order("po1")).await.0, 200);

    // Everyone else gets exactly what an unknown order gets.
    let missing = open(&server, "pb2", "buyer", order("po-nope")).await;
    assert_eq!(missing.0, 404, "{}", missing.1);
    for (user, role, why) in [
        ("pb2", "buyer", "another buyer"),
        ("pb1", "seller", "the buyer with a seller token"),
        ("ps1", "buyer", "the seller with a buyer token"),
        ("ops", "admin", "an admin"),
    ] {
        assert_eq!(
            open(&server, user, role, order("po1")).await,
            missing,
            "{why} can tell the order exists"
        );
    }

    // A buyer's id answers like an unknown id.
    let missing = open(&server, "pb2", "buyer", seller("nobody")).await;
    assert_eq!(missing.0, 404, "{}", missing.1);
    let buyer = open(&server, "pb2", "buyer", seller("pb1")).await;
    assert_eq!(
        buyer.1.replace("pb1", "nobody"),
        missing.1,
        "a buyer's id can be told from an unknown one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_users_are_kept_to_the_demo_shops() {
    let server = Server::start_with(CHATD, &[("CHAT_DEMO__ENABLED", "true")]).await;
    server.put_users(&["real-buyer"]).await;
    server.put_sellers(&["real-shop"]).await;
    let with = |id: &str| serde_json::json!({ "sellerId": id });

    let (status, body) = open(&server, "demo-buyer-1", "buyer", with("demo-shop-2")).await;
    assert_eq!(status, 200, "a demo buyer chats with a demo shop: {body}");
    let (status, body) = open(&server, "real-buyer", "buyer", with("real-shop")).await;
    assert_eq!(status, 200, "real users are not affected: {body}");
    let (status, _) = open(&server, "demo-buyer-1", "buyer", with("real-shop")).await;
    assert_eq!(status, 404, "a demo buyer cannot reach a real shop");
    let (status, _) = open(&server, "real-buyer", "buyer", with("demo-shop-1")).await;
    assert_eq!(status, 404, "a real buyer cannot reach a demo shop");
}
