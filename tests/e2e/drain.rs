//! SIGTERM drain on a real chatd: while an MQTT 5 client keeps sending and
//! an MQTT 3.1.1 client listens, chatd gets SIGTERM. `/readyz` turns 503,
//! new CONNECTs are refused (the port closes; a CONNECT already accepted
//! gets CONNACK 0x9C / 0x03), the MQTT 5 client gets `DISCONNECT 0x9C Use
//! another server` with the configured Server Reference, the 3.1.1 client
//! is closed, chatd exits 0 within its timeout, and every message that was
//! acked is in the history after a restart on the same data directory.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_e2e::{Client, Connect, Server, Via, options, send_message};
use chat_protocol::v2;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode, Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use crate::CHATD;

const SERVER_REFERENCE: &str = "chat2.example.vn:1883";
/// Most messages the sender sends (the history check reads one page).
const CAP: usize = 95;
/// Publishes the sender keeps unacknowledged at once.
const WINDOW: usize = 8;

/// What the MQTT 5 sender saw before its connection ended.
struct Sent {
    /// Message ids of the sends acked: the PUBACK's `id` property.
    acked: Vec<String>,
    published: usize,
    /// The server's DISCONNECT: reason code and Server Reference.
    disconnect: Option<(DisconnectReasonCode, Option<String>)>,
    ended: String,
}

/// What the event-loop task hands the sender.
enum Seen {
    Event(Box<Event>),
    Ended(String),
}

/// An MQTT 5 client that sends text messages into `thread`, up to `WINDOW`
/// at a time, one every 3 ms at most, until the server disconnects it.
async fn send_until_disconnected(
    server: &Server,
    user: &str,
    thread: &str,
    acked_so_far: Arc<AtomicUsize>,
) -> Sent {
    let mut opts = MqttOptions::new(user, "127.0.0.1", server.tcp_port);
    opts.set_credentials(user, server.token(user, "buyer"));
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    match eventloop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {}
        other => panic!("MQTT 5 connect: {other:?}"),
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    if tx.send(Seen::Event(Box::new(event))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // rumqttc queues what it read (the DISCONNECT among
                    // it) before it returns the error: hand it all over.
                    for event in eventloop.state.events.drain(..) {
                        let _ = tx.send(Seen::Event(Box::new(event)));
                    }
                    let _ = tx.send(Seen::Ended(format!("{e:?}")));
                    return;
                }
            }
        }
    });
    // As an MQTT 5 app does: No Local, so its own copies go to its other
    // devices only; the PUBACK answers each send.
    client
        .subscribe_many([Filter {
            nolocal: true,
            ..Filter::new(v2::user(user), QoS::AtLeastOnce)
        }])
        .await
        .unwrap();
    let inbound = v2::thread(thread);
    let mut sent = Sent {
        acked: Vec::new(),
        published: 0,
        disconnect: None,
        ended: String::new(),
    };
    let mut in_flight = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(3));
    loop {
        tokio::select! {
            biased;
            seen = rx.recv() => match seen.map(|seen| match seen {
                Seen::Event(event) => Ok(*event),
                Seen::Ended(why) => Err(why),
            }) {
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    in_flight -= 1;
                    let stored = ack
                        .properties
                        .into_iter()
                        .flat_map(|p| p.user_properties)
                        .find(|(name, _)| name == v2::puback::ID);
                    if let Some((_, id)) = stored {
                        sent.acked.push(id);
                        acked_so_far.store(sent.acked.len(), Ordering::SeqCst);
                    }
                }
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    // An `ack` with an id (a retry of a stored message)
                    // would answer too; none is expected here.
                    if let Ok(v2::Event::Ack { id: Some(id), .. }) = v2::decode_event(&p.payload) {
                        sent.acked.push(id);
                        acked_so_far.store(sent.acked.len(), Ordering::SeqCst);
                    }
                }
                Some(Ok(Event::Incoming(Packet::Disconnect(d)))) => {
                    sent.disconnect = Some((
                        d.reason_code,
                        d.properties.and_then(|p| p.server_reference),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(why)) => {
                    sent.ended = why;
                    return sent;
                }
                None => {
                    sent.ended = "event loop gone".into();
                    return sent;
                }
            },
            _ = pace.tick(), if in_flight < WINDOW && sent.published < CAP => {
                let n = sent.published;
                let payload = send_message(&format!("drain-{n}"), &format!("tin nhắn số {n}"));
                client
                    .publish(inbound.clone(), QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
                sent.published += 1;
                in_flight += 1;
            }
        }
    }
}

