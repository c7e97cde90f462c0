//! The one typed configuration: defaults, then an optional TOML file, then
//! `CHAT_*` environment variables (`__` separates sections, e.g.
//! `CHAT_MQTT__TCP_ADDR=0.0.0.0:1883`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chat_attachments::service::AttachmentsConfig;
use chat_broker::BrokerConfig;
use chat_core::auth::AuthConfig;
use chat_core::moderation::ModerationConfig;
use chat_core::ratelimit::RateLimitConfig;
use chat_core::service::Limits;
use chat_nats::NatsConfig;
use chat_push::dispatch::PushConfig;
use chat_push::email::EmailConfig;
use chat_scylla::ScyllaConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the embedded store and the development secret live.
    pub data_dir: PathBuf,
    /// REST facade.
    pub http_addr: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics` of the workers (`chatd push`,
    /// `chatd persist`), which have no REST facade. `chatd serve` answers
    /// these on `http_addr`.
    pub worker_http_addr: SocketAddr,
    /// Lets a Prometheus on another machine read `/metrics` (sent as
    /// `Authorization: Bearer <token>`); unset: only this machine may.
    pub metrics_token: Option<String>,
    /// A client must send its request headers within this (slowloris).
    pub http_header_timeout_secs: u64,
    /// A request not answered within this gets 408.
    pub http_request_timeout_secs: u64,
    /// Origins whose pages may call the REST facade from a browser (CORS),
    /// e.g. `["https://shop.example.vn"]` for a chat widget embedded in the
    /// marketplace: each an exact `scheme://host[:port]`, no path. Empty
    /// (the default): no CORS headers, same-origin only. A single `"*"`
    /// allows any origin — for development only: requests carry bearer
    /// tokens, not cookies, so it leaks no credentials, but it lets any
    /// page script against the API with a token it holds.
    pub cors_allowed_origins: Vec<String>,
    /// `tracing` filter, e.g. `info` or `chatd=debug,rmqtt=warn`.
    pub log: String,
    /// Message store: `sqlite` (embedded, one machine; the default) or
    /// `scylla` (ScyllaDB or any CQL server, see `[scylla]`).
    pub store: StoreKind,
    pub scylla: ScyllaConfig,
    pub persist: PersistConfig,
    pub push: PushConfig,
    pub email: EmailConfig,
    pub nats: NatsConfig,
    /// N nodes: the cross-node backbone (`[cluster]`).
    pub cluster: chat_nats::cluster::ClusterConfig,
    pub moderation: ModerationConfig,
    pub rate_limits: RateLimitConfig,
    pub attachments: AttachmentsConfig,
    pub mqtt: BrokerConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub demo: DemoConfig,
    /// Graceful shutdown on SIGTERM (`[drain]`, `chatd/src/ops.rs`).
    pub drain: crate::ops::DrainConfig,
}

/// The demo storefront at `/demo/` (section `[demo]`, `chatd/src/demo.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DemoConfig {
    /// Serve the storefront, seed its users, products and orders, and hand
    /// out tokens for those users. Unset: on exactly when the development
    /// HS256 secret of the data directory is in use.
    pub enabled: Option<bool>,
    /// The MQTT-over-WebSocket URL the pages connect to. Unset: the host
    /// name the browser used for the page, the port of `mqtt.ws_addr` and
    /// path `/mqtt` (`ws://localhost:8083/mqtt`).
    pub mqtt_ws_url: Option<String>,
    /// Hand out demo tokens to browsers on other machines too. Off: only to
    /// this machine (loopback peers), so a server whose demo is on by
    /// default mints no tokens for the network it listens on.
    pub allow_remote_sessions: bool,
}

