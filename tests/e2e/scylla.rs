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
    use chat_e2e::{Client, send_message};
    use chat_protocol::{ServerEvent, topics};
    use std::time::Duration;

    let server = Server::start_scylla_with(CHATD, &[("CHAT_PERSIST__MODE", "workers")]).await;
    let mut workers = [
        server.spawn_persist_worker("w1"),
        server.spawn_persist_worker("w2"),
    ];
    for worker in &mut workers {
        worker
            .wait_for_log("subscribed to hand-overs", Duration::from_secs(30))
            .await;
    }

    const BUYERS: usize = 16;
    const MESSAGES: usize = 10;
    let mut conversations = Vec::new();
    for i in 0..BUYERS {
        let buyer = format!("pb{i}");
        let thread = server.thread_between(&buyer, "ps1").await;
        let mut client = Client::connect(&server, &buyer, "buyer", Via::Tcp).await;
        assert!(client.subscribe(&topics::user(&buyer)).await);
        conversations.push((buyer, thread, client));
    }
    // Every buyer sends back to back, without waiting for acks.
    for (_, thread, client) in &mut conversations {
        for m in 0..MESSAGES {
            client
                .publish(
                    &topics::thread_inbound(thread),
                    send_message(&format!("c{m}"), &format!("tin nhắn {m}")),
                )
                .await;
        }
    }
    for (buyer, thread, client) in &mut conversations {
        let mut acked = Vec::new();
        while acked.len() < MESSAGES {
            let (_, event) = client
                .event(Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("{buyer}: only {} acks", acked.len()));
            if let ServerEvent::MessageSentAck {
                client_msg_id,
                message_id: Some(id),
                ..
            } = event
            {
                acked.push((client_msg_id, id));
            }
        }
        let order: Vec<String> = acked.iter().map(|(c, _)| c.clone()).collect();
        let expected: Vec<String> = (0..MESSAGES).map(|m| format!("c{m}")).collect();
        assert_eq!(order, expected, "{buyer}: acks in send order");
        let token = server.token(buyer, "buyer");
        let (status, page) = server
            .request(
                "GET",
                &format!("/chat/threads/{thread}/messages?limit=50"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let stored: Vec<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "text")
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(stored, ids, "{buyer}: each message stored once, in order");
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
