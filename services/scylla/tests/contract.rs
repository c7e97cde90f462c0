//! The store contract (chat_core::contract) against a real CQL server:
//! Apache Cassandra 5.0, started by `scripts/cassandra.sh` when none
//! answers at `CHAT_TEST_CQL_NODE` (default 127.0.0.1:9042).

use std::sync::Arc;

use chat_core::clock::Clock;
use chat_core::store::ChatStore;
use chat_scylla::{ScyllaConfig, ScyllaStore};

mod cql_server;

async fn fresh() -> ((), Arc<dyn ChatStore>) {
    let config = cql_server::test_config().await;
    let store = ScyllaStore::open(&config)
        .await
        .expect("open the Scylla store");
    ((), Arc::new(store) as Arc<dyn ChatStore>)
}

/// A store whose "now" is `clock`.
async fn dated(clock: Arc<dyn Clock>) -> ((), Arc<dyn ChatStore>) {
    let config = cql_server::test_config().await;
    let store = ScyllaStore::open(&config)
        .await
        .expect("open the Scylla store")
        .with_clock(clock);
    ((), Arc::new(store) as Arc<dyn ChatStore>)
}

chat_core::contract_tests!(
    fresh().await,
    dated = |clock| dated(clock).await,
    long_history = 50_000
);

#[tokio::test]
async fn migrate_is_idempotent_and_safe_to_run_concurrently() {
    let config = ScyllaConfig {
        keyspace: format!("chat_migrate_{}", std::process::id()),
        ..cql_server::test_config().await
    };
    let mut runners = Vec::new();
    for _ in 0..3 {
        let config = config.clone();
        runners.push(tokio::spawn(async move {
            let session = chat_scylla::connect(&config).await.expect("connect");
            chat_scylla::migrate::migrate(&session, &config)
                .await
                .expect("migrate")
        }));
    }
    let mut applied = 0;
    for runner in runners {
        let report = runner.await.unwrap();
        applied += report.applied.len();
    }
    assert_eq!(
        applied,
        chat_scylla::migrate::MIGRATIONS.len(),
        "each migration ran once"
    );
    let session = chat_scylla::connect(&config).await.unwrap();
    let again = chat_scylla::migrate::migrate(&session, &config)
        .await
        .unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already.len(), chat_scylla::migrate::MIGRATIONS.len());
    // Cleanup only: a schema change can outlast the request timeout on a
    // busy single-node Cassandra (seen on 2 cores with the other contract
    // tests running); the test command empties the data directory of a
    // Cassandra it starts.
    if let Err(e) = session
        .query_unpaged(format!("DROP KEYSPACE {}", config.keyspace), ())
        .await
    {
        eprintln!("leaving keyspace {} behind: {e}", config.keyspace);
    }
}
