//! Harness for end-to-end tests: starts the real `chatd` binary on free
//! loopback ports with its own data directory, and drives it with real
//! clients (rumqttc over TCP and WebSocket, reqwest, Debian's mosquitto
//! clients). The tests themselves live in `tests/e2e/`.
//!
//! The clients speak client protocol v2 (`docs/protocol.md`): one
//! subscription to `u/<me>`, commands published to `t/<thread>`.

pub mod fake_fcm;
pub mod nats;
pub mod smtp;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_protocol::MessageType;
use chat_protocol::v2;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const PLATFORM: &str = "platform-bot";

/// Polls `check` every 50 ms until it returns a value, for at most
/// `within`; panics naming `what` otherwise.
pub async fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a server accepts TCP connections on a loopback port.
pub(crate) async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start on port {port}");
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running `chatd` process. Killed on drop.
pub struct Server {
    binary: PathBuf,
    child: Option<Child>,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    pub http_port: u16,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub secret: String,
    http: reqwest::Client,
    extra_env: Vec<(String, String)>,
}

#[derive(Serialize)]
pub struct TestClaims {
    pub sub: String,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Server {
    /// Starts a server with a fresh data directory.
    pub async fn start(binary: &str) -> Server {
        Server::start_with(binary, &[]).await
    }

    /// Starts a server with extra `CHAT_*` settings.
    pub async fn start_with(binary: &str, env: &[(&str, &str)]) -> Server {
        let secret = format!("test-secret-{}", uuid::Uuid::new_v4());
        Server::start_with_secret(binary, &secret, env).await
    }

    /// Starts a server that signs and checks tokens with `secret`: nodes of
    /// one cluster share it.
    pub async fn start_with_secret(binary: &str, secret: &str, env: &[(&str, &str)]) -> Server {
        let tempdir = tempfile::tempdir().expect("temp dir");
        let dir = tempdir.path().to_owned();
        let mut server = Server {
            binary: PathBuf::from(binary),
            child: None,
            dir,
            _tempdir: Some(tempdir),
            http_port: free_port(),
            tcp_port: free_port(),
            ws_port: free_port(),
            secret: secret.to_owned(),
            http: reqwest::Client::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // Free ports are picked before chatd binds them: another process
        // can take one in between. Then new ports, and again.
        for attempt in 0.. {
            match server.try_spawn().await {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    server.http_port = free_port();
                    server.tcp_port = free_port();
                    server.ws_port = free_port();
                }
                Err(log) => panic!("chatd exited early:\n{log}"),
            }
        }
        server
    }

    /// Starts a server whose store is the real CQL server of the test run
    /// (Cassandra from `scripts/cassandra.sh`, or `CHAT_TEST_CQL_NODE`), in
    /// a keyspace of its own.
    pub async fn start_scylla(binary: &str) -> Server {
        Server::start_scylla_with(binary, &[]).await
    }

    /// [`Server::start_scylla`] with extra `CHAT_*` settings.
    pub async fn start_scylla_with(binary: &str, extra: &[(&str, &str)]) -> Server {
        let node = ensure_cql_server().await;
        let keyspace = format!(
            "chat_e2e_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let nodes = format!("[\"{node}\"]");
        let mut env = vec![
            ("CHAT_STORE", "scylla"),
            ("CHAT_SCYLLA__NODES", nodes.as_str()),
            ("CHAT_SCYLLA__KEYSPACE", keyspace.as_str()),
            ("CHAT_SCYLLA__REQUEST_TIMEOUT_MS", "3000"),
        ];
        env.extend_from_slice(extra);
        Server::start_with(binary, &env).await
    }

    /// Starts `chatd persist` against this server's broker and store (same
    /// secret, same keyspace). Killed when dropped.
    pub fn spawn_persist_worker(&self, name: &str) -> Worker {
        self.spawn_worker("persist", name, &[])
    }

    /// Starts `chatd <subcommand>` (`persist`, `push`) with this server's
    /// settings (secret, broker, store) plus `extra`. Killed when dropped.
    pub fn spawn_worker(&self, subcommand: &str, name: &str, extra: &[(&str, &str)]) -> Worker {
        let log_path = self.dir.join(format!("{subcommand}-{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("worker log");
        let child = Command::new(&self.binary)
            .arg(subcommand)
            .current_dir(&self.dir)
            .env("CHAT_DATA_DIR", self.dir.join(format!("data-{name}")))
            // A port picked by the worker itself (read back from its log):
            // one picked here could be taken by a client socket meanwhile.
            .env("CHAT_WORKER_HTTP_ADDR", "127.0.0.1:0")
            .env("CHAT_AUTH__HS256_SECRET", &self.secret)
            .env(
                "CHAT_PERSIST__BROKER",
                format!("127.0.0.1:{}", self.tcp_port),
            )
            .env("CHAT_PERSIST__WORKER", name)
            .env("CHAT_LOG", "info,chatd=debug,rmqtt=warn")
            .env("NO_COLOR", "1")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning chatd {subcommand}: {e}"));
        Worker {
            child: Some(child),
            log: log_path,
        }
    }

    /// The server's own data directory (`CHAT_DATA_DIR`).
    pub fn chat_data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("chatd exited early:\n{log}");
        }
    }

    /// Starts chatd and waits until it is ready; its log if it exits first.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("chatd.log"))
            .expect("log file");
        let child = Command::new(&self.binary)
            .arg("serve")
            .current_dir(&self.dir)
            .env("CHAT_DATA_DIR", self.dir.join("data"))
            .env("CHAT_HTTP_ADDR", format!("127.0.0.1:{}", self.http_port))
            .env(
                "CHAT_MQTT__TCP_ADDR",
                format!("127.0.0.1:{}", self.tcp_port),
            )
            .env("CHAT_MQTT__WS_ADDR", format!("127.0.0.1:{}", self.ws_port))
            .env(
                "CHAT_ATTACHMENTS__PUBLIC_BASE_URL",
                format!("http://127.0.0.1:{}", self.http_port),
            )
            .env("CHAT_AUTH__HS256_SECRET", &self.secret)
            .env("CHAT_LOG", "info,rmqtt=warn,rmqtt_net=warn")
            .env("NO_COLOR", "1")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning chatd");
        self.child = Some(child);
        // Long enough for a first start on Cassandra (keyspace migration).
        for _ in 0..1200 {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("({status}) {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chatd did not become ready:\n{}", self.log());
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
    }

    /// SIGTERM (chatd drains), then waits up to `within` for the process
    /// to exit: its exit status, or `None` when it was still running then
    /// (it is killed when the `Server` drops).
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.send_sigterm();
        self.wait_exit(within).await
    }

    /// Sends SIGTERM and returns at once.
    pub fn send_sigterm(&self) {
        sigterm(self.child.as_ref().expect("chatd is running"));
    }

    /// Waits up to `within` for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, within).await
    }

