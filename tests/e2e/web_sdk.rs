//! The TypeScript SDK against the real server: `web/sdk/test/live.test.ts`
//! run by Vitest (Node.js, mqtt.js speaking MQTT 5 over WebSocket, client
//! protocol v2, the REST facade), pointed at a chatd started here with its
//! defaults (v2 only).

use std::process::Command;

use chat_e2e::{Server, repo_root};

use crate::CHATD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_sdk_speaks_v2_and_resyncs_after_a_network_drop() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("wbuyer", "wseller").await;
    // A buyer the seller has not talked to yet: its thread is opened by
    // the test, and must show up in the seller's inbox.
    server.put_users(&["wbuyer2"]).await;
    let sdk = repo_root().join("web/sdk");
    // `--no`: the SDK's own vitest, never a download (`npm ci --prefix web`
    // installed it; ./scripts/test.sh does that first).
    let output = Command::new("npx")
        .args(["--no", "vitest", "run", "test/live.test.ts"])
        .current_dir(&sdk)
        .env(
            "CHAT_LIVE_MQTT_URL",
            format!("ws://127.0.0.1:{}/mqtt", server.ws_port),
        )
        .env("CHAT_LIVE_REST_URL", server.url(""))
        .env("CHAT_LIVE_THREAD", &thread)
        .env("CHAT_LIVE_BUYER", "wbuyer")
        .env("CHAT_LIVE_SELLER", "wseller")
        .env("CHAT_LIVE_BUYER2", "wbuyer2")
        .env("CHAT_LIVE_BUYER_TOKEN", server.token("wbuyer", "buyer"))
        .env("CHAT_LIVE_SELLER_TOKEN", server.token("wseller", "seller"))
        .env("CHAT_LIVE_BUYER2_TOKEN", server.token("wbuyer2", "buyer"))
        .output()
        .expect("running vitest");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "vitest failed:\n{log}\nchatd log:\n{}",
        server.log()
    );
    assert!(log.contains("2 passed"), "the live tests ran:\n{log}");
}
