//! `chatd`: the chat server and its tools.

mod config;
mod config_reference;
mod cors;
mod demo;
mod http;
mod jwks;
mod ops;
mod persist;
mod poison;

// glibc's malloc fragments under chat traffic: every pipelined send is a
// task of a few KiB allocated on one worker and freed on another, beside
// read buffers kept alive by the payloads they hold. In `burst` its RSS grew
// by ~2.5 KiB per message without bound (835 MiB after 300k messages, with a
// live heap under 50 MiB) and malloc/free took ~15 % of the CPU; mimalloc
// keeps RSS flat and costs less (docs/performance.md). The `system-alloc`
// feature keeps glibc's, for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chat_broker::Broker;
use chat_core::auth::{Role, TokenVerifier, claims_for, mint_hs256};
use chat_core::bus::InProcessBus;
use chat_core::membership::MembershipCache;
use chat_core::notify::{MemoryQueue, NotificationQueue};
use chat_core::service::{ChatService, Deps, PushRoute};
use chat_core::store::ChatStore;
use chat_protocol::{ClientEvent, MessageType};
use chat_push::dispatch::Dispatcher;
use chat_rest::AppState;
use chat_store::{SqliteOutbox, SqliteStore};
use clap::{Parser, Subcommand};

use crate::config::{Config, PersistMode, StoreKind};

#[derive(Parser)]
#[command(name = "chatd", version, about = "Buyer–seller chat server over MQTT")]
struct Cli {
    /// TOML configuration file (default: ./chatd.toml if present).
    #[arg(long, global = true, env = "CHAT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker, the chat service and the REST facade (the default).
    Serve,
    /// Mint a development token signed with the HS256 secret.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long, value_parser = ["buyer", "seller", "admin", "platform", "loadtest"])]
        role: String,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Write a client event as MessagePack to stdout (pipe into
    /// `mosquitto_pub -s`).
    Encode {
        #[command(subcommand)]
        event: EncodeEvent,
    },
    /// Read server events from stdin, one per line as `mosquitto_sub -F
    /// '%t %x'` prints them (topic, space, hex payload), and print JSON.
    Decode,
    /// Run a persistence worker: process the inbound messages gateways
    /// (`persist.mode = "workers"`) hand over, against the shared store.
    Persist,
    /// Run a notification worker: take push and e-mail jobs from NATS
    /// JetStream (shared with other replicas) and send them.
    Push,
    /// Create the ScyllaDB keyspace if needed and apply pending CQL
    /// migrations (idempotent; safe to run from several nodes at once).
    Migrate,
    /// Fill the configured store with one long thread, for history benchmarks
    /// (run it while the server is stopped). Prints the thread id and the
    /// ids at the top and in the middle of its history as JSON.
    SeedHistory {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u32,
        #[arg(long, default_value = "hist-buyer")]
        buyer: String,
        #[arg(long, default_value = "hist-seller")]
        seller: String,
    },
}

#[derive(Subcommand)]
enum EncodeEvent {
    /// A text message.
    SendMessage {
        /// Idempotency key; reuse it when retrying the same message.
        #[arg(long)]
        client_msg_id: String,
        #[arg(long)]
        text: String,
    },
    /// Move the read marker up to a message id.
    MarkRead {
        #[arg(long)]
        up_to: String,
    },
    /// Typing indicator.
    Typing {
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        active: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token { user, role, ttl } => token(&config, &user, &role, &ttl),
        Command::Encode { event } => encode(event),
        Command::Decode => decode(),
        Command::Migrate => tokio::runtime::Runtime::new()?.block_on(migrate(&config)),
        Command::Push => {
            init_tracing(&config)?;
            tokio::runtime::Runtime::new()?.block_on(push_worker(config))
        }
        Command::Persist => {
            init_tracing(&config)?;
            tokio::runtime::Runtime::new()?.block_on(persist::run(config))
        }
        Command::SeedHistory {
            messages,
            buyer,
            seller,
        } => tokio::runtime::Runtime::new()?
            .block_on(seed_history(&config, messages, &buyer, &seller)),
    }
}

fn encode(event: EncodeEvent) -> anyhow::Result<()> {
    use std::io::Write;
    let event = match event {
        EncodeEvent::SendMessage {
            client_msg_id,
            text,
        } => ClientEvent::SendMessage {
            client_msg_id,
            kind: MessageType::Text,
            content: text,
        },
        EncodeEvent::MarkRead { up_to } => ClientEvent::MarkRead { up_to },
        EncodeEvent::Typing { active } => ClientEvent::Typing { active },
    };
    std::io::stdout().write_all(&chat_protocol::encode(&event))?;
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    if config.store != StoreKind::Scylla {
        bail!(
            "`chatd migrate` applies CQL migrations; set store = \"scylla\" (the embedded store migrates itself when it opens)"
        );
    }
    let session = chat_scylla::connect(&config.scylla)
        .await
        .context("connecting to ScyllaDB")?;
    let report = chat_scylla::migrate::migrate(&session, &config.scylla)
        .await
        .context("migrating")?;
    println!(
        "{}",
        serde_json::json!({
            "keyspace": config.scylla.keyspace,
            "applied": report.applied,
            "already_applied": report.already,
        })
    );
    Ok(())
}

/// The configured message store.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ChatStore>> {
    Ok(open_stores(config).await?.0)
}

