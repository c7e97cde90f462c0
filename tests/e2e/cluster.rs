//! Three `chatd` nodes on loopback (own ports and data directories) sharing
//! one Cassandra keyspace and one NATS server (`cluster.backbone = "nats"`):
//! a buyer on one node and a seller on another chat as if on one node;
//! presence and idempotency hold across nodes; a node killed with
//! `kill -9` while clients on every node keep sending loses nothing acked
//! and stores nothing twice.

use std::time::Duration;

use chat_e2e::nats::NatsServer;
use chat_e2e::{Client, Connect, Server, Via, ensure_cql_server, options};
use chat_protocol::v2::{self, Event};

use crate::CHATD;

pub struct Cluster {
    /// Kept running for the nodes (stopped when dropped).
    _nats: NatsServer,
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> Cluster {
        let cql = ensure_cql_server().await;
        let nats = NatsServer::start().await;
        let keyspace = format!(
            "chat_cluster_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let secret = format!("cluster-secret-{}", uuid::Uuid::new_v4());
        let cql_nodes = format!("[\"{cql}\"]");
        let nats_url = nats.url();
        let mut nodes = Vec::new();
        // One at a time: the first creates the keyspace.
        for i in 1..=n {
            let node_id = format!("node-{i}");
            let mut env = vec![
                ("CHAT_STORE", "scylla"),
                ("CHAT_SCYLLA__NODES", cql_nodes.as_str()),
                ("CHAT_SCYLLA__KEYSPACE", keyspace.as_str()),
                ("CHAT_SCYLLA__REQUEST_TIMEOUT_MS", "3000"),
                ("CHAT_NATS__URL", nats_url.as_str()),
                ("CHAT_CLUSTER__BACKBONE", "nats"),
                ("CHAT_CLUSTER__NODE_ID", node_id.as_str()),
                ("CHAT_CLUSTER__PRESENCE_TTL_SECS", "6"),
            ];
            env.extend_from_slice(extra);
            nodes.push(Server::start_with_secret(CHATD, &secret, &env).await);
        }
        Cluster { _nats: nats, nodes }
    }
}

async fn other_online(node: &Server, user: &str, role: &str, thread: &str) -> bool {
    let (status, body) = node
        .request("GET", "/chat/threads", &node.token(user, role), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["threads"]
        .as_array()
        .and_then(|threads| threads.iter().find(|t| t["id"] == thread))
        .and_then(|t| t["otherOnline"].as_bool())
        .expect("the thread in the inbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyer_and_seller_on_different_nodes_chat_as_on_one() {
    let cluster = Cluster::start(3, &[]).await;
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    for node in [n1, n2, n3] {
        let (status, ready) = node.request("GET", "/readyz", "", None).await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["checks"]["cluster"], "ok", "{ready}");
    }
    let thread = n3.thread_between("xbuyer", "xseller").await;
    let mut buyer = Client::connect(n1, "xbuyer", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(n2, "xseller", "seller", Via::WebSocket).await;
    seller.subscribe_inbox().await;

    // Node 1 → node 2.
    let id = buyer
        .send_text(&thread, "x-1", "Shop ơi còn hàng không?")
        .await
        .expect("stored");
    // It reaches node 2's seller on its own topic, with its unread count
    // (v2 has no thread_updated: the inbox row follows from the msg).
    let got = seller
        .expect("the msg from node 1", |topic, e| match e {
            Event::Msg(m) if m.id == id => {
                assert_eq!(topic, v2::user("xseller"));
                Some(m.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(got.content, "Shop ơi còn hàng không?");
    assert_eq!(
        (got.from.as_deref(), got.unread),
        (Some("xbuyer"), 1),
        "from the buyer, unread by the seller"
    );

    // Node 2 → node 1: a read receipt, typing, a reply.
    seller.read(&thread, &id).await;
    buyer
        .expect("read from node 2", |_, e| match e {
            Event::Read { user_id, up_to, .. } if user_id == "xseller" && *up_to == id => Some(()),
            _ => None,
        })
        .await;
    seller.typing(&thread, true).await;
    buyer
        .expect("typing from node 2", |_, e| match e {
            Event::Typing {
                user_id,
                active: true,
                ..
            } if user_id == "xseller" => Some(()),
            _ => None,
        })
        .await;
    let reply = seller
        .send_text(&thread, "x-2", "Dạ còn ạ")
        .await
        .expect("stored");
    buyer
        .expect("the reply from node 2", |_, e| match e {
            Event::Msg(m) if m.id == reply => Some(()),
            _ => None,
        })
        .await;

    // Presence: node 3 knows the seller is online on node 2, then not.
    assert!(other_online(n3, "xbuyer", "buyer", &thread).await);
    seller.disconnect().await;
    let mut offline = false;
    for _ in 0..100 {
        if !other_online(n3, "xbuyer", "buyer", &thread).await {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        offline,
        "node 3 still shows the seller online; node 2:\n{}\nnode 3:\n{}",
        n2.log(),
        n3.log()
    );

    // Idempotency across nodes: a retry landing on node 3 stores nothing new.
    let opts = options(
        n3,
        "xbuyer:phone",
        "xbuyer",
        &n3.token("xbuyer", "buyer"),
        Via::Tcp,
    );
    let Connect::Accepted(mut retry) = Client::try_connect(opts, "xbuyer").await else {
        panic!("second device refused");
    };
    retry.subscribe_inbox().await;
    let again = retry
        .send_text(&thread, "x-1", "Shop ơi còn hàng không?")
        .await
        .expect("acked");
    assert_eq!(again, id, "the retry is the same message");
    let history = history_texts(n2, "xseller", "seller", &thread).await;
    assert_eq!(
        history
            .iter()
            .filter(|t| *t == "Shop ơi còn hàng không?")
            .count(),
        1
    );
}

async fn history_texts(node: &Server, user: &str, role: &str, thread: &str) -> Vec<String> {
    let mut texts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/chat/threads/{thread}/messages?limit=100&after={a}"),
            None => format!("/chat/threads/{thread}/messages?limit=100&after=0"),
        };
        let (status, body) = node
            .request("GET", &path, &node.token(user, role), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body["messages"].as_array().cloned().unwrap_or_default();
        for m in &page {
            if m["type"] == "text" {
                texts.push(m["content"].as_str().unwrap_or_default().to_owned());
            }
        }
        after = page
            .last()
            .and_then(|m| m["id"].as_str())
            .map(str::to_owned);
        if !body["hasMore"].as_bool().unwrap_or(false) || after.is_none() {
            return texts;
        }
    }
}

/// One buyer sending `count` messages through `node`; when its node dies
/// it reconnects to `fallback` and retries the unacked message with the
/// same client_msg_id. Returns how many sends needed a retry.
async fn keep_sending(
    mut client: Client,
    buyer: String,
    thread: String,
    count: usize,
    fallback: (u16, String),
    after_each: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
) -> usize {
    let mut retries = 0;
    let mut n = 1;
    while n <= count {
        let cmid = format!("{buyer}-{n}");
        let text = format!("{buyer} tin {n}");
        match client
            .try_send_text(&thread, &cmid, &text, Duration::from_secs(5))
            .await
        {
            Some(Ok(_)) => {
                if let Some(tx) = &after_each {
                    let _ = tx.send(n);
                }
                n += 1;
            }
            Some(Err(e)) => panic!("{buyer}: refused: {e:?}"),
            None => {
                retries += 1;
                assert!(retries < 20, "{buyer}: no node takes the message");
                // The node is gone: connect to another one (a client with a
                // list of nodes, or a load balancer, does this).
                let (port, token) = &fallback;
                let mut opts = rumqttc::MqttOptions::new(&buyer, "127.0.0.1", *port);
                opts.set_credentials(&buyer, token);
                opts.set_keep_alive(Duration::from_secs(30));
                client = match Client::try_connect(opts, &buyer).await {
                    Connect::Accepted(c) => c,
                    Connect::Refused(why) => panic!("{buyer}: fallback refused: {why}"),
                };
                client.subscribe_inbox().await;
            }
        }
    }
    retries
}

/// How a node leaves in [`node_leaves_mid_traffic`].
#[derive(Clone, Copy, PartialEq)]
enum Leaving {
    Kill9,
    Sigterm,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_traffic_loses_nothing_acked_and_duplicates_nothing() {
    node_leaves_mid_traffic(Leaving::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_mid_traffic_moves_its_clients_without_an_error() {
    node_leaves_mid_traffic(Leaving::Sigterm).await;
}

/// Three nodes, a buyer on each sending; node 3 leaves a third of the way
/// through. Its buyer reconnects to node 1 and resends what got no ack
/// (same client_msg_id); nobody sees a refusal; every thread ends with each
/// message once, in order; the others' clients noticed nothing.
async fn node_leaves_mid_traffic(leaving: Leaving) {
    const COUNT: usize = 30;
    let mut cluster = Cluster::start(
        3,
        &[
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "1000"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "1000"),
        ],
    )
    .await;
    let seller = "kseller";
    let buyers = ["kbuyer1", "kbuyer2", "kbuyer3"];
    let mut threads = Vec::new();
    for buyer in buyers {
        threads.push(cluster.nodes[0].thread_between(buyer, seller).await);
    }
    // The seller watches every thread from node 1 (one subscription).
    let mut watcher = Client::connect(&cluster.nodes[0], seller, "seller", Via::Tcp).await;
    watcher.subscribe_inbox().await;
    let mut senders = Vec::new();
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    for (i, buyer) in buyers.iter().enumerate() {
        let node = &cluster.nodes[i];
        let mut client = Client::connect(node, buyer, "buyer", Via::Tcp).await;
        client.subscribe_inbox().await;
        // Node 3's clients fall back to node 1.
        let fallback = (
            cluster.nodes[0].tcp_port,
            cluster.nodes[0].token(buyer, "buyer"),
        );
        let tx = (i == 2).then(|| progress_tx.clone());
        senders.push(tokio::spawn(keep_sending(
            client,
            buyer.to_string(),
            threads[i].clone(),
            COUNT,
            fallback,
            tx,
        )));
    }
    // A third of the way through, node 3 dies.
    while let Some(n) = progress.recv().await {
        if n == COUNT / 3 {
            break;
        }
    }
    match leaving {
        Leaving::Kill9 => cluster.nodes[2].kill9(),
        Leaving::Sigterm => {
            let status = cluster.nodes[2]
                .terminate(Duration::from_secs(30))
                .await
                .expect("node 3 exits within the drain timeout");
            assert!(status.success(), "a drained node exits 0: {status}");
        }
    }
    let mut retries = Vec::new();
    for sender in senders {
        retries.push(sender.await.expect("sender"));
    }
    assert_eq!(retries[0], 0, "clients of node 1 noticed the failure");
    assert_eq!(retries[1], 0, "clients of node 2 noticed the failure");
    assert!(
        retries[2] >= 1,
        "node 3's client never lost its node: {retries:?}"
    );

    // Every thread: each message once, in order (what was acked is there;
    // the retried one was stored once).
    for (i, buyer) in buyers.iter().enumerate() {
        let texts = history_texts(&cluster.nodes[1], seller, "seller", &threads[i]).await;
        let expected: Vec<String> = (1..=COUNT).map(|n| format!("{buyer} tin {n}")).collect();
        assert_eq!(texts, expected, "{buyer}'s thread");
    }
    // The watcher on node 1 got the other nodes' messages live, once each.
    let events = watcher.drain(Duration::from_secs(2)).await;
    for (i, buyer) in buyers.iter().enumerate().take(2) {
        let live: Vec<String> = events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Msg(m) if m.thread_id == threads[i] => Some(m.content.clone()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (1..=COUNT).map(|n| format!("{buyer} tin {n}")).collect();
        assert_eq!(live, expected, "live deliveries of {buyer}'s thread");
    }
}

/// The FCM messages the stand-in received for one device token.
fn pushes_to(fake: &chat_e2e::fake_fcm::Shared, token: &str) -> usize {
    fake.lock()
        .unwrap()
        .sent
        .iter()
        .filter(|m| m["message"]["token"] == token)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_one_push_from_three_nodes_and_an_online_one_on_another_node_none() {
    let (fcm_base, fake) = chat_e2e::fake_fcm::start().await;
    let credentials = chat_e2e::fake_fcm::credentials_file(&fcm_base);
    // Every node runs a notification dispatcher on the shared JetStream
    // consumer: a job goes to one of them.
    let cluster = Cluster::start(
        3,
        &[
            (
                "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
                credentials.path().to_str().unwrap(),
            ),
            ("CHAT_PUSH__FCM__BASE_URL", &fcm_base),
        ],
    )
    .await;
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let thread = n1.thread_between("pbuyer", "pseller").await;
    n2.put_fcm_device("pbuyer", "buyer-phone").await;
    let mut seller = Client::connect(n1, "pseller", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    // The buyer is offline everywhere: exactly one push.
    seller
        .send_text(&thread, "p-1", "Shop gửi hàng rồi nhé")
        .await
        .expect("stored");
    chat_e2e::wait_for("the push", Duration::from_secs(15), || {
        (pushes_to(&fake, "buyer-phone") >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pushes_to(&fake, "buyer-phone"),
        1,
        "one push, not one per node"
    );

    // Online on node 3: node 1 knows it, and nothing is pushed.
    let mut buyer = Client::connect(n3, "pbuyer", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut online = false;
    for _ in 0..100 {
        if other_online(n1, "pseller", "seller", &thread).await {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "node 1 sees the buyer online on node 3");
    let id = seller
        .send_text(&thread, "p-2", "Bạn nhận được chưa?")
        .await
        .expect("stored");
    buyer
        .expect("the message on node 3", |_, e| match e {
            Event::Msg(m) if m.id == id => Some(()),
            _ => None,
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pushes_to(&fake, "buyer-phone"),
        1,
        "no push while online on another node"
    );
}

/// A node dies (`kill -9`) holding a buyer whose app does not reconnect (it
/// is in the background). Once the node's lease lapses
/// (`cluster.node_ttl_secs`), the others take the buyer for offline — long
/// before the buyer's presence entry would expire — and the next message
/// is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_count_as_offline_once_its_lease_lapses() {
    let (fcm_base, fake) = chat_e2e::fake_fcm::start().await;
    let credentials = chat_e2e::fake_fcm::credentials_file(&fcm_base);
    let mut cluster = Cluster::start(
        3,
        &[
            (
                "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE",
                credentials.path().to_str().unwrap(),
            ),
            ("CHAT_PUSH__FCM__BASE_URL", &fcm_base),
            // Entries would keep the buyer "online" for two minutes.
            ("CHAT_CLUSTER__PRESENCE_TTL_SECS", "120"),
            ("CHAT_CLUSTER__NODE_TTL_SECS", "3"),
        ],
    )
    .await;
    let thread = cluster.nodes[0].thread_between("lbuyer", "lseller").await;
    cluster.nodes[0]
        .put_fcm_device("lbuyer", "lbuyer-phone")
        .await;
    let _buyer = Client::connect(&cluster.nodes[1], "lbuyer", "buyer", Via::Tcp).await;
    let n3 = &cluster.nodes[2];
    let mut online = false;
    for _ in 0..100 {
        if other_online(n3, "lseller", "seller", &thread).await {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "node 3 sees the buyer online on node 2");

    cluster.nodes[1].kill9();
    let killed = std::time::Instant::now();
    let n3 = &cluster.nodes[2];
    let mut offline_after = None;
    while killed.elapsed() < Duration::from_secs(60) {
        if !other_online(n3, "lseller", "seller", &thread).await {
            offline_after = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Judged by the lease (3 s), not by the entry (120 s).
    let offline_after = offline_after.expect("the buyer still online a minute after its node died");
    eprintln!("offline on node 3 {offline_after:?} after the kill");

    let mut seller = Client::connect(&cluster.nodes[0], "lseller", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;
    seller
        .send_text(&thread, "l-1", "Shop gửi hàng rồi nhé")
        .await
        .expect("stored");
    chat_e2e::wait_for("the push", Duration::from_secs(15), || {
        (pushes_to(&fake, "lbuyer-phone") == 1).then_some(())
    })
    .await;
}
