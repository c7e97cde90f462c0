//! `chatd persist`: a persistence worker for a scaled deployment.
//!
//! Gateways started with `persist.mode = "workers"` authorise each inbound
//! chat publish and hand it to `svc/persist/<thread>/<sender>`; workers
//! share `$share/persist/svc/persist/#` (MQTT 5), the broker keeps one
//! thread on one worker, and each worker runs the same `ChatService` as an
//! in-process gateway: validate, store durably, then publish the ack and
//! the events back through the broker.
//!
//! Guarantees kept: the sender's `message_sent_ack` still follows the
//! durable write; a worker acknowledges the hand-over (PUBACK) only after
//! processing, so a worker that dies mid-way gets it again from its
//! persistent session — and the store's idempotency key makes that, or the
//! sender's own retry, harmless; recipients only ever see processed events.
//! A hand-over the worker fails on is set aside rather than retried
//! forever (`poison`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use chat_broker::{PERSIST_FILTER, PERSIST_GROUP, PERSIST_PREFIX};
use chat_core::bus::InProcessBus;
use chat_core::membership::MembershipCache;
use chat_core::outbound::{Outbound, Qos};
use chat_core::service::{ChatService, Deps, PushRoute, Reply};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::config::{Config, StoreKind};
use crate::poison::{self, Ledger};

/// What a thread queue needs to set a failing hand-over aside.
struct Poison {
    ledger: Ledger,
    /// Redelivered hand-overs are processed one at a time, so that a crash
    /// counts against the one that caused it, not against every
    /// redelivery under way beside it.
    one_redelivery: tokio::sync::Mutex<()>,
    data_dir: std::path::PathBuf,
    worker: String,
}

impl Poison {
    async fn set_aside(
        &self,
        service: &ChatService,
        thread: &str,
        sender: &str,
        payload: &[u8],
        why: &str,
        reply: Reply,
    ) {
        let kept = poison::keep(&self.data_dir, thread, sender, payload);
        let why = match kept {
            Some(path) => format!("{why} (worker {}, kept in {})", self.worker, path.display()),
            None => format!("{why} (worker {}, payload not kept)", self.worker),
        };
        service
            .dead_letter(sender, thread, payload, &why, reply)
            .await;
    }
}

/// Events go back through the broker as an MQTT client.
struct MqttOutbound {
    client: AsyncClient,
}

#[async_trait]
impl Outbound for MqttOutbound {
    async fn publish(&self, topic: String, payload: Vec<u8>, qos: Qos) {
        let qos = match qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        if let Err(e) = self.client.publish(topic, qos, false, payload).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }
}

