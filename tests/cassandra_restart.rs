//! Cassandra crashes (`kill -9`) and comes back while a buyer keeps
//! sending through chatd (`store = "scylla"`). Its own test binary: it
//! takes down the CQL server every other Cassandra test shares, and cargo
//! runs test binaries one at a time.
//!
//! While the store is down every send is answered with a failed `ack`
//! (`unavailable`), never a false one; once it is back
//! the same client message ids go through, each stored exactly once, and
//! every message acked at any point is in the history.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chat_e2e::{Client, Server, Via, answer_to, cassandra, send_message};
use chat_protocol::{ErrorCode, v2};

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

#[derive(Default)]
struct Outcomes {
    acked: BTreeMap<String, String>,
    refused: BTreeSet<String>,
}

/// Publishes `cmid` and waits for its answer (the own copy, or an `ack`),
/// success or not.
async fn send(client: &mut Client, thread: &str, cmid: &str, outcomes: &mut Outcomes) -> bool {
    client
        .publish(
            &v2::thread(thread),
            send_message(cmid, &format!("tin nhắn {cmid}")),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some((_, event)) = client.event(Duration::from_secs(1)).await else {
            continue;
        };
        if let Some(answer) = answer_to(&event, thread, cmid) {
            return match answer {
                Ok(id) => {
                    outcomes.refused.remove(cmid);
                    if let Some(earlier) = outcomes.acked.insert(cmid.to_owned(), id.clone()) {
                        assert_eq!(earlier, id, "a retry of {cmid} got a new message");
                    }
                    true
                }
                Err(error) => {
                    assert_eq!(error.code, ErrorCode::Unavailable, "{error:?}");
                    assert!(!error.msg.is_empty());
                    assert!(
                        !outcomes.acked.contains_key(cmid),
                        "{cmid} was acked, then refused"
                    );
                    outcomes.refused.insert(cmid.to_owned());
                    false
                }
            };
        }
    }
    panic!("no answer to {cmid} within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_cleanly_while_cassandra_is_down_and_nothing_acked_is_lost() {
    // Durability, not anti-spam: the retries below would hit the limits.
    let server = Server::start_scylla_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "1000"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "1000"),
        ],
    )
    .await;
    let thread = server.thread_between("b1", "s1").await;
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut outcomes = Outcomes::default();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("m-{n}")
    };

    for _ in 0..10 {
        assert!(send(&mut buyer, &thread, &next(), &mut outcomes).await);
    }

    cassandra("kill9").await;
    let mut refused_while_down = 0;
    for _ in 0..5 {
        if !send(&mut buyer, &thread, &next(), &mut outcomes).await {
            refused_while_down += 1;
        }
    }
    assert_eq!(
        refused_while_down, 5,
        "no send may be acked while the store is down"
    );

    cassandra("start").await;
    // The driver reconnects by itself; keep sending new messages until one
    // goes through, then retry every refused one under its own id.
    let back = Instant::now();
    loop {
        if send(&mut buyer, &thread, &next(), &mut outcomes).await {
            break;
        }
        if back.elapsed() > Duration::from_secs(90) {
            let log = server.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "chatd never recovered; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retries: Vec<String> = outcomes.refused.iter().cloned().collect();
    for cmid in &retries {
        assert!(
            send(&mut buyer, &thread, cmid, &mut outcomes).await,
            "retry of {cmid}"
        );
    }
    // A retry of a message acked before the crash is still not duplicated.
    assert!(send(&mut buyer, &thread, "m-3", &mut outcomes).await);
    assert!(outcomes.refused.is_empty());

    let stored = server.text_message_ids("b1", "buyer", &thread).await;
    let stored_set: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), stored_set.len(), "no message stored twice");
    let acked: BTreeSet<&String> = outcomes.acked.values().collect();
    let unacked: Vec<_> = stored_set.difference(&acked).collect();
    let lost: Vec<_> = acked.difference(&stored_set).collect();
    assert!(
        unacked.is_empty() && lost.is_empty(),
        "history holds exactly the acked messages; stored but not acked: {unacked:?}; \
         acked but not stored: {lost:?}; acks: {:?}",
        outcomes.acked
    );
}
