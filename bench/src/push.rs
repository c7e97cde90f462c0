//! The `push` preset: push fan-out through chatd's notification service
//! to the local FCM stand-in (`chat_e2e::fake_fcm`, which checks the OAuth2
//! grant and the bearer token as FCM does). P offline buyers each have one
//! registered device; each of P connected sellers sends one message; the
//! bench times message publish → push arrival at the stand-in per device
//! and the overall notifications/s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

use crate::run::token;
use crate::target::Target;
use crate::tracker::{Percentiles, latency_histogram, percentiles};

#[derive(Debug, serde::Serialize)]
pub struct PushResult {
    pub offline_recipients: u32,
    pub pushes_received: usize,
    pub notifications_per_second: f64,
    pub message_to_push: Percentiles,
    pub server_cpu_seconds: f64,
}

pub async fn run(chatd: &std::path::Path, pairs: u32) -> anyhow::Result<PushResult> {
    let (fcm_base, fake) = chat_e2e::fake_fcm::start().await;
    let dir = tempfile::tempdir()?;
    let credentials = dir.path().join("service-account.json");
    std::fs::write(
        &credentials,
        chat_e2e::fake_fcm::service_account_json(&fcm_base),
    )?;
    let target = Target::start_chatd_with(
        chatd,
        &[
            (
                "CHAT_PUSH__FCM__SERVICE_ACCOUNT_FILE".into(),
                credentials.display().to_string(),
            ),
            ("CHAT_PUSH__FCM__BASE_URL".into(), fcm_base.clone()),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", target.http_port);
    let platform = token(&target.secret, "bench-platform", "platform");

    // Users, threads and devices, a few requests in flight at a time.
    let mut threads: Vec<(String, String)> = Vec::with_capacity(pairs as usize);
    for chunk in (0..pairs).collect::<Vec<_>>().chunks(32) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in chunk {
            let (http, base, platform, secret) = (
                http.clone(),
                base.clone(),
                platform.clone(),
                target.secret.clone(),
            );
            tasks.spawn(async move {
                let (buyer, seller) = (format!("pb{i}"), format!("ps{i}"));
                for user in [&buyer, &seller] {
                    http.put(format!("{base}/internal/users/{user}"))
                        .bearer_auth(&platform)
                        .json(&json!({"displayName": format!("Shop {user}"), "seller": user == &seller}))
                        .send()
                        .await?
                        .error_for_status()?;
                }
                let buyer_token = token(&secret, &buyer, "buyer");
                let thread: serde_json::Value = http
                    .post(format!("{base}/chat/threads"))
                    .bearer_auth(&buyer_token)
                    .json(&json!({"sellerId": seller}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                http.put(format!("{base}/chat/devices"))
                    .bearer_auth(&buyer_token)
                    .json(&json!({"platform": "fcm", "token": format!("bench-device-{i}"), "appId": "vn.example.shop"}))
                    .send()
                    .await?
                    .error_for_status()?;
                let thread_id = thread["id"].as_str().context("thread id")?.to_owned();
                anyhow::Ok((seller, thread_id))
            });
        }
        while let Some(done) = tasks.join_next().await {
            threads.push(done??);
        }
    }

    // Sellers connect; buyers stay offline.
    let mut clients = Vec::with_capacity(threads.len());
    for (seller, _) in &threads {
        let mut options = MqttOptions::new(seller.clone(), "127.0.0.1", target.tcp_port);
        options.set_credentials(seller.clone(), token(&target.secret, seller, "seller"));
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 16);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu_before = target.stats().cpu_seconds;
    let started = Instant::now();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(threads.len());
    for (i, ((_, thread_id), client)) in threads.iter().zip(&clients).enumerate() {
        let payload = chat_protocol::v2::encode(&chat_protocol::v2::Command::Msg {
            client_msg_id: format!("push-bench-{i}"),
            kind: chat_protocol::MessageType::Text,
            content: "Dạ shop còn hàng ạ, bạn đặt luôn nhé".into(),
        });
        sent_at.insert(format!("bench-device-{i}"), Instant::now());
        client
            .publish(
                chat_protocol::v2::thread(thread_id),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while fake.lock().unwrap().arrivals.len() < threads.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = target.stats().cpu_seconds - cpu_before;
    let arrivals = fake.lock().unwrap().arrivals.clone();
    ensure!(!arrivals.is_empty(), "no push arrived");
    let mut histogram = latency_histogram();
    let mut last = started;
    for (at, device) in &arrivals {
        if let Some(sent) = sent_at.get(device) {
            histogram.record((at.duration_since(*sent).as_micros() as u64).max(1))?;
            last = last.max(*at);
        }
    }
    Ok(PushResult {
        offline_recipients: pairs,
        pushes_received: arrivals.len(),
        notifications_per_second: arrivals.len() as f64
            / last.duration_since(started).as_secs_f64().max(1e-6),
        message_to_push: percentiles(&histogram),
        server_cpu_seconds: cpu,
    })
}