/// `svc/persist/<thread>/<sender>` (a v1 publish) or
/// `svc/persist/<thread>/<sender>/v2` → (thread, sender, how to answer).
fn parse_handover(topic: &str) -> Option<(&str, &str, Reply)> {
    let rest = topic.strip_prefix(PERSIST_PREFIX)?;
    let mut levels = rest.split('/');
    let (thread, sender) = (levels.next()?, levels.next()?);
    let reply = match (levels.next(), levels.next()) {
        (None, _) => Reply::V1,
        (Some("v2"), None) => Reply::V2,
        _ => return None,
    };
    (chat_protocol::topics::is_valid_id(thread) && chat_protocol::topics::is_valid_id(sender))
        .then_some((thread, sender, reply))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.store != StoreKind::Scylla {
        bail!(
            "persistence workers share one store with the gateways: set store = \"scylla\" \
             (the embedded SQLite store belongs to one process)"
        );
    }
    let persist = &config.persist;
    let token = match &persist.token {
        Some(token) => token.clone(),
        None => {
            let secret = config
                .hs256_secret()
                .context("reading the HS256 secret")?
                .context("persist.token is required unless HS256 tokens are configured")?;
            let claims = chat_core::auth::claims_for(
                &config.auth,
                &persist.user,
                chat_core::auth::Role::Service,
                3600 * 24 * 365,
            );
            chat_core::auth::mint_hs256(&secret, &claims)
        }
    };
    let store = crate::open_store(&config).await?;
    let store_for_checks = store.clone();
    let (host, port) = persist
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .context("persist.broker must be host:port")?;
    let poison = Arc::new(Poison {
        ledger: Ledger::open(
            &config.data_dir,
            &persist.worker_id(),
            persist.max_deliveries,
        )
        .context("opening the delivery ledger in the data directory")?,
        one_redelivery: tokio::sync::Mutex::new(()),
        data_dir: config.data_dir.clone(),
        worker: persist.worker_id(),
    });
    let client_id = format!("{}:{}", persist.user, persist.worker_id());
    let mut options = MqttOptions::new(client_id.clone(), host, port);
    options
        .set_credentials(persist.user.clone(), token)
        .set_clean_start(false)
        // Hand-overs queue in the broker while this worker restarts.
        .set_session_expiry_interval(Some(persist.session_expiry_secs))
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(Some(config.mqtt.max_packet_size));
    let (client, mut events) = AsyncClient::new(options, 1024);
    let outbound: Arc<dyn Outbound> = Arc::new(MqttOutbound {
        client: client.clone(),
    });
    let membership = Arc::new(MembershipCache::new(store.clone()));
    let moderation = crate::load_moderation(&config, store.clone()).await?;
    let push = match config.nats.url {
        // Push jobs are enqueued here, where messages are stored, before
        // the hand-over is acknowledged.
        Some(_) => PushRoute::Queue(Arc::new(
            chat_nats::JetStreamQueue::connect(&config.nats)
                .await
                .context("connecting to NATS")?,
        )),
        None => PushRoute::Nowhere,
    };
    let service = Arc::new(ChatService::new(Deps {
        store,
        membership,
        outbound,
        bus: Arc::new(InProcessBus::new(4096)),
        limits: config.limits.clone(),
        // A worker holds no client sessions: every recipient is offline
        // as far as it knows.
        presence: Arc::new(chat_core::presence::LocalPresence::new()),
        moderation,
        limiter: Arc::new(chat_core::ratelimit::RateLimiter::new(
            config.rate_limits.clone(),
        )),
        attachments: Some(crate::open_attachments(&config)?),
        push,
        sandbox_prefix: None,
        protocol_v1: config.mqtt.protocol_v1,
    }));
    let filter = format!("$share/{PERSIST_GROUP}/{PERSIST_FILTER}");
    tracing::info!(client_id, broker = %persist.broker, filter, "persistence worker starting");

    let connected = Arc::new(AtomicBool::new(false));
    let readiness = crate::ops::readiness(store_for_checks, None);
    {
        let connected = connected.clone();
        readiness.register("broker", Duration::from_secs(1), move || {
            let answer = if connected.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("not connected to the gateway's broker".to_owned())
            };
            async move { answer }
        });
    }
    crate::ops::serve_worker_http(
        config.worker_http_addr,
        readiness.clone(),
        config.metrics_token.clone(),
    )
    .await?;
    let mut stop = std::pin::pin!(crate::shutdown_signal());

    // One queue per thread keeps a thread's messages in order while
    // threads are processed concurrently.
    let mut queues: HashMap<String, mpsc::UnboundedSender<Publish>> = HashMap::new();
    let processing = TaskTracker::new();
    let mut processed = 0u64;
    loop {
        let polled = tokio::select! {
            polled = events.poll() => polled,
            _ = &mut stop => break,
        };
        let event = match polled {
            Ok(event) => event,
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "broker connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                connected.store(true, Ordering::Relaxed);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                client
                    .subscribe(filter.clone(), QoS::AtLeastOnce)
                    .await
                    .context("subscribing")?;
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                tracing::info!(reasons = ?ack.return_codes, "subscribed to hand-overs");
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                let Some((thread, _, _)) = parse_handover(&topic) else {
                    tracing::warn!(topic, "unexpected topic; dropping");
                    client.ack(&publish).await.ok();
                    continue;
                };
                let thread = thread.to_owned();
                let mut job = publish;
                loop {
                    let queue = queues.entry(thread.clone()).or_insert_with(|| {
                        spawn_thread_queue(
                            &processing,
                            service.clone(),
                            client.clone(),
                            poison.clone(),
                        )
                    });
                    match queue.send(job) {
                        Ok(()) => break,
                        Err(returned) => {
                            // The thread's task ended after idling; start anew.
                            queues.remove(&thread);
                            job = returned.0;
                        }
                    }
                }
                processed += 1;
                if processed.is_multiple_of(4096) {
                    queues.retain(|_, q| !q.is_closed());
                }
            }
            _ => {}
        }
    }
    drain(&config, &readiness, client, events, queues, processing).await;
    Ok(())
}