    /// Starts the server again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chatd.log")).unwrap_or_default()
    }

    /// Bytes of log written so far.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.join("chatd.log")).map_or(0, |m| m.len())
    }

    /// Resident memory of the chatd process, in KiB (`VmRSS`).
    pub fn rss_kb(&self) -> u64 {
        let pid = self.child.as_ref().expect("chatd is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn token_with(&self, claims: &TestClaims) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .unwrap()
    }

    pub fn claims(user: &str, role: &str) -> TestClaims {
        TestClaims {
            sub: user.into(),
            role: role.into(),
            iss: "chatd-dev".into(),
            aud: "chat".into(),
            exp: now_secs() + 3600,
        }
    }

    pub fn token(&self, user: &str, role: &str) -> String {
        self.token_with(&Self::claims(user, role))
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request with a raw body, for malformed-input tests.
    /// A GET, answered with its status and headers.
    pub async fn get_with_headers(
        &self,
        path: &str,
        token: &str,
    ) -> (u16, reqwest::header::HeaderMap) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("HTTP request");
        (response.status().as_u16(), response.headers().clone())
    }

    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Registers users, as the platform does.
    /// Ids of a thread's text messages, oldest first, as `user` sees them
    /// over REST (up to 100).
    pub async fn text_message_ids(&self, user: &str, role: &str, thread: &str) -> Vec<String> {
        let (status, page) = self
            .request(
                "GET",
                &format!("/chat/threads/{thread}/messages?limit=100"),
                &self.token(user, role),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["type"] == "text")
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// Registers `device_token` as `buyer`'s FCM phone.
    pub async fn put_fcm_device(&self, buyer: &str, device_token: &str) {
        let (status, body) = self
            .request(
                "PUT",
                "/chat/devices",
                &self.token(buyer, "buyer"),
                Some(serde_json::json!({"platform": "fcm", "token": device_token, "appId": "vn.example.shop"})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }

    /// Registers accounts that buy (nobody can open a chat with them).
    pub async fn put_users(&self, users: &[&str]) {
        self.register(users, false).await;
    }

    /// Registers shops: buyers may open a chat with them.
    pub async fn put_sellers(&self, sellers: &[&str]) {
        self.register(sellers, true).await;
    }

    async fn register(&self, users: &[&str], seller: bool) {
        let token = self.token(PLATFORM, "platform");
        for user in users {
            let (status, body) = self
                .request(
                    "PUT",
                    &format!("/internal/users/{user}"),
                    &token,
                    Some(json!({"displayName": format!("Tên {user}"), "seller": seller})),
                )
                .await;
            assert_eq!(status, 204, "{body}");
        }
    }

    /// Registers a user with an e-mail address and a locale.
    pub async fn put_user_with_email(&self, user: &str, email: &str, locale: &str) {
        let token = self.token(PLATFORM, "platform");
        let (status, body) = self
            .request(
                "PUT",
                &format!("/internal/users/{user}"),
                &token,
                Some(
                    json!({"displayName": format!("Tên {user}"), "email": email, "locale": locale}),
                ),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }

    /// Registers buyer and seller and opens their general thread.
    pub async fn thread_between(&self, buyer: &str, seller: &str) -> String {
        self.put_users(&[buyer]).await;
        self.put_sellers(&[seller]).await;
        let (status, body) = self
            .request(
                "POST",
                "/chat/threads",
                &self.token(buyer, "buyer"),
                Some(json!({"sellerId": seller})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- chatd log ----\n{}", self.log());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tcp,
    WebSocket,
}

/// What the client's event loop saw.
#[derive(Debug)]
pub enum Seen {
    Publish(String, Vec<u8>),
    SubAck(Vec<bool>),
    PubAck,
    Closed(String),
}

/// A real MQTT 3.1.1 client (rumqttc) with its event loop on a task,
/// speaking protocol v2 (its own copy or an `ack` answers its sends).
pub struct Client {
    task: tokio::task::JoinHandle<()>,
    pub mqtt: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Publishes that arrived while waiting for a PUBACK or SUBACK, kept
    /// for the next reader (an ack may overtake the PUBACK of the publish
    /// after it).
    stash: std::collections::VecDeque<Seen>,
    pub user: String,
}

/// Outcome of a connection attempt.
pub enum Connect {
    Accepted(Client),
    Refused(String),
}

pub fn options(server: &Server, client_id: &str, user: &str, token: &str, via: Via) -> MqttOptions {
    let mut opts = match via {
        Via::Tcp => MqttOptions::new(client_id, "127.0.0.1", server.tcp_port),
        Via::WebSocket => {
            let mut o = MqttOptions::new(
                client_id,
                format!("ws://127.0.0.1:{}/mqtt", server.ws_port),
                server.ws_port,
            );
            o.set_transport(Transport::Ws);
            o
        }
    };
    opts.set_credentials(user, token);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    opts
}

impl Client {
    pub async fn connect(server: &Server, user: &str, role: &str, via: Via) -> Client {
        let token = server.token(user, role);
        match Client::try_connect(options(server, user, user, &token, via), user).await {
            Connect::Accepted(c) => c,
            Connect::Refused(why) => panic!("{user} refused: {why}"),
        }
    }

    pub async fn try_connect(opts: MqttOptions, user: &str) -> Connect {
        let (mqtt, mut eventloop) = AsyncClient::new(opts, 64);
        let first = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await;
        match first {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == rumqttc::ConnectReturnCode::Success => {}
            Ok(Ok(other)) => return Connect::Refused(format!("{other:?}")),
            Ok(Err(e)) => return Connect::Refused(format!("{e:?}")),
            Err(_) => return Connect::Refused("timeout".into()),
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Seen::Publish(p.topic.clone(), p.payload.to_vec())
                    }
                    Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(
                        s.return_codes
                            .iter()
                            .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                            .collect(),
                    ),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Seen::PubAck,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Seen::Closed(format!("{e:?}")));
                        return;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        Connect::Accepted(Client {
            mqtt,
            task,
            rx,
            stash: Default::default(),
            user: user.to_owned(),
        })
    }

    /// Sends DISCONNECT and closes the connection (the event loop ends
    /// when its client is dropped).
    pub async fn disconnect(self) {
        let _ = self.mqtt.disconnect().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // rumqttc's event loop holds its own request sender: it ends only
        // when aborted, and its socket with it.
        self.task.abort();
    }

    async fn next(&mut self, within: Duration) -> Option<Seen> {
        if let Some(seen) = self.stash.pop_front() {
            return Some(seen);
        }
        self.receive(within).await
    }

    async fn receive(&mut self, within: Duration) -> Option<Seen> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Subscribes and returns whether each filter was granted.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        self.mqtt.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            match self.receive(Duration::from_secs(5)).await {
                Some(Seen::SubAck(codes)) => return codes[0],
                Some(Seen::Closed(why)) => panic!("closed while subscribing: {why}"),
                Some(publish @ Seen::Publish(..)) => self.stash.push_back(publish),
                Some(_) => continue,
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }

    /// Subscribes to the user's own topic, `u/<me>`: the one subscription
    /// a v2 client makes, for every event of every thread.
    pub async fn subscribe_inbox(&mut self) {
        let inbox = v2::user(&self.user);
        assert!(self.subscribe(&inbox).await, "{inbox} refused");
    }

    /// Publishes QoS 1 and waits for the PUBACK (the server has handled it).
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.mqtt
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.wait_seen(|s| matches!(s, Seen::PubAck)).await;
    }

    /// Publishes a v2 command to `t/<thread>` and waits for its PUBACK.
    pub async fn command(&mut self, thread: &str, command: &v2::Command) {
        self.publish(&v2::thread(thread), v2::encode(command)).await;
    }

    /// Moves the read marker in `thread` to `up_to` (v2 `read`).
    pub async fn read(&mut self, thread: &str, up_to: &str) {
        self.command(
            thread,
            &v2::Command::Read {
                up_to: up_to.to_owned(),
            },
        )
        .await;
    }

    /// Starts (`true`) or stops typing in `thread` (v2 `typing`).
    pub async fn typing(&mut self, thread: &str, on: bool) {
        self.command(thread, &v2::Command::Typing { active: on })
            .await;
    }

    async fn wait_seen(&mut self, pred: impl Fn(&Seen) -> bool) {
        loop {
            match self.receive(Duration::from_secs(5)).await {
                Some(s) if pred(&s) => return,
                Some(Seen::Closed(why)) => panic!("connection closed: {why}"),
                Some(publish @ Seen::Publish(..)) => self.stash.push_back(publish),
                Some(_) => continue,
                None => panic!("timed out"),
            }
        }
    }

    /// Next raw publish (topic, payload), for non-protocol traffic.
    pub async fn raw(&mut self, within: Duration) -> Option<(String, Vec<u8>)> {
        loop {
            match self.next(within).await? {
                Seen::Publish(topic, payload) => return Some((topic, payload)),
                Seen::Closed(why) => panic!("{}: connection closed: {why}", self.user),
                _ => continue,
            }
        }
    }

    /// Next v2 server event on any topic within `within`.
    pub async fn event(&mut self, within: Duration) -> Option<(String, v2::Event)> {
        loop {
            match self.next(within).await? {
                Seen::Publish(topic, payload) => {
                    let event = v2::decode_event(&payload)
                        .unwrap_or_else(|e| panic!("undecodable server event on {topic}: {e}"));
                    return Some((topic, event));
                }
                Seen::Closed(why) => panic!("{}: connection closed: {why}", self.user),
                _ => continue,
            }
        }
    }

    /// Waits for the first event matching `pred`, skipping others.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        pred: impl Fn(&str, &v2::Event) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.event(left).await {
                Some((topic, event)) => {
                    if let Some(t) = pred(&topic, &event) {
                        return t;
                    }
                }
                None => panic!("{}: no {what} within 10 s", self.user),
            }
        }
    }

    /// Sends a text into `thread` and waits for its answer: the stored
    /// message id (from the sender's own copy, or the `ack` of a retry),
    /// or the error the server answered with. Events that arrive before
    /// the answer stay for the next reader.
    pub async fn send_text(
        &mut self,
        thread: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<String, v2::Err> {
        let payload = send_message(client_msg_id, text);
        self.send_and_wait(thread, client_msg_id, payload).await
    }

    /// Sends a text and waits up to `within` for its answer, like a mobile
    /// client that may lose its server: `None` when none came (timeout
    /// or connection closed), never a panic.
    pub async fn try_send_text(
        &mut self,
        thread: &str,
        client_msg_id: &str,
        text: &str,
        within: Duration,
    ) -> Option<Result<String, v2::Err>> {
        self.mqtt
            .publish(
                v2::thread(thread),
                QoS::AtLeastOnce,
                false,
                send_message(client_msg_id, text),
            )
            .await
            .ok()?;
        match self.answer(thread, client_msg_id, within).await {
            Answer::Got(answer) => Some(answer),
            Answer::Timeout | Answer::Closed(_) => None,
        }
    }

    /// Sends an image message (the id of a filled upload slot).
    pub async fn send_image(
        &mut self,
        thread: &str,
        client_msg_id: &str,
        upload_id: &str,
    ) -> Result<String, v2::Err> {
        let payload = v2::encode(&v2::Command::Msg {
            client_msg_id: client_msg_id.to_owned(),
            content: upload_id.to_owned(),
            kind: MessageType::Image,
        });
        self.send_and_wait(thread, client_msg_id, payload).await
    }

    async fn send_and_wait(
        &mut self,
        thread: &str,
        client_msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<String, v2::Err> {
        self.publish(&v2::thread(thread), payload).await;
        match self
            .answer(thread, client_msg_id, Duration::from_secs(10))
            .await
        {
            Answer::Got(answer) => answer,
            Answer::Timeout => panic!(
                "{}: no answer to {client_msg_id} in {thread} within 10 s",
                self.user
            ),
            Answer::Closed(why) => panic!("{}: connection closed: {why}", self.user),
        }
    }

    /// Waits for the answer to the send `client_msg_id` into `thread`.
    /// Publishes before it are put back, in order, for the next reader.
    async fn answer(&mut self, thread: &str, client_msg_id: &str, within: Duration) -> Answer {
        let deadline = tokio::time::Instant::now() + within;
        let mut before = std::collections::VecDeque::new();
        let answer = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                None => break Answer::Timeout,
                Some(Seen::Closed(why)) => break Answer::Closed(why),
                Some(Seen::Publish(topic, payload)) => {
                    let event = v2::decode_event(&payload)
                        .unwrap_or_else(|e| panic!("undecodable server event on {topic}: {e}"));
                    if let Some(answer) = answer_to(&event, thread, client_msg_id) {
                        break Answer::Got(answer);
                    }
                    before.push_back(Seen::Publish(topic, payload));
                }
                Some(_) => continue,
            }
        };
        before.extend(self.stash.drain(..));
        self.stash = before;
        answer
    }

    /// Collects every event arriving within `within`.
    pub async fn drain(&mut self, within: Duration) -> Vec<(String, v2::Event)> {
        let mut all = vec![];
        while let Some(e) = self.event(within).await {
            all.push(e);
        }
        all
    }

    /// Waits until the server closes the connection.
    pub async fn closed(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Seen::Closed(why))) => return Some(why),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// How waiting for a send's answer ended.
enum Answer {
    Got(Result<String, v2::Err>),
    Timeout,
    Closed(String),
}

/// Whether `event` answers the send `client_msg_id` into `thread`: the
/// sender's own copy (it carries the key: stored), or an `ack` (a retry
/// of a stored message, or a refusal).
pub fn answer_to(
    event: &v2::Event,
    thread: &str,
    client_msg_id: &str,
) -> Option<Result<String, v2::Err>> {
    match event {
        v2::Event::Msg(m)
            if m.thread_id == thread && m.client_msg_id.as_deref() == Some(client_msg_id) =>
        {
            Some(Ok(m.id.clone()))
        }
        v2::Event::Ack {
            thread_id,
            client_msg_id: acked,
            id,
            err,
            ..
        } if thread_id == thread && acked == client_msg_id => Some(match (id, err) {
            (_, Some(err)) => Err(err.clone()),
            (Some(id), None) => Ok(id.clone()),
            (None, None) => panic!("an ack with neither an id nor an error: {event:?}"),
        }),
        _ => None,
    }
}

/// MessagePack for a v2 `msg` command (a text), published to `t/<thread>`.
pub fn send_message(client_msg_id: &str, text: &str) -> Vec<u8> {
    v2::encode(&v2::Command::Msg {
        client_msg_id: client_msg_id.into(),
        content: text.into(),
        kind: MessageType::Text,
    })
}

/// MessagePack for a protocol v1 `send_message` (to `thread/<id>/in`):
/// only for checking what a v1 client is told by a v2-only server.
pub fn v1_send_message(client_msg_id: &str, text: &str) -> Vec<u8> {
    chat_protocol::encode(&chat_protocol::ClientEvent::SendMessage {
        client_msg_id: client_msg_id.into(),
        kind: MessageType::Text,
        content: text.into(),
    })
}

/// The repository's root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `host:port` of a CQL server that answers: `CHAT_TEST_CQL_NODE`, or the
/// Cassandra that `scripts/cassandra.sh start` runs (started if needed;
/// the script is idempotent and serialises concurrent callers).
pub async fn ensure_cql_server() -> String {
    if let Ok(node) = std::env::var("CHAT_TEST_CQL_NODE") {
        return node;
    }
    cassandra("start").await;
    "127.0.0.1:9042".into()
}

/// The S3-compatible server of the test run (S3Proxy from
/// `scripts/s3.sh`, or `CHAT_TEST_S3_ENDPOINT`), with bucket `chat-test`
/// and the test credentials: `(endpoint, access key, secret key)`.
pub async fn ensure_s3() -> (String, String, String) {
    let endpoint = match std::env::var("CHAT_TEST_S3_ENDPOINT") {
        Ok(endpoint) => endpoint,
        Err(_) => {
            let status = tokio::process::Command::new(repo_root().join("scripts/s3.sh"))
                .arg("start")
                .env("S3_BUCKETS", "chat-test")
                .status()
                .await
                .expect("running scripts/s3.sh");
            assert!(status.success(), "scripts/s3.sh start failed");
            "http://127.0.0.1:9400".into()
        }
    };
    (endpoint, "chat-test".into(), "chat-test-secret".into())
}

/// Runs `scripts/cassandra.sh <action>` and insists that it succeeds.
pub async fn cassandra(action: &str) {
    let status = tokio::process::Command::new(repo_root().join("scripts/cassandra.sh"))
        .arg(action)
        .status()
        .await
        .expect("running scripts/cassandra.sh");
    assert!(status.success(), "scripts/cassandra.sh {action} failed");
}

fn sigterm(child: &Child) {
    let pid = child.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Waits up to `within` for `child` to exit on its own: its status (and
/// `child` becomes `None`), or `None` if still running then.
async fn wait_exit(
    child: &mut Option<Child>,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let running = child.as_mut()?;
        if let Some(status) = running.try_wait().expect("try_wait") {
            *child = None;
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker process: `chatd persist` or `chatd push`.
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A URL of the worker's operations endpoint (`/readyz`, `/metrics`),
    /// at the address its log announced (the latest, after a restart).
    pub fn url(&self, path: &str) -> String {
        let log = self.log();
        let addr = log
            .lines()
            .rev()
            .filter(|line| line.contains("operations endpoint"))
            .find_map(|line| line.split_once("http=")?.1.split_whitespace().next())
            .unwrap_or_else(|| panic!("no operations endpoint in the worker log:\n{log}"));
        format!("http://{addr}{path}")
    }

    /// SIGTERM, then up to `within` for the worker to exit: its status, or
    /// `None` if it was still running (it is killed when dropped).
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        sigterm(self.child.as_ref().expect("the worker is running"));
        wait_exit(&mut self.child, within).await
    }

    /// Waits until the log contains `needle` (bounded).
    pub async fn wait_for_log(&mut self, needle: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            let child = self.child.as_mut().expect("the worker is running");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the worker exited ({status}):\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{needle:?} not in the worker log:\n{}", self.log());
    }

    /// Whether the process has exited (then it counts as gone).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}