/// The moderation pipeline with the admin keyword lists, read again every
/// 30 s so that a change made through another node applies here too.
pub(crate) async fn load_moderation(
    config: &Config,
    store: Arc<dyn ChatStore>,
) -> anyhow::Result<Arc<chat_core::moderation::Moderation>> {
    let moderation = Arc::new(
        chat_core::moderation::Moderation::load(config.moderation.clone(), store)
            .await
            .context("loading the moderation keyword lists")?,
    );
    let reloading = Arc::downgrade(&moderation);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        every.tick().await;
        loop {
            every.tick().await;
            let Some(moderation) = reloading.upgrade() else {
                return;
            };
            if let Err(e) = moderation.reload().await {
                tracing::warn!(error = %e, "reloading keyword lists failed; keeping the old ones");
            }
        }
    });
    Ok(moderation)
}

/// Object storage for image messages: a directory under the data dir, or S3.
pub(crate) fn open_attachments(
    config: &Config,
) -> anyhow::Result<Arc<chat_attachments::service::ImageAttachments>> {
    let secret = config
        .attachment_url_secret()
        .context("reading the attachment URL secret")?;
    Ok(Arc::new(
        chat_attachments::service::ImageAttachments::from_config(
            &config.attachments,
            &config.data_dir,
            secret.as_bytes(),
            config.http_addr,
        )
        .context("setting up attachment storage")?,
    ))
}

/// The JetStream notification queue, when NATS is configured.
async fn connect_nats(config: &Config) -> anyhow::Result<Option<Arc<chat_nats::JetStreamQueue>>> {
    match &config.nats.url {
        None => Ok(None),
        Some(url) => Ok(Some(Arc::new(
            chat_nats::JetStreamQueue::connect(&config.nats)
                .await
                .with_context(|| format!("connecting to NATS at {url}"))?,
        ))),
    }
}

/// This node's part in a cluster: the backbone it publishes through and
/// the cluster-wide presence.
struct ClusterNode {
    backbone: Arc<chat_nats::cluster::NatsBackbone>,
    presence: Arc<chat_nats::cluster::NatsPresence>,
}

fn node_id(config: &Config) -> String {
    config.cluster.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!(
            "{}-{}",
            if host.is_empty() { "chatd" } else { &host },
            std::process::id()
        )
    })
}