/// SIGTERM: hand-overs already queued are stored and acknowledged; those
/// arriving now are left unacknowledged, so the broker keeps them in this
/// worker's persistent session (and hands them out again on its return);
/// then a normal DISCONNECT, which keeps that session.
async fn drain(
    config: &Config,
    readiness: &chat_ops::Readiness,
    client: AsyncClient,
    mut events: rumqttc::v5::EventLoop,
    queues: HashMap<String, mpsc::UnboundedSender<Publish>>,
    processing: TaskTracker,
) {
    crate::ops::start_draining(readiness);
    tracing::info!(
        threads = queues.len(),
        "shutdown requested: finishing the hand-overs taken"
    );
    // Each thread's task ends once its queue is empty and closed.
    drop(queues);
    processing.close();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.drain.timeout_secs);
    let mut finished = std::pin::pin!(processing.wait());
    let mut done = false;
    // The event loop must keep turning: the acks and events go out through it.
    while !done {
        tokio::select! {
            _ = &mut finished => done = true,
            polled = events.poll() => {
                if let Err(e) = polled {
                    tracing::warn!(error = %e, "drain: broker connection lost");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    under_way = processing.len(),
                    "drain: deadline reached; the broker hands the rest out again"
                );
                break;
            }
        }
    }
    if client.disconnect().await.is_ok() {
        // The acks queued before it, then the DISCONNECT, go out; we read on
        // until the broker closes the connection. Closing it ourselves with
        // unread publishes in the socket would reset it, and the broker
        // would drop the last acks unread (and hand those messages out
        // again).
        let closed = async { while events.poll().await.is_ok() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
    }
    tracing::info!("persistence worker stopped");
}

fn spawn_thread_queue(
    processing: &TaskTracker,
    service: Arc<ChatService>,
    client: AsyncClient,
    poison: Arc<Poison>,
) -> mpsc::UnboundedSender<Publish> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Publish>();
    processing.spawn(async move {
        while let Ok(Some(publish)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await
        {
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            if let Some((thread, sender, reply)) = parse_handover(&topic) {
                process(&service, &poison, &publish, thread, sender, reply).await;
            }
            // Only now may the broker forget it.
            if let Err(e) = client.ack(&publish).await {
                tracing::warn!(error = %e, "acknowledging a hand-over failed");
            }
        }
    });
    tx
}

/// Processes one hand-over, or sets it aside if it keeps failing.
async fn process(
    service: &Arc<ChatService>,
    poison: &Poison,
    publish: &Publish,
    thread: &str,
    sender: &str,
    reply: Reply,
) {
    // Only a redelivery can be one that crashed us: first deliveries skip
    // the ledger (and its fsync).
    let redelivered = publish
        .dup
        .then(|| poison::fingerprint(&format!("{thread}/{sender}"), &publish.payload));
    let _alone = match redelivered {
        Some(_) => Some(poison.one_redelivery.lock().await),
        None => None,
    };
    let admitted = match &redelivered {
        Some(key) => poison.ledger.admit(key).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the delivery ledger cannot be written; processing anyway");
            true
        }),
        None => true,
    };
    if admitted {
        let run = {
            let (service, payload) = (service.clone(), publish.payload.clone());
            let (thread, sender) = (thread.to_owned(), sender.to_owned());
            // Its own task, so that a panic is caught here.
            tokio::spawn(async move {
                poison::inject_fault(&payload);
                service
                    .handle_command(&sender, None, &thread, &payload, reply)
                    .await;
            })
        };
        match run.await {
            Ok(()) => tracing::debug!(thread, sender, "handed-over message processed"),
            Err(e) if e.is_panic() => {
                poison
                    .set_aside(
                        service,
                        thread,
                        sender,
                        &publish.payload,
                        "processing panicked",
                        reply,
                    )
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, thread, sender, "processing was cancelled"),
        }
    } else {
        poison
            .set_aside(
                service,
                thread,
                sender,
                &publish.payload,
                "delivered more than persist.max_deliveries times: it crashes the worker",
                reply,
            )
            .await;
    }
    if let Some(key) = &redelivered {
        poison.ledger.done(key);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_handover;
    use chat_core::service::Reply;

    #[test]
    fn handover_topics() {
        assert_eq!(
            parse_handover("svc/persist/t-1/u-1"),
            Some(("t-1", "u-1", Reply::V1))
        );
        assert_eq!(
            parse_handover("svc/persist/t-1/u-1/v2"),
            Some(("t-1", "u-1", Reply::V2))
        );
        assert_eq!(parse_handover("svc/persist/t-1"), None);
        assert_eq!(parse_handover("svc/persist/t-1/u/x"), None);
        assert_eq!(parse_handover("svc/persist/t-1/u/v2/x"), None);
        assert_eq!(parse_handover("thread/t-1/in"), None);
    }
}
