//! Operations endpoints on a real chatd: `/healthz`, `/readyz` and a
//! Prometheus scrape of `/metrics` after a short chat.

use std::collections::BTreeMap;
use std::time::Duration;

use chat_e2e::{Client, Connect, Server, Via, options, send_message};
use chat_protocol::ErrorCode;
use chat_protocol::v2::Event;

use crate::CHATD;

/// One sample line of the text format: `name{labels} value`.
fn parse_sample(line: &str) -> Option<(String, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let name_end = series.find('{').unwrap_or(series.len());
    let name = &series[..name_end];
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    let valid_labels = name_end == series.len()
        || (series.ends_with('}')
            && series[name_end + 1..series.len() - 1]
                .split("\",")
                .all(|pair| pair.contains("=\"")));
    (valid_name && valid_labels).then(|| (series.to_owned(), value))
}

/// The scrape as series → value; panics on a line that does not parse.
fn scrape_text(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "unexpected comment line {line:?}"
            );
            if let Some(kind) = comment.strip_prefix("TYPE ") {
                let (_, kind) = kind.rsplit_once(' ').expect("TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line:?}"
                );
            }
            continue;
        }
        let (series, value) =
            parse_sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        assert!(
            samples.insert(series.clone(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

async fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let response = reqwest::get(server.url("/metrics")).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    scrape_text(&response.text().await.unwrap())
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} not scraped; have {:#?}", samples.keys()))
}

#[tokio::test]
async fn healthz_and_readyz_answer_on_a_running_node() {
    let server = Server::start(CHATD).await;
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "ready": true,
            "checks": {"drain": "ok", "mqtt": "ok", "store": "ok"}
        })
    );
}

#[tokio::test]
async fn readyz_follows_the_nats_connection() {
    let nats = chat_e2e::nats::NatsServer::start().await;
    let server = Server::start_with(CHATD, &[("CHAT_NATS__URL", &nats.url())]).await;
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["nats"], "ok", "{body}");
    // The notification queue's depth is sampled from JetStream.
    let samples = scrape(&server).await;
    assert_eq!(
        value(&samples, "chat_queue_depth{queue=\"notifications\"}"),
        0.0
    );

    drop(nats);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = reqwest::get(server.url("/readyz")).await.unwrap();
        if response.status() == 503 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["ready"], false);
            assert_ne!(body["checks"]["nats"], "ok", "{body}");
            assert_eq!(body["checks"]["store"], "ok", "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still 200 without NATS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Alive all the same.
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn readyz_pings_the_scylla_store() {
    let server = Server::start_scylla(CHATD).await;
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["store"], "ok", "{body}");
}

/// A short chat on `server`: a thread opened, one message, read by the
/// seller (both sides told), a publish into someone else's thread, and a
/// CONNECT with a bad token. The buyer, the seller and the thread.
async fn short_chat(server: &Server) -> (Client, Client, String) {
    let thread = server.thread_between("ops-buyer", "ops-seller").await;
    let mut buyer = Client::connect(server, "ops-buyer", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(server, "ops-seller", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    // One message, read by the seller; the history over REST.
    let id = buyer
        .send_text(&thread, "ops-1", "Áo còn size M không shop?")
        .await
        .expect("stored");
    seller
        .expect("msg", |_, e| {
            matches!(e, Event::Msg(m) if m.id == id).then_some(())
        })
        .await;
    seller.read(&thread, &id).await;
    for (client, what) in [
        (&mut buyer, "the seller's read"),
        (&mut seller, "its own read"),
    ] {
        client
            .expect(what, |_, e| {
                matches!(e, Event::Read { user_id, up_to, .. } if user_id == "ops-seller" && *up_to == id)
                    .then_some(())
            })
            .await;
    }
    assert_eq!(
        server.text_message_ids("ops-buyer", "buyer", &thread).await,
        [id]
    );

    // A publish into someone else's thread, and a CONNECT with a bad token.
    buyer
        .publish("t/not-mine", send_message("ops-2", "x"))
        .await;
    let code = buyer
        .expect("forbidden", |_, e| match e {
            Event::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::Forbidden);
    let refused = Client::try_connect(
        options(server, "ops-buyer:2", "ops-buyer", "not-a-token", Via::Tcp),
        "ops-buyer",
    )
    .await;
    assert!(matches!(refused, Connect::Refused(_)));
    (buyer, seller, thread)
}

#[tokio::test]
async fn metrics_move_with_a_short_chat_and_parse() {
    let server = Server::start(CHATD).await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, "chat_messages_in_total"), 0.0);
    assert_eq!(value(&before, "chat_draining"), 0.0);

    let (buyer, seller, thread) = short_chat(&server).await;

    let after = scrape(&server).await;
    assert_eq!(value(&after, "chat_messages_in_total"), 1.0);
    assert_eq!(value(&after, "chat_ack_latency_seconds_count"), 1.0);
    assert_eq!(
        value(&after, "chat_ack_latency_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert_eq!(value(&after, "chat_delivery_latency_seconds_count"), 1.0);
    assert_eq!(
        value(&after, "chat_store_latency_seconds_count{op=\"append\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "chat_store_latency_seconds_count{op=\"mark_read\"}"),
        1.0
    );
    assert!(value(&after, "chat_store_latency_seconds_count{op=\"history\"}") >= 1.0);
    // v2 only: nothing on v1's thread/… any more. (How the events on
    // u/… are counted: `v2_events_are_counted_as_user_topic_events`.)
    assert_eq!(
        value(&after, "chat_messages_out_total{topic=\"thread\"}"),
        0.0
    );
    assert_eq!(value(&after, "chat_mqtt_connections"), 2.0);
    assert_eq!(
        value(&after, "chat_connect_refused_total{reason=\"bad_token\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "chat_publish_refused_total{code=\"forbidden\"}"),
        1.0
    );
    assert_eq!(value(&after, "chat_sends_in_flight"), 0.0);
    // Histogram buckets are cumulative: they only grow with `le`.
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(series, count)| {
            let le = series
                .strip_prefix("chat_ack_latency_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 14, "13 bounds and +Inf");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    // No user or thread id leaked into a label.
    for series in after.keys() {
        assert!(
            !series.contains("ops-") && !series.contains(&thread),
            "{series}"
        );
    }
    drop(buyer);
    drop(seller);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The events of a short chat go to users' topics, `u/…` in v2: two
/// `thread` rows, the message to both, the read to both, the error; all
/// counted as `topic="user"`.
#[tokio::test]
async fn v2_events_are_counted_as_user_topic_events() {
    let server = Server::start(CHATD).await;
    let (_buyer, _seller, _thread) = short_chat(&server).await;
    let after = scrape(&server).await;
    assert!(
        value(&after, "chat_messages_out_total{topic=\"user\"}") >= 7.0,
        "user {}, other {}",
        value(&after, "chat_messages_out_total{topic=\"user\"}"),
        value(&after, "chat_messages_out_total{topic=\"other\"}")
    );
    assert_eq!(
        value(&after, "chat_messages_out_total{topic=\"other\"}"),
        0.0
    );
}

#[test]
fn sample_lines_parse() {
    assert_eq!(
        parse_sample("chat_messages_in_total 1"),
        Some(("chat_messages_in_total".into(), 1.0))
    );
    assert_eq!(
        parse_sample("chat_push_total{channel=\"fcm\",result=\"sent\"} 3"),
        Some((
            "chat_push_total{channel=\"fcm\",result=\"sent\"}".into(),
            3.0
        ))
    );
    assert!(parse_sample("chat_x{bad} 1").is_none());
    assert!(parse_sample("chat_x one").is_none());
}