/// With `cluster.backbone = "nats"`: deliveries, presence and membership
/// changes cross nodes through NATS. Needs the shared store.
async fn join_cluster(
    config: &Config,
    broker: &Broker,
    membership: &Arc<MembershipCache>,
) -> anyhow::Result<Option<ClusterNode>> {
    use chat_nats::cluster::{Backbone, NatsBackbone, NatsPresence};
    if config.cluster.backbone == Backbone::None {
        return Ok(None);
    }
    let url = config
        .nats
        .url
        .as_deref()
        .context("cluster.backbone = \"nats\" needs nats.url (CHAT_NATS__URL)")?;
    if matches!(config.store, StoreKind::Sqlite) {
        anyhow::bail!(
            "cluster.backbone = \"nats\" needs a store every node shares: store = \"scylla\" (SQLite is one node's file)"
        );
    }
    if config.persist.mode == PersistMode::Workers {
        // Workers publish their events as MQTT clients of one gateway, which
        // routes them to its own subscribers only; in a cluster every node
        // persists what its clients send (there is no single gateway to offload).
        anyhow::bail!(
            "cluster.backbone = \"nats\" needs persist.mode = \"in_process\": every node stores what its own clients send"
        );
    }
    let node = node_id(config);
    let backbone = NatsBackbone::connect(&config.nats, &node, broker.outbound())
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    broker.report_interest(backbone.clone()).await;
    backbone
        .follow_membership(membership)
        .await
        .context("following membership changes")?;
    let presence = NatsPresence::start(
        backbone.client().clone(),
        &node,
        &config.cluster,
        config.nats.replicas,
    )
    .await
    .context("starting cluster presence")?;
    tracing::info!(
        node,
        nats = url,
        "cluster node: deliveries and presence over NATS"
    );
    Ok(Some(ClusterNode { backbone, presence }))
}

/// `chatd push`: a notification worker. Replicas share the JetStream
/// consumer; each job goes to one of them. They cannot see sessions, so
/// gateways enqueue jobs only for recipients offline at send time.
async fn push_worker(config: Config) -> anyhow::Result<()> {
    let queue = connect_nats(&config)
        .await?
        .context("`chatd push` needs nats.url (CHAT_NATS__URL)")?;
    if !Dispatcher::has_channels(&config.push, &config.email) {
        anyhow::bail!(
            "`chatd push` has nothing to send with: configure push.fcm, push.apns or email"
        );
    }
    if matches!(config.store, StoreKind::Sqlite) {
        tracing::warn!(
            "`chatd push` on the embedded store sees only its own data directory; use store = \"scylla\""
        );
    }
    let store = open_store(&config).await?;
    // In a cluster the worker sees who is online on any node (read-only).
    let presence: Option<Arc<dyn chat_core::presence::Presence>> =
        if config.cluster.backbone == chat_nats::cluster::Backbone::Nats {
            let node = format!("push-{}", node_id(&config));
            let client = chat_nats::cluster::connect_client(&config.nats, &node)
                .await
                .context("connecting to NATS for presence")?;
            Some(
                chat_nats::cluster::NatsPresence::start(
                    client,
                    &node,
                    &config.cluster,
                    config.nats.replicas,
                )
                .await
                .context("following cluster presence")?,
            )
        } else {
            None
        };
    let readiness = ops::readiness(store.clone(), Some(queue.clone()));
    ops::sample_queue_depth(queue.clone());
    ops::serve_worker_http(
        config.worker_http_addr,
        readiness.clone(),
        config.metrics_token.clone(),
    )
    .await?;
    let dispatcher = Dispatcher::new(&config.push, &config.email, store, presence, queue)
        .context("setting up notifications")?;
    tracing::info!(
        stream = config.nats.notify_stream,
        consumer = config.nats.notify_consumer,
        "push worker running"
    );
    // SIGTERM: stop taking jobs, send what was taken (folded updates
    // included), exit. Jobs still unsent go back to other workers when
    // their lease ends.
    let stop = async {
        shutdown_signal().await;
        tracing::info!("shutdown requested: draining");
        ops::start_draining(&readiness);
    };
    dispatcher
        .run_until(stop, Duration::from_secs(config.drain.timeout_secs))
        .await;
    tracing::info!("push worker stopped");
    Ok(())
}

