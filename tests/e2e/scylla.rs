//! The product on its production store: chatd with `store = "scylla"`
//! against the real CQL server of the test run (Apache Cassandra 5.0).

use chat_e2e::{Server, Via};

use crate::CHATD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_and_seller_chat_with_the_scylla_store() {
    crate::chat_flow::chat_flow_on(Server::start_scylla(CHATD).await, Via::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_kill_9_of_chatd_with_the_scylla_store() {
    crate::durability::survives_kill_9(Server::start_scylla(CHATD).await).await;
}

/// Gateway in `workers` mode and two `chatd persist` workers sharing the
/// hand-over subscription: every message stored once, each sender's acks in
/// its send order, both workers doing part of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_persistence_workers_store_each_message_once_and_ack_in_order() {
    let (server, workers) = gateway_with_two_workers().await;
    const BUYERS: usize = 16;
    const MESSAGES: usize = 10;
    let mut conversations = buyers_on_their_threads(&server, "pb", "ps1", BUYERS).await;
    send_back_to_back(&mut conversations, MESSAGES).await;
    for (buyer, thread, client) in &mut conversations {
        acked_in_order_and_stored_once(&server, buyer, thread, client, MESSAGES, || {
            let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
            logs.join("\n----\n")
        })
        .await;
    }
    let per_worker: Vec<usize> = workers
        .iter()
        .map(|w| w.log().matches("handed-over message processed").count())
        .collect();
    assert_eq!(
        per_worker.iter().sum::<usize>(),
        BUYERS * MESSAGES,
        "{per_worker:?}"
    );
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers shared the load: {per_worker:?}"
    );
}

/// A worker is killed (`kill -9`) mid-conversation: its threads move to the
/// other worker, senders retry what was not acked (as clients must), and
/// when the dead worker comes back and drains its queued hand-overs,
/// nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_its_comeback_duplicates_nothing() {
    use chat_e2e::send_message;
    use chat_protocol::v2::{self, Event};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    let (server, [mut w1, _w2]) = gateway_with_two_workers().await;
    const BUYERS: usize = 8;
    const MESSAGES: usize = 20;
    let mut conversations: Vec<_> = buyers_on_their_threads(&server, "kb", "ks1", BUYERS)
        .await
        .into_iter()
        .map(|(buyer, thread, client)| (buyer, thread, client, BTreeMap::<String, String>::new()))
        .collect();
    let send = |m: usize| (format!("c{m:02}"), format!("tin nhắn {m}"));
    for half in [0..MESSAGES / 2, MESSAGES / 2..MESSAGES] {
        for (_, thread, client, _) in &mut conversations {
            for m in half.clone() {
                let (cmid, text) = send(m);
                client
                    .publish(&v2::thread(thread), send_message(&cmid, &text))
                    .await;
            }
        }
        if half.start == 0 {
            w1.kill9();
        }
    }
    // Collect acks; resend whatever stays unacked for 3 s, like a client.
    for (buyer, thread, client, acked) in &mut conversations {
        let deadline = Instant::now() + Duration::from_secs(90);
        while acked.len() < MESSAGES {
            assert!(Instant::now() < deadline, "{buyer}: {} acks", acked.len());
            match client.event(Duration::from_secs(3)).await {
                // The sender's own copy, or the `ack` of a retry.
                Some((_, Event::Msg(m))) if m.client_msg_id.is_some() => {
                    let client_msg_id = m.client_msg_id.unwrap();
                    if let Some(first) = acked.insert(client_msg_id.clone(), m.id.clone()) {
                        assert_eq!(
                            first, m.id,
                            "{buyer}: {client_msg_id} acked twice differently"
                        );
                    }
                }
                Some((
                    _,
                    Event::Ack {
                        client_msg_id,
                        id: Some(id),
                        ..
                    },
                )) => {
                    if let Some(first) = acked.insert(client_msg_id.clone(), id.clone()) {
                        assert_eq!(
                            first, id,
                            "{buyer}: {client_msg_id} acked twice differently"
                        );
                    }
                }
                Some(_) => {}
                None => {
                    for m in 0..MESSAGES {
                        let (cmid, text) = send(m);
                        if !acked.contains_key(&cmid) {
                            client
                                .publish(&v2::thread(thread), send_message(&cmid, &text))
                                .await;
                        }
                    }
                }
            }
        }
    }
    // The dead worker returns under its name and drains its session.
    let mut w1 = server.spawn_persist_worker("w1");
    w1.wait_for_log("subscribed to hand-overs", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (buyer, thread, _, acked) in &conversations {
        let mut stored = server.text_message_ids(buyer, "buyer", thread).await;
        stored.sort();
        let mut ids: Vec<String> = acked.values().cloned().collect();
        ids.sort();
        assert_eq!(
            stored, ids,
            "{buyer}: every acked message stored exactly once"
        );
    }
}

