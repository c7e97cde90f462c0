//! The demo storefront in Debian's Chromium: `web/e2e/test/browser.test.ts`
//! (playwright-core driving `/usr/bin/chromium`, two browser contexts: a
//! buyer on the product and order pages, a seller in Seller Center) run by
//! Vitest against a chatd started here with the demo on.
//!
//! Screenshots land in `target/screenshots/`; with
//! `CHAT_UPDATE_SCREENSHOTS=1` in `docs/screenshots/` (committed, shown in
//! the README).

use std::process::Command;

use chat_e2e::{Client, Server, Via, repo_root};

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
    // the first history page, sent over MQTT like any client would.
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
    let mut client = Client::connect(&server, "demo-buyer-2", "buyer", Via::Tcp).await;
    assert!(
        client.subscribe("user/demo-buyer-2").await,
        "acks come on the user topic"
    );
    for n in 1..=HISTORY {
        client
            .send_text(&thread, &format!("seed-{n}"), &format!("Tin cũ thứ {n}"))
            .await
            .expect("stored");
    }
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