/// The configured message store, and the same store as SQLite when it is
/// the embedded one (its outbox is the notification queue).
async fn open_stores(
    config: &Config,
) -> anyhow::Result<(Arc<dyn ChatStore>, Option<Arc<SqliteStore>>)> {
    Ok(match config.store {
        StoreKind::Sqlite => {
            let sqlite = Arc::new(
                SqliteStore::open(&config.data_dir).context("opening the embedded store")?,
            );
            (sqlite.clone(), Some(sqlite))
        }
        StoreKind::Scylla => (
            Arc::new(
                chat_scylla::ScyllaStore::open(&config.scylla)
                    .await
                    .with_context(|| format!("opening ScyllaDB at {:?}", config.scylla.nodes))?,
            ),
            None,
        ),
    })
}

async fn seed_history(
    config: &Config,
    messages: u32,
    buyer: &str,
    seller: &str,
) -> anyhow::Result<()> {
    use chat_core::model::{NewMessage, OpenThread, ThreadKey, User};
    let store = open_store(config).await?;
    for user in [buyer, seller] {
        store
            .put_user(&User {
                id: user.to_owned(),
                display_name: user.to_owned(),
                avatar_url: None,
                email: None,
                locale: "vi".into(),
                seller: user == seller,
            })
            .await?;
    }
    let thread = store
        .open_thread(&OpenThread {
            key: ThreadKey::Pair {
                buyer_id: buyer.to_owned(),
                seller_id: seller.to_owned(),
            },
            buyer_id: buyer.to_owned(),
            seller_id: seller.to_owned(),
        })
        .await?
        .thread;
    // Many appends in flight at once so that group commit batches them.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::with_capacity(messages as usize);
    for n in 0..messages {
        let (id, created_at) = chat_core::new_timed_id();
        ids.push(id.clone());
        let from = if n % 3 == 2 { seller } else { buyer };
        let message = NewMessage {
            id,
            thread_id: thread.id.clone(),
            from: from.to_owned(),
            kind: MessageType::Text,
            content: format!("tin nhắn lịch sử số {n}: áo thun size M còn hàng không shop?"),
            card: None,
            client_msg_id: Some(format!("seed-{n}")),
            created_at,
            sets_product: None,
            owes_push: false,
        };
        let permit = in_flight.clone().acquire_owned().await?;
        let store = store.clone();
        tasks.spawn(async move {
            let _permit = permit;
            store.append_message(&message).await
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    println!(
        "{}",
        serde_json::json!({
            "thread_id": thread.id,
            "messages": messages,
            "newest_id": ids.last(),
            "middle_id": ids.get(ids.len() / 2),
        })
    );
    Ok(())
}

fn decode() -> anyhow::Result<()> {
    for line in std::io::stdin().lines() {
        let line = line?;
        let (topic, hex) = line.trim().rsplit_once(' ').unwrap_or(("", line.trim()));
        let bytes: Result<Vec<u8>, _> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect();
        let decoded = bytes
            .map_err(|_| "not hex".to_owned())
            .and_then(|b| chat_protocol::decode_server(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(event) => println!("{topic} {}", serde_json::to_string(&event)?),
            Err(e) => println!("{topic} <undecodable: {e}>"),
        }
    }
    Ok(())
}

fn parse_ttl(ttl: &str) -> anyhow::Result<i64> {
    let (number, unit) = ttl.split_at(ttl.trim_end_matches(char::is_alphabetic).len());
    let n: i64 = number.parse().with_context(|| format!("bad ttl `{ttl}`"))?;
    let scale = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("bad ttl unit in `{ttl}` (use s, m, h or d)"),
    };
    Ok(n * scale)
}

fn token(config: &Config, user: &str, role: &str, ttl: &str) -> anyhow::Result<()> {
    if !chat_protocol::topics::is_valid_id(user) {
        bail!("user ids are 1-64 characters of A-Z a-z 0-9 - _ .");
    }
    let role = Role::parse(role).context("unknown role")?;
    let secret = config
        .hs256_secret()
        .context("reading the development secret")?
        .context("HS256 is not enabled in [auth] algorithms")?;
    let claims = claims_for(&config.auth, user, role, parse_ttl(ttl)?);
    println!("{}", mint_hs256(&secret, &claims));
    Ok(())
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log).context("bad log filter")?,
        )
        .init();
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let cors = cors::layer(&config.cors_allowed_origins)?;
    let secret = config
        .hs256_secret()
        .context("reading the development secret")?;
    if config.auth.hs256_secret.is_none() && secret.is_some() {
        tracing::warn!(
            path = %config.data_dir.join("dev-jwt-secret").display(),
            "using the development HS256 secret from the data directory; configure auth for production"
        );
    }
    let jwks_source = jwks::Source::from_config(&config.auth)?;
    let initial_jwks = match &jwks_source {
        Some(source) => Some(
            source
                .load(&jwks::client())
                .await
                .context("reading the JWKS (auth.jwks_file or auth.jwks_url)")?,
        ),
        None => None,
    };
    let verifier = Arc::new(TokenVerifier::with_jwks(
        &config.auth,
        secret.as_deref(),
        initial_jwks.as_ref(),
    )?);
    if let Some(source) = jwks_source {
        jwks::keep_fresh(&verifier, source, &config.auth);
    }
    let demo = demo::Demo::from_config(&config, secret.as_deref())?;
    let (store, sqlite) = open_stores(&config).await?;
    if demo.is_some() {
        demo::seed(&*store)
            .await
            .context("seeding the demo storefront")?;
    }
    let broker = Broker::new(config.mqtt.clone()).await;
    let membership = Arc::new(MembershipCache::new(store.clone()));
    let bus = Arc::new(InProcessBus::new(4096));
    let cluster = join_cluster(&config, &broker, &membership).await?;
    let outbound = match &cluster {
        Some(cluster) => cluster.backbone.clone() as Arc<dyn chat_core::outbound::Outbound>,
        None => broker.outbound(),
    };
    let presence: Arc<dyn chat_core::presence::Presence> = match &cluster {
        Some(cluster) => cluster.presence.clone(),
        None => Arc::new(chat_core::presence::LocalPresence::new()),
    };
    let moderation = load_moderation(&config, store.clone()).await?;
    let attachments = open_attachments(&config)?;
    let notifying = Dispatcher::has_channels(&config.push, &config.email);
    let nats = connect_nats(&config).await?;
    let readiness = ops::readiness(store.clone(), nats.clone());
    if let Some(cluster) = &cluster {
        // Without the backbone this node's clients would miss the others'.
        let backbone = cluster.backbone.clone();
        readiness.register("cluster", Duration::from_secs(1), move || {
            let up = backbone.connected();
            async move {
                if up {
                    Ok(())
                } else {
                    Err("no connection to the NATS backbone".to_owned())
                }
            }
        });
    }
    let (queue, push): (Option<Arc<dyn NotificationQueue>>, PushRoute) = match (nats, sqlite) {
        (Some(nats), _) => (Some(nats.clone()), PushRoute::Queue(nats)),
        (None, _) if !config.push.in_process => {
            anyhow::bail!(
                "push.in_process = false needs nats.url: `chatd push` workers take their jobs from JetStream"
            )
        }
        (None, _) if !notifying => (None, PushRoute::Nowhere),
        (None, Some(sqlite)) => (
            Some(Arc::new(
                SqliteOutbox::open(sqlite)
                    .await
                    .context("opening the notification outbox")?,
            )),
            PushRoute::WithTheMessage,
        ),
        (None, None) => {
            tracing::warn!(
                "notifications are queued in memory: a crash loses those owed at that moment (configure nats.url)"
            );
            let memory = Arc::new(MemoryQueue::default());
            (Some(memory.clone()), PushRoute::Queue(memory))
        }
    };
    let service = Arc::new(ChatService::new(Deps {
        store: store.clone(),
        membership,
        outbound,
        bus,
        limits: config.limits.clone(),
        presence,
        moderation,
        limiter: Arc::new(chat_core::ratelimit::RateLimiter::new(
            config.rate_limits.clone(),
        )),
        attachments: Some(attachments.clone()),
        push,
        // Whoever gets a demo token talks to the demo shops, not to real users.
        sandbox_prefix: demo.is_some().then(|| demo::ID_PREFIX.to_owned()),
        protocol_v1: config.mqtt.protocol_v1,
    }));
    if let Some(queue) = &queue {
        ops::sample_queue_depth(queue.clone());
    }
    // Stopped after the drain, once no send can owe a new notification.
    let stop_notifying = tokio_util::sync::CancellationToken::new();
    let mut notifications = None;
    match queue {
        Some(queue) if notifying && config.push.in_process => {
            let dispatcher = Dispatcher::new(
                &config.push,
                &config.email,
                store,
                Some(service.presence().clone()),
                queue,
            )
            .context("setting up notifications")?;
            tracing::info!("notification service running in this process");
            notifications = Some(tokio::spawn(
                dispatcher.run_until(stop_notifying.clone().cancelled_owned(), NOTIFY_GRACE),
            ));
        }
        Some(_) => tracing::info!("notification jobs go to JetStream for `chatd push` workers"),
        None => tracing::info!("notifications off (no FCM, APNs or SMTP configured)"),
    }
    let inbound = match config.persist.mode {
        PersistMode::InProcess => chat_broker::Inbound::InProcess,
        PersistMode::Workers => chat_broker::Inbound::Workers,
    };
    let mqtt = broker
        .start(verifier.clone(), service.clone(), inbound)
        .await
        .context("starting the MQTT broker")?;
    ops::check_mqtt(&readiness, mqtt.clone());
    {
        // Uploads never used by a message are deleted after a while.
        let service = Arc::downgrade(&service);
        let ttl_ms = (config.attachments.unused_upload_ttl_secs * 1000) as i64;
        let sweep_every = config.attachments.sweep_interval_secs.max(1);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(sweep_every));
            loop {
                every.tick().await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                match service.sweep_uploads(ttl_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(n, "unused uploads deleted"),
                    Err(e) => tracing::warn!(error = %e, "sweeping unused uploads failed"),
                }
            }
        });
    }
    let local_files = (config.attachments.backend == chat_attachments::storage::Backend::Local)
        .then(|| attachments.storage.clone());
    let mut app = chat_rest::router(AppState {
        service,
        verifier,
        local_files,
    });
    // CORS covers the REST facade and the local attachment URLs; the demo
    // storefront is same-origin.
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    let demo_url = demo
        .is_some()
        .then(|| demo::storefront_url(config.http_addr));
    if let Some(demo) = demo {
        app = app.merge(demo::router(demo));
    }
    app = app.merge(chat_rest::ops::router(
        readiness.clone(),
        config.metrics_token.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP {}", config.http_addr))?;
    tracing::info!(
        http = %config.http_addr,
        mqtt_tcp = %config.mqtt.tcp_addr,
        mqtt_ws = %config.mqtt.ws_addr,
        data_dir = %config.data_dir.display(),
        "chatd ready"
    );
    if let Some(url) = demo_url {
        tracing::info!("demo storefront: {url}");
    }
    // The peer address reaches handlers that need it (demo sessions,
    // metrics); header and request timeouts bound slow clients.
    http::serve(
        listener,
        app,
        Duration::from_secs(config.http_header_timeout_secs.max(1)),
        Duration::from_secs(config.http_request_timeout_secs.max(1)),
        ops::drain_after(shutdown_signal(), readiness, mqtt, config.drain.clone()),
    )
    .await;
    // Updates held by the collapse window go out now rather than when the
    // jobs' leases end (after a restart, or on another node).
    if let Some(notifications) = notifications {
        stop_notifying.cancel();
        let _ =
            tokio::time::timeout(NOTIFY_GRACE + Duration::from_millis(200), notifications).await;
    }
    tracing::info!("chatd stopped");
    Ok(())
}

/// How long a stopping `chatd serve` gives its notification sends: less
/// than the drain's last grace (`ops::HTTP_GRACE`), which ends the process.
const NOTIFY_GRACE: Duration = Duration::from_secs(4);

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
