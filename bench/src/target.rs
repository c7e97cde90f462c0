//! The servers under test, started by the bench on spare loopback ports:
//! our `chatd` (embedded defaults, fresh data directory) and a plain
//! Debian Mosquitto (no auth, no persistence). Also reads their CPU time and
//! memory from `/proc/<pid>`.

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

    /// Plain pub/sub on the thread topic, PUBACK as the ack.
    pub fn is_plain(self) -> bool {
        self != Kind::Chatd
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

/// What a client needs to reach a target; cheap to clone into tasks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub tcp_port: u16,
    pub ws_port: u16,
    pub secret: String,
}

impl Target {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            tcp_port: self.tcp_port,
            ws_port: self.ws_port,
            secret: self.secret.clone(),
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
        Target::start_in_with(Kind::Chatd, chatd, tempfile::tempdir()?, env).await
    }

    async fn start_in(kind: Kind, chatd: &Path, dir: tempfile::TempDir) -> anyhow::Result<Target> {
        Target::start_in_with(kind, chatd, dir, &[]).await
    }

    async fn start_in_with(
        kind: Kind,
        chatd: &Path,
        dir: tempfile::TempDir,
        env: &[(String, String)],
    ) -> anyhow::Result<Target> {
        let (tcp_port, ws_port, http_port) = (free_port()?, free_port()?, free_port()?);
        let secret = format!("bench-{}", uuid::Uuid::new_v4());
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = match kind {
            Kind::Chatd | Kind::ChatdRaw => Command::new(chatd)
                .arg("serve")
                .current_dir(dir.path())
                .env("CHAT_DATA_DIR", dir.path().join("data"))
                .env("CHAT_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
                .env("CHAT_MQTT__TCP_ADDR", format!("127.0.0.1:{tcp_port}"))
                .env("CHAT_MQTT__WS_ADDR", format!("127.0.0.1:{ws_port}"))
                .env("CHAT_AUTH__HS256_SECRET", &secret)
                .env("CHAT_LOG", "warn")
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
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("starting {}", chatd.display()))?,
            Kind::Mosquitto => {
                let conf = dir.path().join("mosquitto.conf");
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
        };
        let mut target = Target {
            kind,
            child,
            _dir: dir,
            tcp_port,
            ws_port,
            http_port,
            secret,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited at start ({status}): {}",
                    self.kind.name(),
                    self.log()
                );
            }
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.tcp_port))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.ws_port))
                    .await
                    .is_ok();
            let http = self.kind == Kind::Mosquitto
                || tokio::net::TcpStream::connect(("127.0.0.1", self.http_port))
                    .await
                    .is_ok();
            if tcp && http {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{} did not start: {}", self.kind.name(), self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// Fails with the server's log when it is no longer running: a run in
    /// which the server died must not report figures.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
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

    pub fn stats(&self) -> ProcStats {
        ProcStats::read(self.pid())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
