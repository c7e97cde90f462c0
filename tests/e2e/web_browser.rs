//! The demo storefront in Debian's Chromium: `web/e2e/test/browser.test.ts`
//! (playwright-core driving `/usr/bin/chromium`, two browser contexts: a
//! buyer on the product and order pages, a seller in Seller Center) run by
//! Vitest against a chatd started here with the demo on.
//!
//! Screenshots land in `target/screenshots/`; with
//! `CHAT_UPDATE_SCREENSHOTS=1` in `docs/screenshots/` (committed, shown in
//! the README).

use std::process::Command;
use std::time::Duration;

use chat_e2e::{Server, repo_root};
use chat_protocol::MessageType;
use chat_protocol::v2;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::CHATD;

/// Messages in the seeded conversation (the first page holds 50).
const HISTORY: u32 = 75;
/// Other buyers of demo-shop-2 (an inbox page holds 30 threads).
const INBOX_BUYERS: u32 = 35;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_and_seller_chat_in_chromium() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_DEMO__ENABLED", "true"),
            // Only the history seeded below is sent faster than a person types.
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "1000"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "1000"),
        ],
    )
    .await;
    // A busy shop: more buyers than one inbox page (30) holds (demo users
    // too: the demo's users and others never meet).
    for n in 1..=INBOX_BUYERS {
        server
            .thread_between(&format!("demo-shopper-{n:02}"), "demo-shop-2")
            .await;
    }
    // A long conversation for Seller Center's infinite scroll: more than
    // the first history page, sent over MQTT like any client would
    // (protocol v2, MQTT 5: each send answered by its PUBACK).
    let buyer = server.token("demo-buyer-2", "buyer");
    let (status, thread) = server
        .request(
            "POST",
            "/chat/threads",
            &buyer,
            Some(serde_json::json!({"sellerId": "demo-shop-2", "productId": "demo-p-noicom"})),
        )
        .await;
    assert_eq!(status, 200, "{thread}");
    let thread = thread["id"].as_str().expect("thread id").to_owned();
    seed_history(&server, "demo-buyer-2", &thread).await;
    let root = repo_root();
    let shots = if std::env::var_os("CHAT_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    };
    // `--no`: the workspace's own vitest, never a download (`npm ci
    // --prefix web` installed it; ./scripts/test.sh does that first).
    let output = Command::new("npx")
        .args(["--no", "vitest", "run", "test/browser.test.ts"])
        .current_dir(root.join("web/e2e"))
        .env("CHAT_E2E_URL", server.url(""))
        .env("CHAT_E2E_SHOTS", &shots)
        .env("CHAT_E2E_HISTORY", HISTORY.to_string())
        .env("CHAT_E2E_INBOX_BUYERS", INBOX_BUYERS.to_string())
        .output()
        .expect("running vitest");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "browser test failed:\n{log}\nchatd log:\n{}",
        server.log()
    );
    assert!(log.contains("4 passed"), "the browser tests ran:\n{log}");
    for shot in [
        "product-page-widget",
        "order-page-widget",
        "seller-center",
        "seller-center-phone",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).is_file(),
            "{shot}.png taken"
        );
    }
}

/// Sends `HISTORY` texts into `thread` as `user`, one at a time, over
/// MQTT 5 and protocol v2 (`msg` to `t/<thread>`); each must be stored, as
/// its PUBACK says (User Property `id`).
async fn seed_history(server: &Server, user: &str, thread: &str) {
    let mut opts = MqttOptions::new(format!("{user}:seed"), "127.0.0.1", server.tcp_port);
    opts.set_credentials(user, server.token(user, "buyer"));
    opts.set_keep_alive(Duration::from_secs(30));
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 16);
    let mut ids = Vec::new();
    for n in 1..=HISTORY {
        let command = v2::Command::Msg {
            client_msg_id: format!("seed-{n}"),
            content: format!("Tin cũ thứ {n}"),
            kind: MessageType::Text,
        };
        mqtt.publish(
            v2::thread(thread),
            QoS::AtLeastOnce,
            false,
            v2::encode(&command),
        )
        .await
        .expect("queued");
        let id = loop {
            let Ok(polled) = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await
            else {
                panic!("no PUBACK for message {n} within 10 s");
            };
            let event = polled.unwrap_or_else(|e| panic!("connection lost at message {n}: {e:?}"));
            if let Event::Incoming(Packet::PubAck(ack)) = event {
                let properties = ack.properties.map(|p| p.user_properties);
                break properties
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|(name, value)| (name == "id").then_some(value))
                    .unwrap_or_else(|| panic!("message {n} not stored: {:?}", ack.reason));
            }
        };
        ids.push(id);
    }
    // Stored in order: message ids are time-ordered.
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "{HISTORY} distinct messages, in order");
    let _ = mqtt.disconnect().await;
}
