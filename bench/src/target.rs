//! The servers under test, started by the bench on spare loopback ports:
//! our `chatd` (embedded defaults, fresh data directory), a plain Debian
//! Mosquitto (no auth, no persistence), and chatd on the ScyllaDB store as
//! one node or as N nodes joined by a NATS backbone (`nats-server` started
//! here, in a temporary directory). Also reads their CPU time and memory
//! from `/proc/<pid>`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole chat path: auth, ACL, storage, acks, fan-out.
    Chatd,
    /// chatd's embedded broker alone: `loadtest` tokens, plain pub/sub
    /// under `bench/`, no chat processing.
    ChatdRaw,
    /// A plain Mosquitto: no auth, no storage.
    Mosquitto,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chatd => "chatd",
            Kind::ChatdRaw => "chatd-raw",
            Kind::Mosquitto => "mosquitto",
        }
    }
}

pub struct Target {
    pub kind: Kind,
    child: Child,
    _dir: tempfile::TempDir,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub http_port: u16,
    /// HS256 secret the bench mints tokens with (chatd only).
    pub secret: String,
    /// How reports name this target: the kind, or e.g. `3 nodes`.
    pub label: String,
    /// The other nodes of a cluster (this one is node 1).
    peers: Vec<Target>,
    /// The NATS server of a cluster.
    nats: Option<Nats>,
    /// The CQL keyspace of a Scylla-store target (dropped by `stop`), the
    /// CQL node, and the pid of the local Cassandra when it can be found.
    keyspace: Option<(String, String)>,
    cql_pid: Option<u32>,
}

/// A `nats-server` with JetStream on a free loopback port, storing in a
/// temporary directory; killed on drop.
struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    async fn start() -> anyhow::Result<Nats> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("nats.log"))?;
        let binary = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("js"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting nats-server (Debian package `nats-server`)")?;
        let mut nats = Nats { child, port, dir };
        for _ in 0..200 {
            if let Some(status) = nats.child.try_wait()? {
                bail!("nats-server exited at start ({status}): {}", nats.log());
            }
            if listens_on(nats.child.id(), &[port]) {
                return Ok(nats);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not start: {}", nats.log())
    }

    fn log(&self) -> String {
        read_log(&self.dir.path().join("nats.log"))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of the Cassandra that `scripts/cassandra.sh` runs, when the CQL
/// node is that one (its pid file, and a live java process behind it).
fn local_cassandra_pid(cql_node: &str) -> Option<u32> {
    if !cql_node.starts_with("127.0.0.1:") && !cql_node.starts_with("localhost:") {
        return None;
    }
    let home = std::env::var_os("CASSANDRA_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/chat-cassandra"))
        })?;
    let pid: u32 = std::fs::read_to_string(home.join("cassandra.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("cassandra")
        .then_some(pid)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where `chatd` is by default: beside this binary (`cargo build --release
/// --workspace` puts both in `target/release`).
pub fn default_chatd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("chatd")))
        .unwrap_or_else(|| PathBuf::from("chatd"))
}

/// The MQTT ports of one node.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    pub tcp: u16,
    pub ws: u16,
}

/// What a client needs to reach a target; cheap to clone into tasks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// One entry per node (one for a single server).
    pub nodes: Vec<Ports>,
    pub secret: String,
}

impl Endpoint {
    /// The node a pair's client connects to: with N nodes the buyer of
    /// pair i is on node i mod N and its seller on node (i + 1) mod N, so
    /// every message of every pair crosses nodes.
    pub fn node_for(&self, pair: u32, buyer: bool) -> Ports {
        let n = self.nodes.len().max(1);
        let index = (pair as usize + usize::from(!buyer && n > 1)) % n;
        self.nodes[index]
    }
}

/// CPU and memory of every process of a target at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// chatd (or the plain broker), one per node.
    pub nodes: Vec<ProcStats>,
    pub nats: Option<ProcStats>,
    /// The local Cassandra behind a Scylla-store target, when found.
    pub cql: Option<ProcStats>,
}