/// SIGTERM to the only persistence worker while buyers' messages pour in:
/// it reports ready until then, finishes what it took, exits 0; what
/// arrived during its drain waits in its session and is processed when it
/// is back. No client resends anything, and every message is acked and
/// stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_worker_drains_and_its_session_keeps_the_rest() {
    use std::time::Duration;

    let server = Server::start_scylla_with(
        CHATD,
        &[
            ("CHAT_PERSIST__MODE", "workers"),
            ("CHAT_SCYLLA__REQUEST_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    let mut worker = server.spawn_persist_worker("wt");
    worker
        .wait_for_log("subscribed to hand-overs", Duration::from_secs(30))
        .await;
    let ready = reqwest::get(worker.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["broker"], "ok", "{ready}");
    assert_eq!(ready["checks"]["store"], "ok", "{ready}");

    const BUYERS: usize = 8;
    const MESSAGES: usize = 10;
    let mut conversations = buyers_on_their_threads(&server, "tb", "ts1", BUYERS).await;
    send_back_to_back(&mut conversations, MESSAGES).await;
    let status = worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("the worker exits after SIGTERM");
    assert!(
        status.success(),
        "{status}
{}",
        worker.log()
    );
    assert!(worker.log().contains("persistence worker stopped"));
    let before_restart = worker
        .log()
        .matches("handed-over message processed")
        .count();

    let worker = server.spawn_persist_worker("wt");
    for (buyer, thread, client) in &mut conversations {
        acked_in_order_and_stored_once(&server, buyer, thread, client, MESSAGES, || worker.log())
            .await;
    }
    // Both lives of the worker write to the same log.
    let total = worker
        .log()
        .matches("handed-over message processed")
        .count();
    assert_eq!(total, BUYERS * MESSAGES, "each hand-over processed once");
    eprintln!(
        "processed before the drain ended: {before_restart}, after the restart: {}",
        total - before_restart
    );
}

/// A gateway in `workers` mode and two `chatd persist` workers, subscribed.
async fn gateway_with_two_workers() -> (Server, [chat_e2e::Worker; 2]) {
    // Generous store timeouts: on two shared cores a loaded Cassandra can
    // take seconds, and a refused send would be a different test.
    let server = Server::start_scylla_with(
        CHATD,
        &[
            ("CHAT_PERSIST__MODE", "workers"),
            ("CHAT_SCYLLA__REQUEST_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    let mut workers = [
        server.spawn_persist_worker("w1"),
        server.spawn_persist_worker("w2"),
    ];
    for worker in &mut workers {
        worker
            .wait_for_log(
                "subscribed to hand-overs",
                std::time::Duration::from_secs(30),
            )
            .await;
    }
    (server, workers)
}

/// `count` buyers `<prefix><n>`, each connected, subscribed to its own
/// topic (`u/<buyer>`), with its thread to `seller`.
async fn buyers_on_their_threads(
    server: &Server,
    prefix: &str,
    seller: &str,
    count: usize,
) -> Vec<(String, String, chat_e2e::Client)> {
    let mut out = Vec::new();
    for i in 0..count {
        let buyer = format!("{prefix}{i}");
        let thread = server.thread_between(&buyer, seller).await;
        let mut client = chat_e2e::Client::connect(server, &buyer, "buyer", Via::Tcp).await;
        client.subscribe_inbox().await;
        out.push((buyer, thread, client));
    }
    out
}

/// Every buyer sends `count` messages (`c0`, `c1`, …) back to back, without
/// waiting for acks.
async fn send_back_to_back(conversations: &mut [(String, String, chat_e2e::Client)], count: usize) {
    for (_, thread, client) in conversations {
        for m in 0..count {
            client
                .publish(
                    &chat_protocol::v2::thread(thread),
                    chat_e2e::send_message(&format!("c{m}"), &format!("tin nhắn {m}")),
                )
                .await;
        }
    }
}

/// Waits for `count` answers (`c0`, `c1`, …) on `client` (the sender's
/// own copies: workers answer 3.1.1 senders so): every one a success, in
/// send order, and the thread's history holds exactly those messages in
/// that order. `worker_logs` is shown if answers stop coming.
async fn acked_in_order_and_stored_once(
    server: &Server,
    buyer: &str,
    thread: &str,
    client: &mut chat_e2e::Client,
    count: usize,
    worker_logs: impl Fn() -> String,
) {
    use std::time::Duration;

    let mut acked = Vec::new();
    while acked.len() < count {
        let (_, event) = client
            .event(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{buyer}: only {} acks {acked:?}\nworker logs:\n{}\ngateway:\n{}",
                    acked.len(),
                    worker_logs(),
                    server.log()
                )
            });
        // An answer names its key: the own copy's `k`, or the `ack`'s.
        let key = match &event {
            chat_protocol::v2::Event::Msg(m) => m.client_msg_id.clone(),
            chat_protocol::v2::Event::Ack { client_msg_id, .. } => Some(client_msg_id.clone()),
            _ => None,
        };
        if let Some(key) = key
            && let Some(answer) = chat_e2e::answer_to(&event, thread, &key)
        {
            match answer {
                Ok(id) => acked.push((key, id)),
                Err(err) => panic!("{buyer}: {key} refused: {err:?}"),
            }
        }
    }
    let order: Vec<String> = acked.iter().map(|(c, _)| c.clone()).collect();
    let expected: Vec<String> = (0..count).map(|m| format!("c{m}")).collect();
    assert_eq!(order, expected, "{buyer}: acks in send order");
    let stored = server.text_message_ids(buyer, "buyer", thread).await;
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(stored, ids, "{buyer}: each message stored once, in order");
}

/// A hand-over the worker fails on is set aside, not retried forever: a
/// panic at once, a crash (abort) after `persist.max_deliveries` deliveries.
/// Either way its sender gets a failed ack (`internal`), the audit log and
/// the worker's `dead-letters/` keep it, and the thread goes on. The faults
/// are injected in the debug binary (`CHATD_FAULT_PERSIST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_that_crashes_the_worker_is_set_aside() {
    use chat_e2e::send_message;
    use chat_protocol::ErrorCode;
    use chat_protocol::v2;
    use std::time::{Duration, Instant};

    let server = Server::start_scylla_with(
        CHATD,
        &[
            ("CHAT_PERSIST__MODE", "workers"),
            ("CHAT_SCYLLA__REQUEST_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    let worker =
        |fault: &str| server.spawn_worker("persist", "wp", &[("CHATD_FAULT_PERSIST", fault)]);
    let mut wp = worker("panic:PANIC-ME");
    wp.wait_for_log("subscribed to hand-overs", Duration::from_secs(30))
        .await;
    let [(buyer, thread, mut client)]: [_; 1] = buyers_on_their_threads(&server, "pb", "ps", 1)
        .await
        .try_into()
        .ok()
        .unwrap();
    let inbound = v2::thread(&thread);
    // The answer to `cmid`: Ok(message id) or Err(code). While waiting, a
    // worker that exited is started again, as a supervisor would.
    async fn ack_of(
        client: &mut chat_e2e::Client,
        thread: &str,
        cmid: &str,
        mut restart: impl FnMut() -> bool,
    ) -> Result<String, ErrorCode> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(Instant::now() < deadline, "no answer to {cmid}");
            restart();
            if let Some((_, event)) = client.event(Duration::from_millis(500)).await
                && let Some(answer) = chat_e2e::answer_to(&event, thread, cmid)
            {
                return answer.map_err(|e| e.code);
            }
        }
    }

    client
        .publish(&inbound, send_message("p1", "xin chào PANIC-ME"))
        .await;
    assert_eq!(
        ack_of(&mut client, &thread, "p1", || false).await,
        Err(ErrorCode::Internal)
    );
    client.publish(&inbound, send_message("p2", "vẫn ổn")).await;
    let p2 = ack_of(&mut client, &thread, "p2", || false)
        .await
        .expect("the thread goes on");
    assert!(
        wp.exited().is_none(),
        "a panic does not take the worker down"
    );
    assert!(wp.terminate(Duration::from_secs(20)).await.is_some());

    // A fault no unwinding survives: the worker dies on each delivery.
    let mut wp = worker("abort:ABORT-ME");
    wp.wait_for_log("subscribed to hand-overs", Duration::from_secs(30))
        .await;
    client
        .publish(&inbound, send_message("a1", "ABORT-ME"))
        .await;
    let mut crashes = 0;
    let outcome = ack_of(&mut client, &thread, "a1", || {
        if wp.exited().is_some() {
            crashes += 1;
            assert!(crashes <= 5, "the worker keeps crashing:\n{}", wp.log());
            wp = worker("abort:ABORT-ME");
        }
        true
    })
    .await;
    assert_eq!(outcome, Err(ErrorCode::Internal));
    assert_eq!(crashes, 3, "set aside after persist.max_deliveries (3)");
    client
        .publish(&inbound, send_message("a2", "vẫn ổn chứ"))
        .await;
    let a2 = ack_of(&mut client, &thread, "a2", || false)
        .await
        .expect("the thread goes on");

    // Stored: only the good ones. Recorded: both set aside, with payloads.
    let stored = server.text_message_ids(&buyer, "buyer", &thread).await;
    assert_eq!(stored, [p2, a2]);
    let (status, audit) = server
        .request(
            "GET",
            "/admin/audit?limit=50",
            &server.token("ops", "admin"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let dead: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "persist_dead_letter")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .any(|d| d.contains("a1") && d.contains("max_deliveries")),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|d| d.contains("p1") && d.contains("panicked")),
        "{dead:?}"
    );
    let kept = std::fs::read_dir(server.data_dir().join("data-wp").join("dead-letters"))
        .unwrap()
        .count();
    assert_eq!(kept, 2);
}