/// Where inbound chat messages are processed (section `[persist]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistConfig {
    /// `in_process` (default): the gateway stores each message itself.
    /// `workers`: the gateway hands messages to `chatd persist` workers.
    pub mode: PersistMode,
    /// For `chatd persist`: the MQTT address of a gateway.
    pub broker: String,
    /// For `chatd persist`: the worker's user id (its token's `sub`).
    pub user: String,
    /// For `chatd persist`: a `service` token; minted from the HS256
    /// secret when unset.
    pub token: Option<String>,
    /// For `chatd persist`: this worker's name (default: host and pid).
    pub worker: Option<String>,
    /// How long the broker keeps hand-overs for a disconnected worker.
    pub session_expiry_secs: u32,
    /// For `chatd persist`: a hand-over delivered more often than this
    /// (it crashed the worker each time) is set aside for the operator
    /// instead of processed again.
    pub max_deliveries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistMode {
    InProcess,
    Workers,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            mode: PersistMode::InProcess,
            broker: "127.0.0.1:1883".into(),
            user: "persist".into(),
            token: None,
            worker: None,
            session_expiry_secs: 600,
            max_deliveries: 3,
        }
    }
}

impl PersistConfig {
    /// A stable name: the persistent MQTT session is keyed by it, so a
    /// restarted worker gets back the hand-overs queued for it.
    pub fn worker_id(&self) -> String {
        self.worker.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty() && chat_protocol::topics::is_valid_id(h))
                .unwrap_or_else(|| "worker".into())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Scylla,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http_addr: "0.0.0.0:8080".parse().expect("literal address"),
            worker_http_addr: "0.0.0.0:9090".parse().expect("literal address"),
            metrics_token: None,
            http_header_timeout_secs: 10,
            http_request_timeout_secs: 60,
            cors_allowed_origins: Vec::new(),
            log: "info,rmqtt=warn,rmqtt_net=warn".into(),
            store: StoreKind::Sqlite,
            scylla: ScyllaConfig::default(),
            persist: PersistConfig::default(),
            push: PushConfig::default(),
            email: EmailConfig::default(),
            nats: NatsConfig::default(),
            cluster: chat_nats::cluster::ClusterConfig::default(),
            moderation: ModerationConfig::default(),
            rate_limits: RateLimitConfig::default(),
            attachments: AttachmentsConfig::default(),
            mqtt: BrokerConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            demo: DemoConfig::default(),
            drain: crate::ops::DrainConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration. A missing `file` is fine when it was not
    /// asked for explicitly.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("chatd.toml")),
        }
        figment
            .merge(Env::prefixed("CHAT_").split("__"))
            .extract()
            .map_err(Box::new)
    }

    /// The HS256 secret: configured, or the development secret kept in the
    /// data directory (created on first use).
    /// The key of the local attachment URLs' signatures: random, kept in
    /// the data directory (local files live on this one machine anyway).
    pub fn attachment_url_secret(&self) -> std::io::Result<String> {
        self.secret_file("attachments-url-secret")
    }

    /// A random secret kept (created on first use) in the data directory.
    fn secret_file(&self, name: &str) -> std::io::Result<String> {
        let path = self.data_dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(secret) if !secret.trim().is_empty() => Ok(secret.trim().to_owned()),
            _ => {
                std::fs::create_dir_all(&self.data_dir)?;
                let secret = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                write_private(&path, &secret)?;
                Ok(secret)
            }
        }
    }

    pub fn hs256_secret(&self) -> std::io::Result<Option<String>> {
        if let Some(secret) = &self.auth.hs256_secret {
            return Ok(Some(secret.clone()));
        }
        if !self.auth.algorithms.iter().any(|a| a == "HS256") {
            return Ok(None);
        }
        self.secret_file("dev-jwt-secret").map(Some)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "chat.toml",
                "http_addr = \"127.0.0.1:9000\"\n[mqtt]\ntcp_addr = \"127.0.0.1:1999\"\n",
            )?;
            jail.set_env("CHAT_MQTT__WS_ADDR", "127.0.0.1:1998");
            jail.set_env("CHAT_LIMITS__MAX_TEXT_CHARS", "10");
            let config = Config::load(Some(Path::new("chat.toml"))).expect("loads");
            assert_eq!(config.http_addr.port(), 9000);
            assert_eq!(config.mqtt.tcp_addr.port(), 1999);
            assert_eq!(config.mqtt.ws_addr.port(), 1998);
            assert_eq!(config.limits.max_text_chars, 10);
            assert_eq!(config.data_dir, PathBuf::from("./data"));
            assert_eq!(config.store, StoreKind::Sqlite);
            assert_eq!(config.demo, DemoConfig::default());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn demo_section_from_env() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHAT_DEMO__ENABLED", "false");
            jail.set_env("CHAT_DEMO__MQTT_WS_URL", "wss://chat.example.vn/mqtt");
            let config = Config::load(None).expect("loads");
            assert_eq!(config.demo.enabled, Some(false));
            assert_eq!(
                config.demo.mqtt_ws_url.as_deref(),
                Some("wss://chat.example.vn/mqtt")
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn cors_origins_from_file_and_env() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).expect("loads");
            assert!(config.cors_allowed_origins.is_empty());
            jail.create_file(
                "chat.toml",
                "cors_allowed_origins = [\"https://shop.example.vn\"]\n",
            )?;
            let config = Config::load(Some(Path::new("chat.toml"))).expect("loads");
            assert_eq!(config.cors_allowed_origins, ["https://shop.example.vn"]);
            jail.set_env(
                "CHAT_CORS_ALLOWED_ORIGINS",
                r#"["http://shop.test","http://localhost:5173"]"#,
            );
            let config = Config::load(Some(Path::new("chat.toml"))).expect("loads");
            assert_eq!(
                config.cors_allowed_origins,
                ["http://shop.test", "http://localhost:5173"]
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn connect_exemptions_from_env() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).expect("loads");
            assert!(
                config.rate_limits.connect_exempt_ips.is_empty(),
                "none by default"
            );
            jail.set_env(
                "CHAT_RATE_LIMITS__CONNECT_EXEMPT_IPS",
                r#"["127.0.0.1","::1"]"#,
            );
            jail.set_env("CHAT_MQTT__MAX_SESSION_EXPIRY_SECS", "3600");
            let config = Config::load(None).expect("loads");
            assert_eq!(
                config.rate_limits.connect_exempt_ips,
                [
                    "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                    "::1".parse().unwrap()
                ]
            );
            assert_eq!(config.mqtt.max_session_expiry_secs, 3600);
            Ok(())
        });
    }

    #[test]
    fn dev_secret_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let first = config.hs256_secret().unwrap().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(config.hs256_secret().unwrap().unwrap(), first);
    }

    /// docker-compose.yml cannot run here (no Docker engine); this keeps
    /// its settings real: every CHAT_* key names a field, and together they
    /// load as a Scylla configuration.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn compose_settings_are_real_config_keys() {
        let compose = include_str!("../../docker-compose.yml");
        let settings: Vec<(String, String)> = compose
            .lines()
            .filter_map(|line| {
                let (key, value) = line.trim().split_once(": ")?;
                let key = key.strip_prefix("CHAT_")?;
                let value = value.trim().trim_matches('\'').trim_matches('"');
                Some((key.to_owned(), value.to_owned()))
            })
            .collect();
        assert!(settings.len() >= 8, "found {settings:?}");
        let known = serde_json::to_value(Config::default()).unwrap();
        for (key, _) in &settings {
            let mut node = &known;
            for part in key.split("__") {
                node = node
                    .get(part.to_ascii_lowercase())
                    .unwrap_or_else(|| panic!("CHAT_{key} is not a configuration key"));
            }
        }
        figment::Jail::expect_with(|jail| {
            for (key, value) in &settings {
                jail.set_env(format!("CHAT_{key}"), value);
            }
            let config = Config::load(None).expect("compose settings load");
            assert_eq!(config.store, StoreKind::Scylla);
            assert_eq!(config.scylla.nodes.len(), 3);
            assert_eq!(
                config.scylla.replication.to_cql().unwrap(),
                "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
            );
            Ok(())
        });
    }
}