impl Target {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            nodes: std::iter::once(self)
                .chain(&self.peers)
                .map(|t| Ports {
                    tcp: t.tcp_port,
                    ws: t.ws_port,
                })
                .collect(),
            secret: self.secret.clone(),
        }
    }

    /// chatd on the ScyllaDB store at `cql_node` (a fresh keyspace), as one
    /// node, or as `nodes` nodes with `cluster.backbone = "nats"` on a NATS
    /// server started here: the same secret and keyspace, own ports and
    /// data directories. `stop` drops the keyspace.
    pub async fn start_scylla_nodes(
        chatd: &Path,
        nodes: usize,
        cql_node: &str,
    ) -> anyhow::Result<Target> {
        anyhow::ensure!(nodes >= 1, "--nodes must be at least 1");
        let keyspace = format!(
            "chat_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let secret = format!("bench-{}", uuid::Uuid::new_v4());
        let nats = if nodes > 1 {
            Some(Nats::start().await?)
        } else {
            None
        };
        let mut started: Vec<Target> = Vec::with_capacity(nodes);
        // One at a time: the first creates the keyspace and migrates it.
        for i in 1..=nodes {
            let mut env: Vec<(String, String)> = [
                ("CHAT_STORE", "scylla".to_owned()),
                ("CHAT_SCYLLA__NODES", format!("[\"{cql_node}\"]")),
                ("CHAT_SCYLLA__KEYSPACE", keyspace.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            if let Some(nats) = &nats {
                env.extend(
                    [
                        ("CHAT_CLUSTER__BACKBONE", "nats".to_owned()),
                        ("CHAT_CLUSTER__NODE_ID", format!("node-{i}")),
                        ("CHAT_NATS__URL", format!("nats://127.0.0.1:{}", nats.port)),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
                );
            }
            let node = Target::start_in_with(
                Kind::Chatd,
                chatd,
                tempfile::tempdir()?,
                &env,
                Some(secret.clone()),
            )
            .await
            .with_context(|| format!("starting chatd node {i} of {nodes}"))?;
            started.push(node);
        }
        let mut first = started.remove(0);
        first.peers = started;
        first.nats = nats;
        first.label = if nodes == 1 {
            "1 node".into()
        } else {
            format!("{nodes} nodes")
        };
        first.keyspace = Some((keyspace, cql_node.to_owned()));
        first.cql_pid = local_cassandra_pid(cql_node);
        Ok(first)
    }

    /// Stops every process of the target, then drops the keyspace of a
    /// Scylla-store target (best effort: a failure is only reported).
    pub async fn stop(mut self) {
        let keyspace = self.keyspace.take();
        drop(self);
        if let Some((keyspace, node)) = keyspace
            && let Err(e) = drop_keyspace(&node, &keyspace).await
        {
            eprintln!("note: could not drop keyspace {keyspace}: {e:#}");
        }
    }

    pub async fn start(kind: Kind, chatd: &Path) -> anyhow::Result<Target> {
        Target::start_in(kind, chatd, tempfile::tempdir()?).await
    }

    /// A chatd whose store already holds one thread of `messages` messages,
    /// written with `chatd seed-history` before the server starts. Returns
    /// what the seeder printed (thread id, newest and middle message ids).
    pub async fn start_with_history(
        chatd: &Path,
        messages: u32,
    ) -> anyhow::Result<(Target, serde_json::Value)> {
        let dir = tempfile::tempdir()?;
        let out = Command::new(chatd)
            .args(["seed-history", "--messages", &messages.to_string()])
            .current_dir(dir.path())
            .env("CHAT_DATA_DIR", dir.path().join("data"))
            .output()
            .context("running chatd seed-history")?;
        anyhow::ensure!(
            out.status.success(),
            "seed-history failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seeded = serde_json::from_slice(&out.stdout).context("seed-history output")?;
        Ok((Target::start_in(Kind::Chatd, chatd, dir).await?, seeded))
    }

    /// chatd with extra `CHAT_*` settings.
    pub async fn start_chatd_with(
        chatd: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Target> {
        Target::start_in_with(Kind::Chatd, chatd, tempfile::tempdir()?, env, None).await
    }

    async fn start_in(kind: Kind, chatd: &Path, dir: tempfile::TempDir) -> anyhow::Result<Target> {
        Target::start_in_with(kind, chatd, dir, &[], None).await
    }

    async fn start_in_with(
        kind: Kind,
        chatd: &Path,
        mut dir: tempfile::TempDir,
        env: &[(String, String)],
        secret: Option<String>,
    ) -> anyhow::Result<Target> {
        let mut secret = secret.unwrap_or_else(|| format!("bench-{}", uuid::Uuid::new_v4()));
        // A port from `free_port` is free when it is chosen, not when the
        // server binds it: another process (a client's outgoing socket, a
        // server of a test running beside this one) can take it in
        // between. Such a start is retried on fresh ports.
        let mut attempt = 1;
        loop {
            let ports = (free_port()?, free_port()?, free_port()?);
            let child = spawn(kind, chatd, dir.path(), ports, &secret, env)?;
            let mut target = Target {
                kind,
                child,
                _dir: dir,
                tcp_port: ports.0,
                ws_port: ports.1,
                http_port: ports.2,
                secret,
                label: kind.name().to_owned(),
                peers: Vec::new(),
                nats: None,
                keyspace: None,
                cql_pid: None,
            };
            match target.wait_ready().await {
                Ok(()) => return Ok(target),
                Err(Start::Exited(why)) if attempt < 3 => {
                    eprintln!(
                        "note: {} exited at start (attempt {attempt}), retrying on other ports: {why}",
                        kind.name()
                    );
                    attempt += 1;
                    (dir, secret) = target.into_parts();
                }
                Err(Start::Exited(why) | Start::Failed(why)) => bail!(why),
            }
        }
    }

    /// Takes back the directory and secret of a server that did not start.
    fn into_parts(mut self) -> (tempfile::TempDir, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("a temporary directory");
        let dir = std::mem::replace(&mut self._dir, placeholder);
        (dir, std::mem::take(&mut self.secret))
    }

    /// Ready when the server itself listens on all its ports: a connect
    /// alone could reach another process that holds one of them.
    async fn wait_ready(&mut self) -> Result<(), Start> {
        let mut ports = vec![self.tcp_port, self.ws_port];
        if self.kind != Kind::Mosquitto {
            ports.push(self.http_port);
        }
        // Up to a minute: on the Scylla store the first node creates and
        // migrates the keyspace before it listens.
        for _ in 0..1200 {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(Start::Exited(format!(
                        "{} exited at start ({status}): {}",
                        self.kind.name(),
                        self.log()
                    )));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Start::Failed(format!(
                        "waiting for {}: {e}",
                        self.kind.name()
                    )));
                }
            }
            if listens_on(self.child.id(), &ports) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Start::Failed(format!(
            "{} did not start: {}",
            self.kind.name(),
            self.log()
        )))
    }

    pub fn log(&self) -> String {
        read_log(&self._dir.path().join("server.log"))
    }

    /// Fails with the server's log when it is no longer running: a run in
    /// which the server died must not report figures.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        for peer in &mut self.peers {
            peer.ensure_alive()?;
        }
        if let Some(nats) = &mut self.nats
            && let Some(status) = nats.child.try_wait()?
        {
            bail!("nats-server died during the run ({status}): {}", nats.log());
        }
        if let Some(status) = self.child.try_wait()? {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} died during the run ({status}):\n{}",
                self.kind.name(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process (node 1 of a cluster).
    pub fn stats(&self) -> ProcStats {
        ProcStats::read(self.pid())
    }

    /// Every process of the target: each node, NATS, the local Cassandra.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: std::iter::once(self)
                .chain(&self.peers)
                .map(Target::stats)
                .collect(),
            nats: self.nats.as_ref().map(|n| ProcStats::read(n.child.id())),
            cql: self.cql_pid.map(ProcStats::read),
        }
    }
}

