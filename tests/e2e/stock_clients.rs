//! Debian's mosquitto clients, a stock MQTT implementation from another
//! project, work unchanged with a protocol v2 MessagePack payload made
//! here: one subscription to `u/<me>`, commands published to `t/<thread>`.

use std::process::{Command, Stdio};
use std::time::Duration;

use chat_e2e::{Server, send_message};
use chat_protocol::v2;

use crate::CHATD;

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_and_sub_chat_through_the_server() {
    let server = Server::start(CHATD).await;
    let thread = server.thread_between("b1", "s1").await;

    // The seller listens with mosquitto_sub over MQTT 5 (the buyer below
    // publishes over 3.1.1): one `msg`, printed as hex.
    let seller = mosquitto(
        &server,
        "mosquitto_sub",
        "5",
        "s1:cli",
        "s1",
        &server.token("s1", "seller"),
    )
    .args([
        "-t",
        &v2::user("s1"),
        "-q",
        "1",
        "-C",
        "1",
        "-W",
        "20",
        "-F",
        "%x",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("mosquitto_sub from Debian's mosquitto-clients must be installed");
    tokio::time::sleep(Duration::from_millis(700)).await;

    let payload = server.data_dir().join("send.msgpack");
    std::fs::write(&payload, send_message("mq-1", "Gửi từ mosquitto_pub")).unwrap();
    let status = mosquitto(
        &server,
        "mosquitto_pub",
        "311",
        "b1:cli",
        "b1",
        &server.token("b1", "buyer"),
    )
    .args(["-t", &v2::thread(&thread), "-q", "1", "-f"])
    .arg(&payload)
    .status()
    .expect("mosquitto_pub");
    assert!(status.success());

    let out = tokio::task::spawn_blocking(move || seller.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event = v2::decode_event(&hex_decode(hex.trim())).expect("a protocol v2 event");
    match event {
        v2::Event::Msg(message) => {
            assert_eq!(message.content, "Gửi từ mosquitto_pub");
            assert_eq!(message.from.as_deref(), Some("b1"));
            assert_eq!(message.thread_id, thread);
            assert_eq!(message.client_msg_id, None, "the key is the sender's");
        }
        other => panic!("expected a msg, got {other:?}"),
    }

    // mosquitto_sub is refused a wildcard: it reports the failed SUBACK.
    let out = mosquitto(
        &server,
        "mosquitto_sub",
        "311",
        "b1:cli2",
        "b1",
        &server.token("b1", "buyer"),
    )
    .args(["-t", "u/+", "-C", "1", "-W", "3"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("denied"), "{stderr}");

    // A forged token over MQTT 5 gets CONNACK 0x86, which mosquitto reports.
    let out = mosquitto(&server, "mosquitto_sub", "5", "b1", "b1", "forged")
        .args(["-t", "u/b1", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success());
    assert!(stderr.contains("bad user name or password"), "{stderr}");
}

/// The buyer's app is a stock mosquitto_sub: the seller's inbox shows the
/// buyer online while it is connected, and when it was last seen once the
/// process is gone (no DISCONNECT: the socket just closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_shows_whether_the_other_party_is_online() {
    use crate::chat_flow::other_presence;
    let server = Server::start(CHATD).await;
    server.thread_between("on-b", "on-s").await;
    let seller = server.token("on-s", "seller");
    assert_eq!(other_presence(&server, &seller).await, (false, None));

    let mut app = mosquitto(
        &server,
        "mosquitto_sub",
        "311",
        "on-b:phone",
        "on-b",
        &server.token("on-b", "buyer"),
    )
    .args(["-t", "u/on-b", "-W", "60"])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("mosquitto_sub");
    let became = |want: bool| {
        let (server, seller) = (&server, &seller);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (online, last_seen) = other_presence(server, seller).await;
                if online == want {
                    return last_seen;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never online = {want}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    became(true).await;
    app.kill().unwrap();
    app.wait().unwrap();
    let last_seen = became(false).await;
    assert!(last_seen.is_some_and(|t| t > 0), "last seen is kept");
}

/// A mosquitto client connected to the test server: protocol version
/// (`311` or `5`), client id, user name and token as password.
fn mosquitto(
    server: &Server,
    tool: &str,
    version: &str,
    client_id: &str,
    user: &str,
    token: &str,
) -> Command {
    let mut command = Command::new(tool);
    command
        .args([
            "-V",
            version,
            "-h",
            "127.0.0.1",
            "-p",
            &server.tcp_port.to_string(),
        ])
        .args(["-i", client_id, "-u", user, "-P", token]);
    command
}
