//! One rmqtt broker node, clustered either by rmqtt's own
//! `rmqtt-cluster-broadcast` plugin (mode `a`) or by NATS core subjects
//! (mode `b`).
//!
//! Usage:
//!   node a <id> <mqtt_port> <trigger_port> <grpc_port> <peers>
//!       peers = "1@127.0.0.1:5363,2@127.0.0.1:5364,3@127.0.0.1:5365"
//!   node b <id> <mqtt_port> <trigger_port> <nats_url>
//!   node local <id> <mqtt_port> <trigger_port>      (no cluster, baseline)
//!
//! The trigger port takes one line `<count> <interval_us> <topic>` and
//! publishes `count` server-originated messages (QoS 1) through
//! `SessionState::forwards`, exactly like chat-broker's `BrokerOutbound`,
//! one after the other (each call awaited), paced on a fixed schedule
//! (a late message is sent at once, never skipped). Payload:
//! `<seq>,<intended_unix_ns>,<actual_unix_ns>`. When done it answers one
//! line with statistics of how long each `forwards` call took.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use async_trait::async_trait;
use bytestring::ByteString;
use futures::StreamExt;
use parking_lot::Mutex;
use rmqtt::codec::types::Publish as CodecPublish;
use rmqtt::codec::types::QoS;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::session::SessionState;
use rmqtt::types::{From, Id, Publish};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn make_publish(topic: &str, payload: bytes::Bytes) -> Publish {
    let p = CodecPublish {
        dup: false,
        retain: false,
        qos: QoS::AtLeastOnce,
        topic: ByteString::from(topic),
        packet_id: None,
        payload,
        properties: None,
    };
    let ms = (now_ns() / 1_000_000) as i64;
    Publish::from(p).create_time(ms)
}

/// Deliver to this node's (and, in mode a, the cluster plugin's) subscribers.
async fn forward(scx: &ServerContext, from_id: &Id, topic: &str, payload: bytes::Bytes) {
    let from = From::from_system(from_id.clone());
    if let Err(e) = SessionState::forwards(scx, from, make_publish(topic, payload), false, None).await {
        eprintln!("forwards failed: {e}");
    }
}

fn subject_of(topic: &str) -> String {
    // Experiment only: a real mapping must escape '.', '*', '>' and spaces.
    format!("mqtt.{}", topic.replace('/', "."))
}

/// Mode b: interest-based NATS subscriptions, one per MQTT topic with at
/// least one local subscriber.
#[derive(Clone)]
struct NatsBridge {
    scx: ServerContext,
    from_id: Id,
    nats: async_nats::Client,
    // topic -> (local client ids, task forwarding NATS messages locally)
    topics: Arc<Mutex<HashMap<String, (HashSet<String>, tokio::task::JoinHandle<()>)>>>,
}

impl NatsBridge {
    async fn add(&self, topic: &str, client: &str) {
        {
            let mut t = self.topics.lock();
            if let Some((clients, _)) = t.get_mut(topic) {
                clients.insert(client.to_string());
                return;
            }
        }
        // First local subscriber: subscribe on NATS before the SUBACK goes out.
        let mut sub = match self.nats.subscribe(subject_of(topic)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("nats subscribe failed: {e}");
                return;
            }
        };
        let _ = self.nats.flush().await;
        let this = self.clone();
        let topic_s = topic.to_string();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                forward(&this.scx, &this.from_id, &topic_s, msg.payload).await;
            }
        });
        let mut t = self.topics.lock();
        match t.get_mut(topic) {
            // Lost a race with another first subscriber: keep theirs.
            Some((clients, _)) => {
                clients.insert(client.to_string());
                task.abort();
            }
            None => {
                t.insert(topic.to_string(), ([client.to_string()].into_iter().collect(), task));
            }
        }
    }

    fn remove(&self, topic: Option<&str>, client: &str) {
        let mut t = self.topics.lock();
        let keys: Vec<String> = match topic {
            Some(x) => vec![x.to_string()],
            None => t.keys().cloned().collect(),
        };
        for k in keys {
            let empty = match t.get_mut(&k) {
                Some((clients, _)) => {
                    clients.remove(client);
                    clients.is_empty()
                }
                None => false,
            };
            if empty {
                // Dropping the subscriber unsubscribes on NATS.
                if let Some((_, task)) = t.remove(&k) {
                    task.abort();
                }
            }
        }
    }

    async fn publish(&self, topic: &str, payload: bytes::Bytes) {
        forward(&self.scx, &self.from_id, topic, payload.clone()).await;
        if let Err(e) = self.nats.publish(subject_of(topic), payload).await {
            eprintln!("nats publish failed: {e}");
        }
    }
}

#[async_trait]
impl Handler for NatsBridge {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::SessionSubscribed(s, sub) => {
                self.add(&sub.topic_filter, &s.id.client_id).await;
            }
            Parameter::SessionUnsubscribed(s, unsub) => {
                self.remove(Some(&unsub.topic_filter), &s.id.client_id);
            }
            Parameter::SessionTerminated(s, _) => {
                self.remove(None, &s.id.client_id);
            }
            _ => {}
        }
        (true, acc)
    }
}

enum Publisher {
    Rmqtt(ServerContext, Id),
    Nats(NatsBridge),
}

impl Publisher {
    async fn publish(&self, topic: &str, payload: bytes::Bytes) {
        match self {
            Publisher::Rmqtt(scx, id) => forward(scx, id, topic, payload).await,
            Publisher::Nats(b) => b.publish(topic, payload).await,
        }
    }
}

