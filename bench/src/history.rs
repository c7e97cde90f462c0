//! The `history` preset: REST page latency on a thread with a long history
//! (1 M messages by default): the newest page, and a page from the middle
//! through the keyset cursor.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};

use crate::target::Target;
use crate::tracker::{Percentiles, latency_histogram, percentiles};

#[derive(Debug, serde::Serialize)]
pub struct HistoryResult {
    pub messages: u32,
    pub seed_seconds: f64,
    pub page_size: u32,
    pub newest_page: Percentiles,
    pub deep_page: Percentiles,
    pub server_peak_rss_kib: u64,
}

async fn timed_pages(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    requests: u32,
) -> anyhow::Result<Percentiles> {
    let mut histogram = latency_histogram();
    for i in 0..requests + 50 {
        let start = Instant::now();
        let page: serde_json::Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let micros = start.elapsed().as_micros() as u64;
        ensure!(
            page["messages"].as_array().is_some_and(|m| !m.is_empty()),
            "empty page from {url}"
        );
        if i >= 50 {
            // The first 50 warm the caches and the connection.
            histogram.record(micros.max(1))?;
        }
    }
    Ok(percentiles(&histogram))
}

pub async fn run(chatd: &Path, messages: u32, requests: u32) -> anyhow::Result<HistoryResult> {
    let started = Instant::now();
    let (target, seeded) = Target::start_with_history(chatd, messages).await?;
    let seed_seconds = started.elapsed().as_secs_f64();
    let thread = seeded["thread_id"].as_str().context("thread id")?;
    let middle = seeded["middle_id"].as_str().context("middle id")?;
    let newest = seeded["newest_id"].as_str().context("newest id")?;
    let token = crate::run::token(&target.secret, "hist-buyer", "buyer");
    let http = reqwest::Client::new();
    let base = format!(
        "http://127.0.0.1:{}/chat/threads/{thread}/messages",
        target.http_port
    );
    let page_size = 30;

    // The pages must be the right ones before their speed means anything.
    let top: serde_json::Value = http
        .get(format!("{base}?limit={page_size}"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        top["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["id"].as_str())
            == Some(newest)
    );
    let deep_url = format!("{base}?limit={page_size}&before={middle}");
    let deep: serde_json::Value = http
        .get(&deep_url)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let deep_ids: Vec<&str> = deep["messages"]
        .as_array()
        .context("deep page")?
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    ensure!(
        deep_ids.len() == page_size as usize && deep_ids.iter().all(|id| *id < middle),
        "wrong deep page"
    );

    let newest_page = timed_pages(
        &http,
        &format!("{base}?limit={page_size}"),
        &token,
        requests,
    )
    .await?;
    let deep_page = timed_pages(&http, &deep_url, &token, requests).await?;
    Ok(HistoryResult {
        messages,
        seed_seconds,
        page_size,
        newest_page,
        deep_page,
        server_peak_rss_kib: target.stats().peak_rss_kib,
    })
}