async fn drop_keyspace(node: &str, keyspace: &str) -> anyhow::Result<()> {
    let config = chat_scylla::ScyllaConfig {
        nodes: vec![node.to_owned()],
        keyspace: keyspace.to_owned(),
        request_timeout_ms: 60_000,
        ..Default::default()
    };
    let session = chat_scylla::connect(&config).await?;
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await?;
    Ok(())
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a server did not start: it exited (perhaps on a port taken
/// meanwhile: worth another try), or something else.
enum Start {
    Exited(String),
    Failed(String),
}

/// Starts one server process on the given (tcp, ws, http) ports, its
/// output going to `server.log` in `dir`.
fn spawn(
    kind: Kind,
    chatd: &Path,
    dir: &Path,
    (tcp_port, ws_port, http_port): (u16, u16, u16),
    secret: &str,
    env: &[(String, String)],
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("server.log"))?;
    Ok(match kind {
        Kind::Chatd | Kind::ChatdRaw => Command::new(chatd)
            .arg("serve")
            .current_dir(dir)
            .env("CHAT_DATA_DIR", dir.join("data"))
            .env("CHAT_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("CHAT_MQTT__TCP_ADDR", format!("127.0.0.1:{tcp_port}"))
            .env("CHAT_MQTT__WS_ADDR", format!("127.0.0.1:{ws_port}"))
            .env("CHAT_AUTH__HS256_SECRET", secret)
            // chatd's default log filter: what an operator runs.
            .env(
                "CHAT_MQTT__ALLOW_LOADTEST",
                (kind == Kind::ChatdRaw).to_string(),
            )
            // The benchmark measures throughput: anti-spam limits out
            // of the way (moderation stays on).
            .env("CHAT_RATE_LIMITS__MESSAGES_PER_MINUTE", "100000000")
            .env("CHAT_RATE_LIMITS__MESSAGES_BURST", "10000000")
            .env(
                "CHAT_RATE_LIMITS__CONNECTION_MESSAGES_PER_MINUTE",
                "100000000",
            )
            .env("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "10000000")
            .env("CHAT_RATE_LIMITS__DUPLICATE_THREADS", "100000000")
            .env("CHAT_RATE_LIMITS__NEW_THREADS_PER_HOUR", "100000000")
            .env("CHAT_RATE_LIMITS__REST_PER_MINUTE", "100000000")
            .env("CHAT_RATE_LIMITS__REST_BURST", "10000000")
            // Thousands of clients connect from 127.0.0.1.
            .env("CHAT_RATE_LIMITS__CONNECTS_PER_MINUTE_PER_IP", "0")
            // The bench speaks v2 only.
            .env("CHAT_MQTT__PROTOCOL_V1", "false")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", chatd.display()))?,
        Kind::Mosquitto => {
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "per_listener_settings false\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n\
                     max_queued_messages 1000\nmax_inflight_messages 32\n\
                     listener {tcp_port} 127.0.0.1\n\
                     listener {ws_port} 127.0.0.1\nprotocol websockets\n"
                ),
            )?;
            Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .context("starting mosquitto (Debian package `mosquitto`)")?
        }
    })
}

/// A server's log for an error message; says so when it cannot be read
/// or is empty, rather than printing nothing.
fn read_log(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) if log.trim().is_empty() => format!("({} is empty)", path.display()),
        Ok(log) => log,
        Err(e) => format!("({} unreadable: {e})", path.display()),
    }
}

