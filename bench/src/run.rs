//! One measured run: seed threads, connect every client, send the schedule,
//! wait for deliveries, collect figures.
//!
//! Streams: pair `i` has stream `2i` (buyer → seller) and `2i + 1`
//! (seller → buyer). Every payload is the same `send_message` envelope for
//! both targets; its text starts with `s<stream>q<seq>t<sent_us>:` so a
//! receiver knows which message it got and how old it is, and its
//! `client_msg_id` is `s<stream>q<seq>t<sent_us>` so an ack carries its own
//! send time. (Letters, not `:`, between the numbers: digits joined by
//! punctuation can read as a phone number, which moderation would mask.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chat_protocol::{ClientEvent, MessageType, v2};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{Outgoing, Transport};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use crate::target::{Endpoint, Kind, ProcStats, Snapshot, Target};
use crate::tracker::{
    Percentiles, SequenceReport, SequenceTracker, latency_histogram, percentiles,
};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Tcp,
    Ws,
}

/// The client population and message schedule of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub pairs: u32,
    /// Messages each buyer sends.
    pub messages: u32,
    /// Messages per second per buyer; 0 sends as fast as the window allows.
    pub rate: f64,
    /// Unacknowledged messages a buyer may have outstanding.
    pub inflight: usize,
    /// A seller answers every n-th message it receives; 0 never.
    pub reply_every: u32,
    /// Length of the message text in bytes.
    pub size: usize,
    pub via: Via,
    pub connect_concurrency: usize,
    /// Hard bound on the send and drain phases.
    pub max_duration: Duration,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
    /// Testing the bench itself: the receiver of stream 0 drops seq 1 and
    /// counts seq 2 twice, which the report must show as 1 lost, 1 duplicate.
    pub inject_faults: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// The kind of target, or e.g. `3 nodes` for a cluster run.
    pub target: String,
    pub clients: u32,
    pub connect_seconds: f64,
    pub connects_per_s: f64,
    pub ack: Percentiles,
    pub delivery: Percentiles,
    pub sequence: SequenceReport,
    pub send_seconds: f64,
    pub delivered_per_s: f64,
    pub errors: u64,
    /// Sends the server refused for load (`unavailable`, with a retry
    /// delay); each was published again after that delay.
    pub shed: u64,
    /// Send → refusal, for those.
    pub refusal: Percentiles,
    pub server_cpu_seconds: f64,
    pub server_peak_rss_kib: u64,
    pub server_rss_per_connection_kib: f64,
    /// CPU the bench itself used while sending: it shares the machine.
    pub bench_cpu_seconds: f64,
    /// Per chatd node (cluster runs; one entry for one node); the
    /// `server_*` figures above are their sums.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFigures>,
    /// CPU seconds of the cluster's NATS server while sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_cpu_seconds: Option<f64>,
    /// CPU seconds of the local Cassandra while sending (Scylla store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cql_cpu_seconds: Option<f64>,
}

/// One chatd node's share of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeFigures {
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