/// MQTT's variable-length integer.
fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn mqtt_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A CONNECT (clean start, user name and password) of protocol level 4
/// (3.1.1) or 5.
pub(crate) fn connect_packet(level: u8, client_id: &str, token: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string("MQTT", &mut body);
    body.push(level);
    body.push(0b1100_0010);
    body.extend_from_slice(&30u16.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    mqtt_string(client_id, &mut body);
    mqtt_string(client_id, &mut body);
    mqtt_string(token, &mut body);
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// Sends the CONNECT on an already open connection and returns the
/// CONNACK's return (3.1.1) or reason (5) code.
pub(crate) async fn connack_code(stream: &mut tokio::net::TcpStream, connect: &[u8]) -> u8 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(connect).await.expect("CONNECT written");
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("a CONNACK in time")
        .expect("a CONNACK");
    assert_eq!(head[0], 0x20, "not a CONNACK: {head:?}");
    head[3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_keeps_acked_messages_and_redirects_clients() {
    let mut server = Server::start_with(
        CHATD,
        &[
            ("CHAT_DRAIN__SERVER_REFERENCE", SERVER_REFERENCE),
            ("CHAT_DRAIN__TIMEOUT_SECS", "10"),
            // The sender goes faster than a person may.
            ("CHAT_RATE_LIMITS__MESSAGES_PER_MINUTE", "60000"),
            ("CHAT_RATE_LIMITS__MESSAGES_BURST", "1000"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_PER_MINUTE", "60000"),
            ("CHAT_RATE_LIMITS__CONNECTION_MESSAGES_BURST", "1000"),
        ],
    )
    .await;
    let thread = server.thread_between("drain-buyer", "drain-seller").await;
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // The MQTT 3.1.1 client listens on its own topic.
    let mut seller = Client::connect(&server, "drain-seller", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    // Two connections accepted before the drain whose CONNECT comes only
    // during it: refused with "use another server" / "server unavailable".
    let mut late_v5 = tokio::net::TcpStream::connect(("127.0.0.1", server.tcp_port))
        .await
        .unwrap();
    let mut late_v3 = tokio::net::TcpStream::connect(("127.0.0.1", server.tcp_port))
        .await
        .unwrap();

    // The MQTT 5 client keeps sending.
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let sender = {
        let acked_so_far = acked_so_far.clone();
        let server = &server;
        let thread = thread.clone();
        async move { send_until_disconnected(server, "drain-buyer", &thread, acked_so_far).await }
    };
    let signal_and_watch = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked_so_far.load(Ordering::SeqCst) < 15 {
            assert!(Instant::now() < deadline, "the sender got no acks");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let connect_v5 = connect_packet(5, "drain-v5", &server.token("drain-v5", "buyer"));
        let connect_v3 = connect_packet(4, "drain-v3", &server.token("drain-v3", "buyer"));
        let acked_at_signal = acked_so_far.load(Ordering::SeqCst);
        server.send_sigterm();
        let signalled = Instant::now();

        // /readyz turns 503 while HTTP still answers.
        let http = reqwest::Client::new();
        let mut not_ready = None;
        while signalled.elapsed() < Duration::from_secs(10) {
            match http.get(server.url("/readyz")).send().await {
                Ok(r) if r.status() == 503 => {
                    not_ready = Some(r.json::<serde_json::Value>().await.unwrap());
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("HTTP stopped before /readyz said 503: {e}"),
            }
        }
        let not_ready = not_ready.expect("/readyz never answered 503");
        assert_eq!(
            not_ready,
            serde_json::json!({"ready": false, "checks": {"drain": "draining"}})
        );
        // Right away, while the node surely still runs: the CONNECTs of the
        // two connections accepted before the drain.
        let (v5, v3) = tokio::join!(
            connack_code(&mut late_v5, &connect_v5),
            connack_code(&mut late_v3, &connect_v3),
        );
        assert_eq!(v5, 0x9C, "MQTT 5 CONNACK: Use another server");
        assert_eq!(v3, 0x03, "MQTT 3.1.1 CONNACK: Server unavailable");
        // /healthz: still alive.
        if let Ok(health) = http.get(server.url("/healthz")).send().await {
            assert_eq!(health.status(), 200);
        }

        // A new client is turned away (port closed, or CONNACK 0x9C/0x03).
        let token = server.token("drain-late", "buyer");
        match Client::try_connect(
            options(&server, "drain-late", "drain-late", &token, Via::Tcp),
            "drain-late",
        )
        .await
        {
            Connect::Refused(_) => {}
            Connect::Accepted(_) => panic!("a CONNECT was accepted while draining"),
        }
        acked_at_signal
    };
    let (sent, acked_at_signal) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(sender, signal_and_watch)
    })
    .await
    .expect("sender and watcher finish");

    // The MQTT 5 client was told where to go.
    assert_eq!(
        sent.disconnect,
        Some((
            DisconnectReasonCode::UseAnotherServer,
            Some(SERVER_REFERENCE.to_owned())
        )),
        "the MQTT 5 connection ended with {}",
        sent.ended
    );
    // The MQTT 3.1.1 client was closed.
    assert!(
        seller.closed(Duration::from_secs(10)).await.is_some(),
        "the 3.1.1 client is still connected"
    );

    // chatd exits 0 within its drain timeout.
    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("chatd exited after SIGTERM");
    assert!(status.success(), "chatd exited with {status}");
    let log = server.log();
    assert!(
        log.contains("drain: every MQTT client is gone"),
        "not a clean drain:\n{log}"
    );

    // Every acked send is stored: restart on the same data directory.
    assert!(sent.published < 100 && !sent.acked.is_empty());
    assert!(sent.acked.len() >= acked_at_signal);
    server.restart().await;
    let stored: HashSet<String> = server
        .text_message_ids("drain-buyer", "buyer", &thread)
        .await
        .into_iter()
        .collect();
    let lost: Vec<&String> = sent
        .acked
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acked but not stored: {lost:?}");
    assert!(stored.len() <= sent.published);
    eprintln!(
        "drain: {} published, {} acked ({} when signalled), {} stored",
        sent.published,
        sent.acked.len(),
        acked_at_signal,
        stored.len()
    );
}