/// Whether process `pid` itself has a listening TCP socket on each of
/// `ports`: its socket inodes (`/proc/<pid>/fd`) matched against the
/// listening sockets of its network namespace (`/proc/<pid>/net/tcp*`).
fn listens_on(pid: u32, ports: &[u16]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut listening = std::collections::HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, inode is field 9.
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if inodes.contains(*inode)
                && let Some(port) = local
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                listening.insert(port);
            }
        }
    }
    ports.iter().all(|p| listening.contains(p))
}

fn mosquitto_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("mosquitto")
}

/// CPU time and memory of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> ProcStats {
        let mut stats = ProcStats::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the parenthesised command name; utime and stime
            // are the 12th and 13th of those, in clock ticks (100 Hz on Linux).
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|f| f.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                stats.cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let value = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmRSS:") {
                    stats.rss_kib = value();
                } else if line.starts_with("VmHWM:") {
                    stats.peak_rss_kib = value();
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::{Endpoint, Ports};

    fn endpoint(nodes: u16) -> Endpoint {
        Endpoint {
            nodes: (0..nodes)
                .map(|i| Ports {
                    tcp: 1000 + i,
                    ws: 2000 + i,
                })
                .collect(),
            secret: String::new(),
        }
    }

    #[test]
    fn with_three_nodes_every_pair_is_split_across_two_nodes() {
        let e = endpoint(3);
        for pair in 0..30 {
            let (buyer, seller) = (e.node_for(pair, true), e.node_for(pair, false));
            assert_eq!(buyer.tcp, 1000 + (pair % 3) as u16);
            assert_eq!(seller.tcp, 1000 + ((pair + 1) % 3) as u16);
            assert_ne!(buyer.tcp, seller.tcp);
        }
    }

    #[test]
    fn one_node_holds_both_sides() {
        let e = endpoint(1);
        assert_eq!(e.node_for(7, true).tcp, 1000);
        assert_eq!(e.node_for(7, false).ws, 2000);
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn a_listener_counts_only_for_the_process_that_holds_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        assert!(listens_on(me, &[port]));
        // A connected (not listening) socket is not a listener.
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        assert!(!listens_on(me, &[port, client_port]));
        // Another process does not hold this one's listener.
        let mut other = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(!listens_on(other.id(), &[port]));
        let _ = other.kill();
        let _ = other.wait();
        drop(listener);
        assert!(!listens_on(me, &[port]));
    }
}