struct Shared {
    epoch: Instant,
    tracker: Mutex<SequenceTracker>,
    ack: Mutex<Histogram<u64>>,
    delivery: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    last_delivery_us: AtomicU64,
    errors: AtomicU64,
    /// Sends refused for load (and published again later).
    shed: AtomicU64,
    /// Send → refusal PUBACK, for the sheds.
    refusal: Mutex<Histogram<u64>>,
    progress: ProgressBar,
    plan: Plan,
    kind: Kind,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

fn payload(stream: u32, seq: u32, sent_us: u64, size: usize) -> Vec<u8> {
    let mut content = format!("s{stream}q{seq}t{sent_us}:");
    while content.len() < size {
        content.push('x');
    }
    // Every target carries the same bytes: chatd's v2 `msg`.
    v2::encode(&v2::Command::Msg {
        client_msg_id: format!("s{stream}q{seq}t{sent_us}"),
        kind: MessageType::Text,
        content,
    })
}

/// What a client published, oldest first, until its event loop reports
/// the packet id: a send refused for load (`unavailable`) is published
/// again, after the delay its PUBACK asks for, with the same bytes (the
/// same `client_msg_id`, so the server stores it once).
type Outbox = Arc<std::sync::Mutex<std::collections::VecDeque<(u64, Vec<u8>)>>>;

/// A connected client and what it has published.
#[derive(Clone)]
struct Tracked {
    client: AsyncClient,
    outbox: Outbox,
    hold: Arc<Hold>,
}

/// A client told to wait, as an app's outbox would be: no new send until
/// the delay has passed and the refused sends have gone out again, oldest
/// first (a send refused twice goes again before a later one refused once).
#[derive(Default)]
struct Hold {
    /// Bench time (µs) before which nothing new is sent.
    until_us: AtomicU64,
    /// Refused sends not yet published again.
    pending: std::sync::atomic::AtomicUsize,
    /// The order of the client's next new publish.
    next: AtomicU64,
    /// Refused sends by the order they were first published in.
    refused: std::sync::Mutex<std::collections::BTreeMap<u64, Vec<u8>>>,
    wake: tokio::sync::Notify,
}

impl Hold {
    fn take_refused(&self) -> std::collections::BTreeMap<u64, Vec<u8>> {
        std::mem::take(&mut *self.refused.lock().expect("hold lock"))
    }
}

impl Tracked {
    /// Publishes at QoS 1, noting the bytes; `false` if the client is gone.
    /// The note and the request are made under one lock, so notes stay in
    /// the order the event loop sends the packets in.
    fn publish(&self, topic: &str, bytes: Vec<u8>) -> bool {
        let order = self.hold.next.fetch_add(1, Ordering::Relaxed);
        self.publish_as(topic, order, bytes)
    }

    /// [`Tracked::publish`] of a send first published as `order`.
    fn publish_as(&self, topic: &str, order: u64, bytes: Vec<u8>) -> bool {
        let mut outbox = self.outbox.lock().expect("outbox lock");
        outbox.push_back((order, bytes.clone()));
        let sent = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, bytes)
            .is_ok();
        if !sent {
            outbox.pop_back();
        }
        sent
    }
}

