//! Operations wiring of `chatd serve`: the readiness checks behind
//! `/readyz`, the queue-depth gauge, and the drain on SIGTERM.
//!
//! Drain, in order (each step logged):
//! 1. `/readyz` answers 503 at once (a load balancer stops sending);
//! 2. the MQTT listeners close; a CONNECT caught in its handshake is
//!    refused with CONNACK `0x9C Use another server` (3.1.1: `0x03`);
//! 3. client publishes being stored and acked finish (bounded);
//! 4. every MQTT 5 client gets `DISCONNECT 0x9C` with the configured
//!    Server Reference, MQTT 3.1.1 clients are closed, and we wait until
//!    the connections are gone (bounded by the same deadline);
//! 5. HTTP stops (requests in progress get a few seconds); an in-process
//!    notification service sends what its collapse window holds
//!    (`main.rs`, `NOTIFY_GRACE`); the process exits 0.
//!
//! Nothing acked is at risk at any step: an ack is sent only after the
//! durable write (`ChatService::send_message`); the drain only makes sure
//! sends under way are not cut off and clients learn where to go.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_broker::BrokerHandle;
use chat_core::notify::NotificationQueue;
use chat_core::store::ChatStore;
use chat_ops::Readiness;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Section `[drain]`: graceful shutdown on SIGTERM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainConfig {
    /// Longest wait for the sends in flight and then for the clients to
    /// disconnect, in seconds; the process exits then regardless.
    pub timeout_secs: u64,
    /// Where MQTT 5 clients should reconnect, e.g. `chat2.example.vn:1883`
    /// (the Server Reference of `DISCONNECT 0x9C`). Unset: no reference;
    /// clients reconnect through the load balancer.
    pub server_reference: Option<String>,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            timeout_secs: 20,
            server_reference: None,
        }
    }
}

/// After the drain, how long HTTP requests still in progress may take.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// Even when the sends took the whole timeout, clients get this long to be
/// told and to go.
const MIN_DISCONNECT_WAIT: Duration = Duration::from_secs(2);
/// How often the queue-depth gauge is refreshed.
const QUEUE_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The readiness registry with the store check and, when NATS is
/// configured, the NATS connection check. Others (MQTT: [`check_mqtt`];
/// the cluster backbone) are added as they are wired.
pub fn readiness(
    store: Arc<dyn ChatStore>,
    nats: Option<Arc<chat_nats::JetStreamQueue>>,
) -> Readiness {
    let readiness = Readiness::new();
    readiness.register("store", Duration::from_secs(2), move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    });
    if let Some(nats) = nats {
        readiness.register("nats", Duration::from_secs(1), move || {
            let answer = nats.check_connected();
            async move { answer }
        });
    }
    readiness
}

/// Ready only while the MQTT listeners accept connections.
pub fn check_mqtt(readiness: &Readiness, mqtt: BrokerHandle) {
    readiness.register("mqtt", Duration::from_secs(1), move || {
        let answer = mqtt.check_listening();
        async move { answer }
    });
}

/// Keeps `chat_queue_depth{queue="notifications"}` current.
pub fn sample_queue_depth(queue: Arc<dyn NotificationQueue>) {
    let gauge = chat_ops::metrics()
        .queue_depth
        .with_label_values(&["notifications"]);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(QUEUE_SAMPLE_EVERY);
        loop {
            every.tick().await;
            match queue.queued_jobs().await {
                Ok(Some(depth)) => gauge.set(depth.min(i64::MAX as u64) as i64),
                Ok(None) => return,
                Err(e) => tracing::debug!(error = %e, "queue depth unavailable"),
            }
        }
    });
}

/// Serves `/healthz`, `/readyz` and `/metrics` of a worker (`chatd push`,
/// `chatd persist`) on `addr` for as long as the process runs.
pub async fn serve_worker_http(
    addr: SocketAddr,
    readiness: Readiness,
    metrics_token: Option<String>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the worker's HTTP {addr} (worker_http_addr)"))?;
    // Port 0 picks a free one; the log says which.
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(http = %addr, "operations endpoint: /healthz /readyz /metrics");
    let app = chat_rest::ops::router(readiness, metrics_token)
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the operations endpoint stopped");
        }
    });
    Ok(())
}

/// Marks a worker as draining: `/readyz` answers 503 from now on.
pub fn start_draining(readiness: &Readiness) {
    readiness.start_draining();
    chat_ops::metrics().draining.set(1);
}

/// Waits for `signal` (SIGTERM, Ctrl-C), then drains; returns when HTTP
/// may stop. For `axum::serve(..).with_graceful_shutdown(..)`.
pub async fn drain_after(
    signal: impl Future<Output = ()>,
    readiness: Readiness,
    mqtt: BrokerHandle,
    config: DrainConfig,
) {
    signal.await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(config.timeout_secs);
    tracing::info!(
        timeout_secs = config.timeout_secs,
        server_reference = config.server_reference.as_deref(),
        connections = mqtt.connections(),
        "shutdown requested: draining"
    );
    start_draining(&readiness);
    mqtt.stop_accepting();
    if !mqtt.wait_for_sends(deadline).await {
        tracing::warn!(
            in_flight = mqtt.sends_in_flight(),
            "drain: sends still in flight at the deadline"
        );
    }
    let told = mqtt
        .disconnect_all(config.server_reference.as_deref())
        .await;
    let until = deadline.max(Instant::now() + MIN_DISCONNECT_WAIT);
    if mqtt.wait_disconnected(until).await {
        tracing::info!(
            told,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drain: every MQTT client is gone; stopping HTTP"
        );
    } else {
        tracing::warn!(
            connections = mqtt.connections(),
            in_flight = mqtt.sends_in_flight(),
            "drain: deadline reached with clients still connected; stopping anyway"
        );
    }
    // axum now waits for the HTTP requests in progress; not for ever.
    tokio::spawn(async {
        tokio::time::sleep(HTTP_GRACE).await;
        tracing::warn!("HTTP requests still open after the drain; exiting");
        std::process::exit(0);
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn drain_section_from_file_and_env() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).expect("loads");
            assert_eq!(config.drain, DrainConfig::default());
            assert_eq!(config.drain.timeout_secs, 20);
            jail.create_file(
                "chat.toml",
                "[drain]\ntimeout_secs = 5\nserver_reference = \"chat2.example.vn:1883\"\n",
            )?;
            let config = Config::load(Some(Path::new("chat.toml"))).expect("loads");
            assert_eq!(config.drain.timeout_secs, 5);
            assert_eq!(
                config.drain.server_reference.as_deref(),
                Some("chat2.example.vn:1883")
            );
            jail.set_env("CHAT_DRAIN__TIMEOUT_SECS", "9");
            let config = Config::load(Some(Path::new("chat.toml"))).expect("loads");
            assert_eq!(config.drain.timeout_secs, 9);
            Ok(())
        });
    }

    #[tokio::test]
    async fn readiness_reports_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ChatStore> =
            Arc::new(chat_store::SqliteStore::open(dir.path()).unwrap());
        let report = readiness(store, None).report().await;
        assert!(report.ready, "{report:?}");
        assert_eq!(report.checks["store"], "ok");
    }
}
