//! Finds or starts the real CQL server the tests use.

use std::path::PathBuf;

use chat_scylla::ScyllaConfig;
use tokio::sync::OnceCell;

static READY: OnceCell<ScyllaConfig> = OnceCell::const_new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A config for the shared test keyspace, migrated once per process.
pub async fn test_config() -> ScyllaConfig {
    READY
        .get_or_init(|| async {
            let node =
                std::env::var("CHAT_TEST_CQL_NODE").unwrap_or_else(|_| "127.0.0.1:9042".into());
            if std::env::var("CHAT_TEST_CQL_NODE").is_err() {
                // Idempotent: returns at once when Cassandra already answers.
                let status = tokio::process::Command::new(repo_root().join("scripts/cassandra.sh"))
                    .arg("start")
                    .status()
                    .await
                    .expect("run scripts/cassandra.sh");
                assert!(status.success(), "scripts/cassandra.sh start failed");
            }
            let config = ScyllaConfig {
                nodes: vec![node],
                keyspace: "chat_test".into(),
                request_timeout_ms: 20_000,
                ..ScyllaConfig::default()
            };
            let session = chat_scylla::connect(&config).await.expect("connect to CQL");
            chat_scylla::migrate::migrate(&session, &config)
                .await
                .expect("migrate the test keyspace");
            ScyllaConfig {
                migrate_on_start: false,
                ..config
            }
        })
        .await
        .clone()
}
