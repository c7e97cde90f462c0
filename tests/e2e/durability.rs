use chat_e2e::{Client, Server, Via, send_message};
use chat_protocol::{ServerEvent, topics};

use crate::CHATD;

fn ack(client_msg_id: &str) -> impl Fn(&str, &ServerEvent) -> Option<String> + '_ {
    move |_, e| match e {
        ServerEvent::MessageSentAck {
            client_msg_id: c,
            message_id: Some(id),
            ..
        } if c == client_msg_id => Some(id.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_message_survives_kill_9_and_a_retry_after_restart_is_not_duplicated() {
    survives_kill_9(Server::start(CHATD).await).await;
}

/// Acked messages survive `kill -9` of chatd; a retry is not duplicated.
pub async fn survives_kill_9(mut server: Server) {
    let thread = server.thread_between("b1", "s1").await;
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    assert!(buyer.subscribe("user/b1").await);
    let inbound = topics::thread_inbound(&thread);
    let mut acked = vec![];
    for i in 0..20 {
        let cmid = format!("k-{i}");
        buyer
            .publish(&inbound, send_message(&cmid, &format!("tin nhắn {i}")))
            .await;
        acked.push(buyer.expect("ack", ack(&cmid)).await);
    }

    server.kill9();
    server.restart().await;

    let stored = history_ids(&server, &thread).await;
    assert_eq!(
        stored, acked,
        "every acked message is in history after kill -9"
    );

    // The client did not see the last ack (say) and retries after reconnecting.
    let mut buyer = Client::connect(&server, "b1", "buyer", Via::Tcp).await;
    assert!(buyer.subscribe("user/b1").await);
    buyer
        .publish(&inbound, send_message("k-19", "tin nhắn 19"))
        .await;
    assert_eq!(
        buyer.expect("ack after restart", ack("k-19")).await,
        acked[19]
    );
    assert_eq!(history_ids(&server, &thread).await, acked);
}

/// Ids of the thread's stored messages, oldest first, as the buyer sees them.
async fn history_ids(server: &Server, thread: &str) -> Vec<String> {
    server.text_message_ids("b1", "buyer", thread).await
}