/// The delay a PUBACK refusing for load asks for: its `code` is
/// `unavailable` and its `retry` a number of milliseconds.
fn retry_after(ack: &rumqttc::v5::mqttbytes::v5::PubAck) -> Option<Duration> {
    let props = ack.properties.as_ref()?;
    let prop = |name: &str| {
        props
            .user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    (prop("code")? == "unavailable")
        .then(|| prop("retry")?.parse().ok().map(Duration::from_millis))
        .flatten()
}

fn parse_marker(text: &str) -> Option<(u32, u32, u64)> {
    let rest = text.strip_prefix('s')?;
    let (stream, rest) = rest.split_once('q')?;
    let (seq, rest) = rest.split_once('t')?;
    let sent = rest.split(':').next()?;
    Some((stream.parse().ok()?, seq.parse().ok()?, sent.parse().ok()?))
}

pub fn token(secret: &str, user: &str, role: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "role": role, "iss": "chatd-dev", "aud": "chat", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding")
}

/// Registers the pairs with chatd and opens their threads; returns thread ids.
async fn seed_chatd(target: &Target, pairs: u32) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", target.http_port);
    let platform = token(&target.secret, "bench-platform", "platform");
    let limit = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for pair in 0..pairs {
        let (http, base, platform, secret, limit) = (
            http.clone(),
            base.clone(),
            platform.clone(),
            target.secret.clone(),
            limit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            for user in [format!("bb{pair}"), format!("bs{pair}")] {
                http.put(format!("{base}/internal/users/{user}"))
                    .bearer_auth(&platform)
                    .json(&json!({"displayName": user, "seller": user.starts_with("bs")}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            let thread: serde_json::Value = http
                .post(format!("{base}/chat/threads"))
                .bearer_auth(token(&secret, &format!("bb{pair}"), "buyer"))
                .json(&json!({"sellerId": format!("bs{pair}")}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            thread["id"]
                .as_str()
                .map(str::to_owned)
                .context("thread id")
        }));
    }
    let mut threads = Vec::with_capacity(tasks.len());
    for task in tasks {
        threads.push(task.await??);
    }
    Ok(threads)
}

struct Participant {
    pair: u32,
    buyer: bool,
    thread: String,
}

impl Participant {
    fn user(&self) -> String {
        format!("{}{}", if self.buyer { "bb" } else { "bs" }, self.pair)
    }

    fn stream(&self) -> u32 {
        self.pair * 2 + u32::from(!self.buyer)
    }

    fn publish_topic(&self, kind: Kind) -> String {
        match kind {
            Kind::Chatd => v2::thread(&self.thread),
            Kind::ChatdRaw => format!("bench/{}", self.thread),
            Kind::Mosquitto => chat_protocol::topics::thread(&self.thread),
        }
    }
}

/// Connects one client and subscribes; returns once the SUBACK is in.
async fn connect(
    target: &Endpoint,
    who: &Participant,
    shared: &Arc<Shared>,
    window: Option<Arc<Semaphore>>,
) -> anyhow::Result<Tracked> {
    let user = who.user();
    let node = target.node_for(who.pair, who.buyer);
    let mut opts = match shared.plan.via {
        Via::Tcp => MqttOptions::new(&user, "127.0.0.1", node.tcp),
        Via::Ws => {
            let mut o =
                MqttOptions::new(&user, format!("ws://127.0.0.1:{}/mqtt", node.ws), node.ws);
            o.set_transport(Transport::Ws);
            o
        }
    };
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_max_packet_size(Some(1 << 20));
    opts.set_outgoing_inflight_upper_limit(shared.plan.inflight.clamp(1, u16::MAX as usize) as u16);
    let role = match shared.kind {
        Kind::Chatd if who.buyer => Some("buyer"),
        Kind::Chatd => Some("seller"),
        Kind::ChatdRaw => Some("loadtest"),
        Kind::Mosquitto => None,
    };
    if let Some(role) = role {
        opts.set_credentials(&user, token(&target.secret, &user, role));
    }
    // Phones and our server both disable Nagle; a bench client that does
    // not measures 40 ms of delayed-ACK stalls instead of the server.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    opts.set_network_options(network);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    // Every target gets MQTT 5 with No Local: a client never receives its
    // own publish back, and every send is answered by its PUBACK (chatd
    // puts the stored id in it, or refuses with a reason code). chatd
    // (v2): everything for a user on one topic.
    let filter = match shared.kind {
        Kind::ChatdRaw => who.publish_topic(Kind::ChatdRaw),
        Kind::Chatd => v2::user(&user),
        Kind::Mosquitto => chat_protocol::topics::thread(&who.thread),
    };
    client
        .subscribe_many([Filter {
            nolocal: true,
            ..Filter::new(filter, QoS::AtLeastOnce)
        }])
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                anyhow::ensure!(
                    ack.return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    "{user}: subscription refused"
                );
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("{user}: {e}"),
            Err(_) => anyhow::bail!("{user}: connect timed out"),
        }
    }
    let me = Participant {
        pair: who.pair,
        buyer: who.buyer,
        thread: who.thread.clone(),
    };
    let tracked = Tracked {
        client,
        outbox: Default::default(),
        hold: Arc::default(),
    };
    {
        let (tracked, shared, topic) = (
            tracked.clone(),
            shared.clone(),
            who.publish_topic(shared.kind),
        );
        tokio::spawn(async move {
            let hold = &tracked.hold;
            loop {
                let mut batch = hold.take_refused();
                if batch.is_empty() {
                    hold.wake.notified().await;
                    continue;
                }
                // Sleep until the latest delay asked for; what was refused
                // meanwhile joins the batch in its place.
                loop {
                    let wait = hold
                        .until_us
                        .load(Ordering::Relaxed)
                        .saturating_sub(shared.now_us());
                    if wait == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                }
                batch.append(&mut hold.take_refused());
                for (order, bytes) in batch {
                    if !tracked.publish_as(topic.as_str(), order, bytes) {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    hold.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::spawn(receive_loop(
        eventloop,
        tracked.clone(),
        me,
        shared.clone(),
        window,
    ));
    Ok(tracked)
}

/// An ack came back: its latency (when the send time is known) goes into
/// the histogram, and the sender may send one more.
async fn acked(shared: &Shared, sent_us: Option<u64>, window: Option<&Semaphore>) {
    if let Some(sent) = sent_us {
        let _ = shared
            .ack
            .lock()
            .await
            .record(shared.now_us().saturating_sub(sent).max(1));
    }
    if let Some(w) = window {
        w.add_permits(1);
    }
}

/// Drives one client's connection and accounts for what arrives.
async fn receive_loop(
    mut eventloop: rumqttc::v5::EventLoop,
    client: Tracked,
    me: Participant,
    shared: Arc<Shared>,
    window: Option<Arc<Semaphore>>,
) {
    let my_stream = me.stream();
    let topic = me.publish_topic(shared.kind);
    let mut replies = 0u32;
    let mut received = 0u32;
    // Packet id → when it was sent, its order and its bytes.
    let mut pubacks: std::collections::HashMap<u16, (u64, u64, Vec<u8>)> =
        std::collections::HashMap::new();
    loop {
        let event = match eventloop.poll().await {
            Ok(e) => e,
            Err(_) => return,
        };
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let (order, bytes) = client
                    .outbox
                    .lock()
                    .expect("outbox lock")
                    .pop_front()
                    .unwrap_or_default();
                pubacks.insert(pkid, (shared.now_us(), order, bytes));
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let sent = pubacks.remove(&ack.pkid);
                if let (Some(retry), Some((at, order, bytes))) = (retry_after(&ack), &sent) {
                    // Shed for load: answered, not stored. The window slot
                    // stays taken until the send is acked; it goes out
                    // again after the delay, with a little jitter, as the
                    // protocol asks of clients.
                    let now = shared.now_us();
                    shared.shed.fetch_add(1, Ordering::Relaxed);
                    let _ = shared
                        .refusal
                        .lock()
                        .await
                        .record(now.saturating_sub(*at).max(1));
                    let jitter = f64::from(me.pair % 32) / 64.0;
                    let until = now + (retry.as_micros() as f64 * (1.0 + jitter)) as u64;
                    client.hold.until_us.fetch_max(until, Ordering::Relaxed);
                    client.hold.pending.fetch_add(1, Ordering::Relaxed);
                    client
                        .hold
                        .refused
                        .lock()
                        .expect("hold lock")
                        .insert(*order, bytes.clone());
                    client.hold.wake.notify_one();
                    continue;
                }
                let sent = sent.map(|(at, _, _)| at);
                // A refusal (chatd: rate limit, moderation, overload) is
                // answered too, but is not a delivery to wait for.
                let refused = !matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                );
                if refused {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                acked(&shared, sent.filter(|_| !refused), window.as_deref()).await;
            }
            Event::Incoming(Packet::Publish(p)) => {
                let text = match shared.kind {
                    Kind::Mosquitto | Kind::ChatdRaw => match v2::decode_command(&p.payload) {
                        Ok(ClientEvent::SendMessage { content, .. }) => Some(content),
                        _ => None,
                    },
                    Kind::Chatd => match v2::decode_event(&p.payload) {
                        Ok(v2::Event::Msg(msg)) => Some(msg.content),
                        Ok(v2::Event::Error { .. }) => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        _ => None,
                    },
                };
                let Some((stream, seq, sent)) = text.as_deref().and_then(parse_marker) else {
                    continue;
                };
                if stream == my_stream {
                    continue; // No Local keeps our own copies away; never count one
                }
                received += 1;
                let now = shared.now_us();
                let _ = shared
                    .delivery
                    .lock()
                    .await
                    .record(now.saturating_sub(sent).max(1));
                {
                    let mut tracker = shared.tracker.lock().await;
                    let faulty = shared.plan.inject_faults && stream == 0;
                    if !(faulty && seq == 1) {
                        tracker.received(stream, seq);
                    }
                    if faulty && seq == 2 {
                        tracker.received(stream, seq);
                    }
                }
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery_us.fetch_max(now, Ordering::Relaxed);
                shared.progress.inc(1);
                let every = shared.plan.reply_every;
                if !me.buyer && every > 0 && received.is_multiple_of(every) {
                    let bytes = payload(my_stream, replies, shared.now_us(), shared.plan.size);
                    if client.publish(topic.as_str(), bytes) {
                        replies += 1;
                        shared.tracker.lock().await.sent(my_stream, replies);
                    } else {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sends one buyer's schedule.
async fn send_loop(client: Tracked, me: Participant, shared: Arc<Shared>, window: Arc<Semaphore>) {
    let plan = &shared.plan;
    let topic = me.publish_topic(shared.kind);
    let stream = me.stream();
    let mut ticker = (plan.rate > 0.0).then(|| {
        // Buyers start spread evenly over one period (golden-ratio offsets),
        // as real users do; aligned timers would send every buyer's message
        // in the same instant and measure a thundering herd instead.
        let period = Duration::from_secs_f64(1.0 / plan.rate);
        let phase = (f64::from(me.pair) * 0.618_033_988_75).fract();
        let start = tokio::time::Instant::now() + period.mul_f64(phase);
        let mut t = tokio::time::interval_at(start, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for seq in 0..plan.messages {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        // On a schedule, latency counts from when the message was due, so
        // waits for the window or a hold count too; unthrottled, a message
        // is due when the window lets it go.
        let mut due_us = shared.now_us();
        match window.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        if ticker.is_none() {
            due_us = shared.now_us();
        }
        // Told to wait: hold new sends until the refused ones are out.
        while client.hold.pending.load(Ordering::Relaxed) > 0
            || client.hold.until_us.load(Ordering::Relaxed) > shared.now_us()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let bytes = payload(stream, seq, due_us, plan.size);
        if !client.publish(topic.as_str(), bytes) {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.tracker.lock().await.sent(stream, seq + 1);
    }
}

/// One process's share of a run: its pairs, their clients and counters.
pub struct Share {
    shared: Arc<Shared>,
    buyers: Vec<(Participant, Tracked, Arc<Semaphore>)>,
    clients: Vec<Tracked>,
    pub connect_seconds: f64,
    expected: u64,
}

/// What one process measured, in a form that merges across processes
/// (pairs are split between processes, so streams never overlap).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    pub clients: u32,
    pub connect_seconds: f64,
    pub sequence: SequenceReport,
    /// (value µs, count) of the recorded histograms.
    pub ack: Vec<(u64, u64)>,
    pub delivery: Vec<(u64, u64)>,
    pub delivered: u64,
    pub errors: u64,
    #[serde(default)]
    pub shed: u64,
    #[serde(default)]
    pub refusal: Vec<(u64, u64)>,
    pub span_seconds: f64,
    pub cpu_seconds: f64,
}

fn recorded(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn histogram_of(parts: &[Partial], pick: impl Fn(&Partial) -> &Vec<(u64, u64)>) -> Histogram<u64> {
    let mut h = latency_histogram();
    for part in parts {
        for &(value, count) in pick(part) {
            let _ = h.record_n(value.max(1), count);
        }
    }
    h
}

/// Seeds the threads of `pairs` pairs (chatd) or names them (plain brokers).
pub async fn threads_for(target: &Target, pairs: u32) -> anyhow::Result<Vec<String>> {
    match target.kind {
        Kind::Chatd => seed_chatd(target, pairs).await,
        Kind::Mosquitto | Kind::ChatdRaw => Ok((0..pairs).map(|i| format!("bench-{i}")).collect()),
    }
}

/// Connects both clients of each given pair, a bounded number at a time.
pub async fn connect_share(
    endpoint: &Endpoint,
    kind: Kind,
    plan: &Plan,
    pairs: &[(u32, String)],
    progress: ProgressBar,
) -> anyhow::Result<Share> {
    let replies_per_pair = plan.messages.checked_div(plan.reply_every).unwrap_or(0);
    let expected = pairs.len() as u64 * u64::from(plan.messages + replies_per_pair);
    progress.set_length(expected);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        tracker: Mutex::new(SequenceTracker::default()),
        ack: Mutex::new(latency_histogram()),
        delivery: Mutex::new(latency_histogram()),
        delivered: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        shed: AtomicU64::new(0),
        refusal: Mutex::new(latency_histogram()),
        progress,
        plan: plan.clone(),
        kind,
    });
    let connect_start = Instant::now();
    let limit = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let mut connecting = Vec::new();
    for (pair, thread) in pairs {
        for buyer in [true, false] {
            let who = Participant {
                pair: *pair,
                buyer,
                thread: thread.clone(),
            };
            let window = buyer.then(|| Arc::new(Semaphore::new(plan.inflight.max(1))));
            let (shared, limit, endpoint) = (shared.clone(), limit.clone(), endpoint.clone());
            connecting.push(tokio::spawn(async move {
                let _permit = limit.acquire().await?;
                let client = connect(&endpoint, &who, &shared, window.clone()).await?;
                anyhow::Ok((who, client, window))
            }));
        }
    }
    let mut buyers = Vec::new();
    let mut clients = Vec::new();
    for task in connecting {
        let (who, client, window) = task.await??;
        if let Some(window) = window {
            buyers.push((who, client.clone(), window));
        }
        clients.push(client);
    }
    Ok(Share {
        shared,
        buyers,
        clients,
        connect_seconds: connect_start.elapsed().as_secs_f64(),
        expected,
    })
}

/// Sends the schedule, waits for the last deliveries (bounded), and
/// returns what this process measured.
pub async fn send_share(mut share: Share) -> Partial {
    let shared = share.shared.clone();
    let plan = &shared.plan;
    let send_start_us = shared.now_us();
    let cpu_before = ProcStats::read(std::process::id()).cpu_seconds;
    let senders: Vec<_> = std::mem::take(&mut share.buyers)
        .into_iter()
        .map(|(who, client, window)| tokio::spawn(send_loop(client, who, shared.clone(), window)))
        .collect();
    let expected = share.expected;
    let bounded = tokio::time::timeout(plan.max_duration, async {
        for s in senders {
            let _ = s.await;
        }
        let drain_until = Instant::now() + plan.drain;
        while Instant::now() < drain_until {
            let report = shared.tracker.lock().await.report();
            let replies_pending = plan.reply_every > 0 && report.delivered < expected;
            if report.delivered >= report.sent && !replies_pending {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if bounded.is_err() {
        shared.progress.println("stopped at the time bound");
    }
    let cpu_seconds = ProcStats::read(std::process::id()).cpu_seconds - cpu_before;
    for client in share.clients.iter() {
        let _ = client.client.try_disconnect();
    }
    shared.progress.finish_and_clear();
    let last = shared.last_delivery_us.load(Ordering::Relaxed);
    Partial {
        clients: share.clients.len() as u32,
        connect_seconds: share.connect_seconds,
        sequence: shared.tracker.lock().await.report(),
        ack: recorded(&*shared.ack.lock().await),
        delivery: recorded(&*shared.delivery.lock().await),
        delivered: shared.delivered.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        shed: shared.shed.load(Ordering::Relaxed),
        refusal: recorded(&*shared.refusal.lock().await),
        span_seconds: last.saturating_sub(send_start_us) as f64 / 1e6,
        cpu_seconds,
    }
}

/// Server-side figures around the phases of a run.
pub struct ServerSamples {
    pub before: Snapshot,
    pub connected: Snapshot,
    pub after: Snapshot,
}

/// Folds the partials of all processes into one result.
pub fn combine(label: &str, parts: &[Partial], server: &ServerSamples) -> RunResult {
    let clients: u32 = parts.iter().map(|p| p.clients).sum();
    // Processes connect side by side: the slowest one bounds the phase.
    let connect_seconds = parts.iter().map(|p| p.connect_seconds).fold(0.0, f64::max);
    let span = parts.iter().map(|p| p.span_seconds).fold(0.0, f64::max);
    let mut sequence = SequenceReport::default();
    for p in parts {
        sequence.sent += p.sequence.sent;
        sequence.delivered += p.sequence.delivered;
        sequence.lost += p.sequence.lost;
        sequence.duplicated += p.sequence.duplicated;
        sequence.out_of_order += p.sequence.out_of_order;
    }
    let nodes: Vec<NodeFigures> = server
        .after
        .nodes
        .iter()
        .zip(&server.connected.nodes)
        .map(|(after, connected)| NodeFigures {
            cpu_seconds: after.cpu_seconds - connected.cpu_seconds,
            peak_rss_kib: after.peak_rss_kib,
        })
        .collect();
    let rss_growth: u64 = server
        .connected
        .nodes
        .iter()
        .zip(&server.before.nodes)
        .map(|(connected, before)| connected.rss_kib.saturating_sub(before.rss_kib))
        .sum();
    let cpu_of = |pick: fn(&Snapshot) -> Option<ProcStats>| {
        Some(pick(&server.after)?.cpu_seconds - pick(&server.connected)?.cpu_seconds)
    };
    RunResult {
        target: label.to_owned(),
        clients,
        connect_seconds,
        connects_per_s: f64::from(clients) / connect_seconds.max(1e-9),
        ack: percentiles(&histogram_of(parts, |p| &p.ack)),
        delivery: percentiles(&histogram_of(parts, |p| &p.delivery)),
        sequence,
        send_seconds: span,
        delivered_per_s: parts.iter().map(|p| p.delivered).sum::<u64>() as f64 / span.max(1e-9),
        errors: parts.iter().map(|p| p.errors).sum(),
        shed: parts.iter().map(|p| p.shed).sum(),
        refusal: percentiles(&histogram_of(parts, |p| &p.refusal)),
        server_cpu_seconds: nodes.iter().map(|n| n.cpu_seconds).sum(),
        server_peak_rss_kib: nodes.iter().map(|n| n.peak_rss_kib).sum(),
        server_rss_per_connection_kib: rss_growth as f64 / f64::from(clients.max(1)),
        bench_cpu_seconds: parts.iter().map(|p| p.cpu_seconds).sum(),
        nats_cpu_seconds: cpu_of(|s| s.nats),
        cql_cpu_seconds: cpu_of(|s| s.cql),
        nodes,
    }
}

/// A run in this process alone.
pub async fn run(target: &Target, plan: &Plan, progress: ProgressBar) -> anyhow::Result<RunResult> {
    let threads = threads_for(target, plan.pairs).await?;
    let pairs: Vec<(u32, String)> = threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| (i as u32, t))
        .collect();
    let before = target.snapshot();
    let share = connect_share(&target.endpoint(), target.kind, plan, &pairs, progress).await?;
    let connected = target.snapshot();
    let partial = send_share(share).await;
    let after = target.snapshot();
    Ok(combine(
        &target.label,
        &[partial],
        &ServerSamples {
            before,
            connected,
            after,
        },
    ))
}
