use chat_e2e::{Client, Server, Via};

use crate::CHATD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_message_survives_kill_9_and_a_retry_after_restart_is_not_duplicated() {
    survives_kill_9(Server::start(CHATD).await).await;
}

/// Acked messages survive `kill -9` of chatd; a retry is not duplicated.
pub async fn survives_kill_9(mut server: Server) {
    let thread = server.thread_between("b1", "s1").await;
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut acked = vec![];
    for i in 0..20 {
        let cmid = format!("k-{i}");
        acked.push(
            buyer
                .send_text(&thread, &cmid, &format!("tin nhắn {i}"))
                .await
                .expect("stored"),
        );
    }

    server.kill9();
    server.restart().await;

    let stored = history_ids(&server, &thread).await;
    assert_eq!(
        stored, acked,
        "every acked message is in history after kill -9"
    );

    // The client did not see the last answer (say) and retries after
    // reconnecting: an `ack` with the first send's id.
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    assert_eq!(
        buyer
            .send_text(&thread, "k-19", "tin nhắn 19")
            .await
            .expect("the retry's ack"),
        acked[19]
    );
    assert_eq!(history_ids(&server, &thread).await, acked);
}

/// Ids of the thread's stored messages, oldest first, as the buyer sees them.
async fn history_ids(server: &Server, thread: &str) -> Vec<String> {
    server.text_message_ids("b1", "buyer", thread).await
}
