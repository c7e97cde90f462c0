//! Draining the MQTT side of a node (SIGTERM), in the order `chatd` calls
//! it:
//!
//! 1. [`BrokerHandle::stop_accepting`]: the listener task is aborted
//!    (rmqtt has no stop API; dropping the listeners closes the ports), and
//!    a CONNECT already past the accept is refused by `ClientAuthenticate`,
//!    its CONNACK rewritten by `ClientConnack` to `0x9C Use another server`
//!    (MQTT 5) / `0x03 Server unavailable` (3.1.1).
//! 2. [`BrokerHandle::wait_for_sends`]: client publishes being processed
//!    (stored, acked; counted around `MessagePublishCheckAcl`) finish.
//! 3. [`BrokerHandle::disconnect_all`]: every session is sent
//!    `DISCONNECT 0x9C` with the Server Reference, if any (MQTT 3.1.1
//!    clients are just closed). A session handles it after the publish it
//!    is processing, so a send is never cut half-way. Needs the vendored
//!    rmqtt patch (`vendor/rmqtt/PATCHED.md`) to reach the client.
//! 4. [`BrokerHandle::wait_disconnected`]: every connection is closed
//!    (the patched rmqtt writes the DISCONNECT before it counts the
//!    connection gone).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::Mutex;
use rmqtt::codec::v5::{Disconnect as DisconnectV5, DisconnectReasonCode};
use rmqtt::context::ServerContext;
use rmqtt::server::MqttServer;
use rmqtt::shared::Entry;
use rmqtt::types::{Disconnect, Message, Reason};
use tokio::time::Instant;

/// What the hooks and the handle share.
#[derive(Default)]
pub(crate) struct DrainState {
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

impl DrainState {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Counts a client publish as being processed until the guard drops.
    pub(crate) fn begin_send(self: &Arc<Self>) -> SendGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        chat_ops::metrics().sends_in_flight.inc();
        SendGuard(self.clone())
    }
}

pub(crate) struct SendGuard(Arc<DrainState>);

impl Drop for SendGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        chat_ops::metrics().sends_in_flight.dec();
    }
}

/// The running broker: readiness and drain controls. Clones share it.
#[derive(Clone)]
pub struct BrokerHandle {
    scx: ServerContext,
    state: Arc<DrainState>,
    listeners: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

const POLL: Duration = Duration::from_millis(10);

impl BrokerHandle {
    /// Serves `server`'s listeners on a task of their own, so that they can
    /// be stopped.
    pub(crate) fn serve(scx: ServerContext, state: Arc<DrainState>, server: MqttServer) -> Self {
        let task = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "mqtt listeners stopped");
            }
        });
        let connections = scx.clone();
        chat_ops::metrics().on_scrape(move || {
            chat_ops::metrics()
                .mqtt_connections
                .set(connections.connections.count() as i64);
        });
        BrokerHandle {
            scx,
            state,
            listeners: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Readiness: the listeners accept connections and the node is not
    /// draining.
    pub fn check_listening(&self) -> Result<(), String> {
        if self.state.is_draining() {
            return Err("draining".into());
        }
        match &*self.listeners.lock() {
            Some(task) if !task.is_finished() => Ok(()),
            _ => Err("mqtt listeners stopped".into()),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.state.is_draining()
    }

    /// Client publishes being processed now.
    pub fn sends_in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// MQTT connections open now.
    pub fn connections(&self) -> usize {
        self.scx.connections.count().max(0) as usize
    }

    /// Closes the listening sockets; CONNECTs still in their handshake are
    /// refused ("use another server").
    pub fn stop_accepting(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        if let Some(task) = self.listeners.lock().take() {
            task.abort();
        }
        tracing::info!(
            connections = self.connections(),
            "mqtt listeners closed; new connections refused"
        );
    }

    /// Waits until no client publish is being processed, or `until`.
    /// True when none is.
    pub async fn wait_for_sends(&self, until: Instant) -> bool {
        loop {
            if self.sends_in_flight() == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Tells every connected session to go: MQTT 5 clients get
    /// `DISCONNECT 0x9C Use another server` with `server_reference` when
    /// given, MQTT 3.1.1 clients are closed. Returns how many were told.
    pub async fn disconnect_all(&self, server_reference: Option<&str>) -> usize {
        let disconnect = DisconnectV5 {
            reason_code: DisconnectReasonCode::UseAnotherServer,
            session_expiry_interval_secs: None,
            server_reference: server_reference.map(ByteString::from),
            // Read by people in client logs: Vietnamese first.
            reason_string: Some(ByteString::from_static(
                "Máy chủ sắp dừng, hãy kết nối lại / server draining, please reconnect",
            )),
            user_properties: Default::default(),
        };
        // Collected first: no map lock is held across the awaits below.
        let entries: Vec<Box<dyn Entry>> = self.scx.extends.shared().await.iter().collect();
        let mut told = 0;
        for entry in entries {
            if !entry.is_connected().await {
                continue;
            }
            if let Some(tx) = entry.tx() {
                let reason = Reason::ConnectDisconnect(Some(Disconnect::V5(disconnect.clone())));
                if tx.unbounded_send(Message::Closed(reason)).is_ok() {
                    told += 1;
                }
            }
        }
        tracing::info!(
            told,
            server_reference,
            "mqtt sessions told to use another server"
        );
        told
    }

    /// Waits until every connection is closed and no publish is being
    /// processed, or `until`. True when so.
    pub async fn wait_disconnected(&self, until: Instant) -> bool {
        loop {
            if self.connections() == 0 && self.sends_in_flight() == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The reason that closes a session with `DISCONNECT <code>` (MQTT 5; an
/// MQTT 3.1.1 connection is just closed), through the vendored patch.
pub fn disconnect_reason(code: DisconnectReasonCode) -> Reason {
    let text = match code {
        DisconnectReasonCode::MessageRateTooHigh => {
            "Quá nhiều gói tin bị từ chối / too many refused packets"
        }
        DisconnectReasonCode::SessionTakenOver => {
            "Phiên đã được mở ở nơi khác / session taken over"
        }
        DisconnectReasonCode::NotAuthorized => "Phiên đăng nhập đã hết hạn / token expired",
        _ => "",
    };
    Reason::ConnectDisconnect(Some(Disconnect::V5(DisconnectV5 {
        reason_code: code,
        session_expiry_interval_secs: None,
        server_reference: None,
        reason_string: (!text.is_empty()).then(|| ByteString::from_static(text)),
        user_properties: Default::default(),
    })))
}
