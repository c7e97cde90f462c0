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
