//! Scaled-out notifications: `chatd serve` on the CQL store enqueues push
//! jobs in NATS JetStream; two `chatd push` workers share them. Each worker
//! talks to its own FCM stand-in, so the test sees which worker did what.

use std::time::Duration;

use chat_e2e::nats::NatsServer;
use chat_e2e::{Client, Server, Via, fake_fcm, wait_for};
use serde_json::Value;

use crate::CHATD;

/// Pushes accepted for `token`, by either stand-in.
fn pushes(fakes: &[&fake_fcm::Shared], token: &str) -> Vec<Value> {
    fakes
        .iter()
        .flat_map(|fake| {
            fake.lock()
                .unwrap()
                .sent
                .iter()
                .filter(|m| m["message"]["token"] == token)
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Device tokens a stand-in refused during the outage, without repeats.
fn refused(fake: &fake_fcm::Shared) -> Vec<String> {
    let mut tokens = fake.lock().unwrap().refused_while_down.clone();
    tokens.sort();
    tokens.dedup();
    tokens
}

/// NATS, and `chatd serve` on the CQL store enqueueing push jobs in
/// JetStream for `chatd push` workers (none in process), with `extra`.
async fn gateway_on_nats(extra: &[(&str, &str)]) -> (NatsServer, Server) {
    let nats = NatsServer::start().await;
    let nats_url = nats.url();
    let mut env = vec![
        ("CHAT_NATS__URL", nats_url.as_str()),
        ("CHAT_PUSH__IN_PROCESS", "false"),
    ];
    env.extend_from_slice(extra);
    let server = Server::start_scylla_with(CHATD, &env).await;
    (nats, server)
}

/// A thread from `seller` to `buyer`, whose phone (`dev-<buyer>`) is
/// registered for FCM.
async fn thread_to_a_phone(server: &Server, buyer: &str, seller: &str) -> String {
    let thread = server.thread_between(buyer, seller).await;
    server.put_fcm_device(buyer, &format!("dev-{buyer}")).await;
    thread
}

/// A running `chatd push` worker named `name` with its own FCM stand-in
/// (and the credentials file, kept while the worker needs it).
async fn push_worker(
    server: &Server,
    name: &str,
    extra: &[(&str, &str)],
) -> (chat_e2e::Worker, fake_fcm::Shared, tempfile::NamedTempFile) {
    let (base, fake) = fake_fcm::start().await;
    let file = fake_fcm::credentials_file(&base);
    let mut env = vec![
        (
            "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
            file.path().to_str().unwrap(),
        ),
        ("CHAT_PUSH__FCM__BASE_URL", base.as_str()),
    ];
    env.extend_from_slice(extra);
    let mut worker = server.spawn_worker("push", name, &env);
    worker
        .wait_for_log("push worker running", Duration::from_secs(60))
        .await;
    (worker, fake, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_push_workers_share_jetstream_and_each_notification_goes_out_once() {
    let (nats, server) = gateway_on_nats(&[
        ("CHAT_NATS__ACK_WAIT_SECS", "3"),
        ("CHAT_PUSH__COLLAPSE_WINDOW_MS", "500"),
    ])
    .await;
    let mut fakes = Vec::new();
    let mut credentials = Vec::new();
    let mut workers = Vec::new();
    for name in ["wa", "wb"] {
        let (base, fake) = fake_fcm::start().await;
        let file = fake_fcm::credentials_file(&base);
        let env = [
            (
                "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
                file.path().to_str().unwrap().to_owned(),
            ),
            ("CHAT_PUSH__FCM__BASE_URL", base.clone()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut worker = server.spawn_worker("push", name, &env);
        worker
            .wait_for_log("push worker running", Duration::from_secs(60))
            .await;
        workers.push((
            worker,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        ));
        credentials.push(file);
        fakes.push(fake);
    }
    let all = [&fakes[0], &fakes[1]];

    let buyers: Vec<String> = (0..12).map(|i| format!("jb{i}")).collect();
    let mut threads = Vec::new();
    for buyer in buyers.iter().chain(["jonline".to_owned()].iter()) {
        threads.push(thread_to_a_phone(&server, buyer, "js").await);
    }
    // This buyer has the app open: the gateway enqueues nothing for it.
    let _online = Client::connect(&server, "jonline", "buyer", Via::Tcp).await;
    let mut seller = Client::connect(&server, "js", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let mut owed = Vec::new();
    let send = async |i: usize, seller: &mut Client| {
        seller
            .send_text(&threads[i], &format!("m-{i}"), &format!("tin {i}"))
            .await
            .expect("stored")
    };

    // FCM down for both workers: they take the jobs and fail.
    for fake in all {
        fake.lock().unwrap().down = true;
    }
    for i in 0..6 {
        owed.push(send(i, &mut seller).await);
    }
    wait_for("attempts on all six", Duration::from_secs(20), || {
        let mut tokens = [refused(&fakes[0]), refused(&fakes[1])].concat();
        tokens.sort();
        tokens.dedup();
        (tokens.len() == 6).then_some(())
    })
    .await;
    // Kill a worker that holds jobs (the one whose FCM saw attempts).
    let victim = if refused(&fakes[0]).is_empty() { 1 } else { 0 };
    let survivor = 1 - victim;
    workers[victim].0.kill9();
    let held_by_victim = refused(&fakes[victim]);
    assert!(!held_by_victim.is_empty());
    for fake in all {
        fake.lock().unwrap().down = false;
    }
    // Every owed push arrives; those the dead worker held, from the other.
    wait_for("the six owed pushes", Duration::from_secs(40), || {
        (0..6)
            .all(|i| !pushes(&all, &format!("dev-jb{i}")).is_empty())
            .then_some(())
    })
    .await;
    for token in &held_by_victim {
        assert!(
            !pushes(&[&fakes[survivor]], token).is_empty(),
            "{token}: taken over by the surviving worker"
        );
    }

    // The killed worker comes back; six more, with FCM up.
    let env: Vec<(&str, &str)> = workers[victim]
        .1
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let name = if victim == 0 { "wa" } else { "wb" };
    let restarted = server.spawn_worker("push", name, &env);
    workers[victim].0 = restarted;
    for i in 6..12 {
        owed.push(send(i, &mut seller).await);
    }
    // And one to the buyer with the app open.
    let _ = send(12, &mut seller).await;
    wait_for("the next six pushes", Duration::from_secs(30), || {
        (6..12)
            .all(|i| !pushes(&all, &format!("dev-jb{i}")).is_empty())
            .then_some(())
    })
    .await;
    // Room for a duplicate to show up, if one were sent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (i, message_id) in owed.iter().enumerate() {
        let ids: Vec<String> = pushes(&all, &format!("dev-jb{i}"))
            .iter()
            .map(|p| {
                p["message"]["data"]["messageId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            ids,
            std::slice::from_ref(message_id),
            "jb{i}: exactly one push"
        );
    }
    assert!(
        pushes(&all, "dev-jonline").is_empty(),
        "no push for a buyer with the app open"
    );
    drop(nats);
}

/// A push worker's operations endpoint, and its drain on SIGTERM: an update
/// folded by the collapse window goes out at once instead of being left
/// for the window to close, and the worker exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_worker_reports_ready_and_sends_folded_updates_when_terminated() {
    let (nats, server) = gateway_on_nats(&[
        // Far longer than the test: a folded update can only go out
        // early, at the drain.
        ("CHAT_PUSH__COLLAPSE_WINDOW_MS", "600000"),
        ("CHAT_RATE_LIMITS__MESSAGES_BURST", "50"),
    ])
    .await;
    let (mut worker, fake, _credentials) = push_worker(
        &server,
        "wd",
        &[("CHAT_LOG", "info,chatd=debug,chat_push=debug")],
    )
    .await;
    let http = reqwest::Client::new();
    let ready = http.get(worker.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["nats"], "ok", "{ready}");
    assert_eq!(ready["checks"]["store"], "ok", "{ready}");

    let thread = thread_to_a_phone(&server, "db1", "ds").await;
    let mut seller = Client::connect(&server, "ds", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            seller
                .send_text(&thread, &format!("d-{i}"), &format!("drain {i}"))
                .await
                .expect("stored"),
        );
    }
    let pushed_ids = || fake_fcm::pushed_message_ids(&fake, "dev-db1");
    // The first at once; the other two wait, folded, in the worker.
    wait_for("the first push", Duration::from_secs(20), || {
        (!pushed_ids().is_empty()).then_some(())
    })
    .await;
    wait_for(
        "the two others taken and folded",
        Duration::from_secs(20),
        || (worker.log().matches("push folded").count() == 2).then_some(()),
    )
    .await;
    assert_eq!(pushed_ids(), vec![ids[0].clone()], "the others are folded");
    let metrics = http
        .get(worker.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"chat_push_total{channel="fcm",result="sent"} 1"#),
        "{metrics}"
    );

    let status = worker
        .terminate(Duration::from_secs(20))
        .await
        .expect("the worker exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", worker.log());
    assert_eq!(
        pushed_ids(),
        vec![ids[0].clone(), ids[2].clone()],
        "the folded update (latest message) went out at the drain:\n{}",
        worker.log()
    );
    assert!(worker.log().contains("push worker stopped"));
    drop(nats);
}

/// Push jobs owed when nats-server itself is killed (`kill -9`) are in its
/// store: after its restart the worker sends every one, once, and the
/// gateway and the worker carry on without being restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owed_pushes_survive_a_kill_9_of_nats_server() {
    let (mut nats, server) = gateway_on_nats(&[("CHAT_NATS__ACK_WAIT_SECS", "3")]).await;
    let (worker, fake, _credentials) = push_worker(&server, "wn", &[]).await;
    let mut threads = Vec::new();
    for i in 0..4 {
        threads.push(thread_to_a_phone(&server, &format!("nb{i}"), "ns").await);
    }
    let mut seller = Client::connect(&server, "ns", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    // FCM down: three pushes owed, attempted, refused.
    fake.lock().unwrap().down = true;
    for (i, thread) in threads.iter().take(3).enumerate() {
        seller
            .send_text(thread, &format!("n-{i}"), &format!("tin {i}"))
            .await
            .expect("acked");
    }
    wait_for("attempts on all three", Duration::from_secs(20), || {
        (refused(&fake).len() == 3).then_some(())
    })
    .await;

    nats.kill9_and_restart().await;
    fake.lock().unwrap().down = false;
    wait_for(
        "the three owed pushes after the restart",
        Duration::from_secs(60),
        || {
            (0..3)
                .all(|i| !pushes(&[&fake], &format!("dev-nb{i}")).is_empty())
                .then_some(())
        },
    )
    .await;
    // The gateway's link came back by itself: a new message is pushed too.
    let sent = async {
        loop {
            if let Ok(id) = seller.send_text(&threads[3], "n-3", "tin 3").await {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), sent)
        .await
        .expect("the gateway stores and acks again once NATS is back");
    wait_for(
        "the push after the restart",
        Duration::from_secs(30),
        || (!pushes(&[&fake], "dev-nb3").is_empty()).then_some(()),
    )
    .await;
    // Room for a duplicate to show up, if one were sent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..4 {
        assert_eq!(
            pushes(&[&fake], &format!("dev-nb{i}")).len(),
            1,
            "nb{i}: exactly one push\n{}",
            worker.log()
        );
    }
}