fn pct(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn serve_trigger(addr: SocketAddr, publisher: Arc<Publisher>) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr).await?;
    loop {
        let (sock, _) = l.accept().await?;
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 3 {
                let _ = w.write_all(b"error: want <count> <interval_us> <topic> [seq|spawn]\n").await;
                return;
            }
            // seq: each forwards call awaited before the next (one publishing task);
            // spawn: each publish in its own task (many concurrent requests).
            let spawn = parts.get(3) == Some(&"spawn");
            let count: u64 = parts[0].parse().unwrap_or(0);
            let interval = Duration::from_micros(parts[1].parse().unwrap_or(1000));
            let topic = parts[2].to_string();
            let start = Instant::now();
            let start_ns = now_ns();
            let mut calls = Vec::with_capacity(count as usize);
            let mut slow = Vec::new();
            let mut tasks = Vec::new();
            for seq in 0..count {
                let due = start + interval * seq as u32;
                tokio::time::sleep_until(due.into()).await;
                let intended = start_ns + (interval * seq as u32).as_nanos();
                let publisher = publisher.clone();
                let topic = topic.clone();
                let one = async move {
                    let t0 = Instant::now();
                    let payload = format!("{seq},{intended},{}", now_ns());
                    publisher.publish(&topic, bytes::Bytes::from(payload)).await;
                    (seq, t0.elapsed().as_micros())
                };
                if spawn {
                    tasks.push(tokio::spawn(one));
                } else {
                    calls.push(one.await);
                }
            }
            for t in tasks {
                if let Ok(c) = t.await {
                    calls.push(c);
                }
            }
            for (seq, d) in &calls {
                if *d > 50_000 {
                    slow.push(format!("{seq}:{}ms", d / 1000));
                }
            }
            if slow.len() > 20 {
                let n = slow.len();
                slow.truncate(10);
                slow.push(format!("... {n} in all"));
            }
            let mut calls: Vec<u128> = calls.into_iter().map(|(_, d)| d).collect();
            calls.sort_unstable();
            let reply = format!(
                "done count={count} forwards_call_us p50={} p99={} max={} slow(>50ms)=[{}]\n",
                pct(&calls, 0.5),
                pct(&calls, 0.99),
                calls.last().copied().unwrap_or(0),
                slow.join(" ")
            );
            let _ = w.write_all(reply.as_bytes()).await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        bail!("usage: node a|b|local <id> <mqtt_port> <trigger_port> [grpc_port peers | nats_url]");
    }
    let mode = args[1].as_str();
    let id: u64 = args[2].parse()?;
    let mqtt_port: u16 = args[3].parse()?;
    let trigger_port: u16 = args[4].parse()?;

    let mut builder = ServerContext::new().node_id(id).busy_check_enable(false);
    if mode == "a" {
        let peers: Vec<String> = args.get(6).context("peers")?.split(',').map(|p| format!("\"{p}\"")).collect();
        let timeout = std::env::var("GRPC_TIMEOUT").unwrap_or_else(|_| "60s".into());
        let toml = format!(
            "node_grpc_addrs = [{}]\nnode_grpc_client_timeout = \"{timeout}\"\n",
            peers.join(", ")
        );
        builder = builder.plugins_config_map_add("rmqtt-cluster-broadcast", toml);
    }
    let scx = builder.build().await;
    let from_id = Id::from(scx.node.id(), ByteString::from_static("chatd"));

    let publisher = match mode {
        "a" => {
            let grpc_port: u16 = args.get(5).context("grpc_port")?.parse()?;
            let grpc_addr: SocketAddr = format!("127.0.0.1:{grpc_port}").parse()?;
            scx.node.start_grpc_server(scx.clone(), grpc_addr, true, false);
            rmqtt_cluster_broadcast::register(&scx, true, false)
                .await
                .map_err(|e| anyhow::anyhow!("register cluster plugin: {e}"))?;
            Publisher::Rmqtt(scx.clone(), from_id.clone())
        }
        "b" => {
            let url = args.get(5).context("nats_url")?;
            let nats = async_nats::ConnectOptions::new()
                .no_echo()
                .connect(url.as_str())
                .await?;
            let bridge = NatsBridge {
                scx: scx.clone(),
                from_id: from_id.clone(),
                nats,
                topics: Default::default(),
            };
            let register = scx.extends.hook_mgr().register();
            for typ in [Type::SessionSubscribed, Type::SessionUnsubscribed, Type::SessionTerminated] {
                register.add(typ, Box::new(bridge.clone())).await;
            }
            register.start().await;
            Publisher::Nats(bridge)
        }
        "local" => Publisher::Rmqtt(scx.clone(), from_id.clone()),
        m => bail!("unknown mode {m}"),
    };

    let tcp = Builder::new()
        .name("tcp")
        .laddr(format!("127.0.0.1:{mqtt_port}").parse()?)
        .allow_anonymous(true)
        .reuseaddr(Some(true))
        .nodelay(true)
        .max_inflight(NonZeroU16::new(64).unwrap())
        .max_mqueue_len(100_000)
        .bind()?
        .tcp()?;
    MqttServer::new(scx.clone()).listener(tcp).build().start();

    let trigger: SocketAddr = format!("127.0.0.1:{trigger_port}").parse()?;
    tokio::spawn(serve_trigger(trigger, Arc::new(publisher)));
    eprintln!("node {id} mode {mode} mqtt {mqtt_port} trigger {trigger_port} ready");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
