//! The `store` preset: the storage backends alone, without the broker.
//! One thread gets `--messages` messages in all: most are bulk-imported
//! (`import_history`, as a migration would), the last `--store-inserts`
//! go through the real send path (`append_message`: idempotency key,
//! preview, inbox, markers) with many in flight, each one timed; then the
//! newest page and a page from the middle of the history are timed. Same
//! schedule for every backend, so SQLite and ScyllaDB (a real CQL server)
//! compare directly.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use chat_core::model::{MessageRange, NewMessage, OpenThread, ThreadKey};
use chat_core::store::ChatStore;
use chat_protocol::MessageType;

use crate::tracker::{Percentiles, latency_histogram, percentiles};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Sqlite,
    Scylla,
}

#[derive(Debug, serde::Serialize)]
pub struct StoreResult {
    pub backend: Backend,
    pub messages: u32,
    pub imported: u32,
    pub imports_per_second: f64,
    pub timed_inserts: u32,
    pub concurrency: usize,
    pub inserts_per_second: f64,
    pub insert: Percentiles,
    pub page_size: usize,
    pub newest_page: Percentiles,
    pub deep_page: Percentiles,
}

async fn open(
    backend: Backend,
    dir: &std::path::Path,
    cql_node: &str,
) -> anyhow::Result<Arc<dyn ChatStore>> {
    Ok(match backend {
        Backend::Sqlite => Arc::new(chat_store::SqliteStore::open(dir)?),
        Backend::Scylla => {
            let config = chat_scylla::ScyllaConfig {
                nodes: vec![cql_node.to_owned()],
                keyspace: "chat_bench".into(),
                request_timeout_ms: 30_000,
                ..Default::default()
            };
            Arc::new(
                chat_scylla::ScyllaStore::open(&config)
                    .await
                    .with_context(|| format!("opening the CQL store at {cql_node}"))?,
            )
        }
    })
}

pub async fn run(
    backend: Backend,
    messages: u32,
    timed_inserts: u32,
    concurrency: usize,
    requests: u32,
    cql_node: &str,
) -> anyhow::Result<StoreResult> {
    let dir = tempfile::tempdir()?;
    let store = open(backend, dir.path(), cql_node).await?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (buyer, seller) = (format!("bench-b-{tag}"), format!("bench-s-{tag}"));
    let thread = store
        .open_thread(&OpenThread {
            key: ThreadKey::Pair {
                buyer_id: buyer.clone(),
                seller_id: seller.clone(),
            },
            buyer_id: buyer.clone(),
            seller_id: seller.clone(),
        })
        .await?
        .thread;

    let timed_inserts = timed_inserts.min(messages);
    let imported = messages - timed_inserts;
    let import_started = Instant::now();
    let mut imported_ids: Vec<String> = Vec::with_capacity(imported as usize);
    let mut n = 0;
    while n < imported {
        let chunk: Vec<chat_protocol::Message> = (n..(n + 50_000).min(imported))
            .map(|i| {
                let (id, created_at) = chat_core::new_timed_id();
                chat_protocol::Message {
                    id,
                    thread_id: thread.id.clone(),
                    from: if i % 3 == 2 {
                        seller.clone()
                    } else {
                        buyer.clone()
                    },
                    kind: MessageType::Text,
                    content: format!("tin nhắn cũ số {i}: áo thun size M còn hàng không shop?"),
                    card: None,
                    client_msg_id: Some(format!("imported-{i}")),
                    created_at,
                }
            })
            .collect();
        store.import_history(&thread.id, &chunk).await?;
        imported_ids.extend(chunk.into_iter().map(|m| m.id));
        n = (n + 50_000).min(imported);
        eprintln!("{backend:?}: imported {n}/{imported}");
    }
    let imports_per_second = f64::from(imported) / import_started.elapsed().as_secs_f64().max(1e-9);

    let progress = indicatif::ProgressBar::new(u64::from(timed_inserts));
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    progress.set_prefix(format!("{backend:?} inserts"));
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (store, next, thread_id) = (store.clone(), next.clone(), thread.id.clone());
        let (buyer, seller, progress) = (buyer.clone(), seller.clone(), progress.clone());
        writers.spawn(async move {
            let mut histogram = latency_histogram();
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= timed_inserts {
                    break;
                }
                let (id, created_at) = chat_core::new_timed_id();
                let message = NewMessage {
                    id,
                    thread_id: thread_id.clone(),
                    from: if n % 3 == 2 {
                        seller.clone()
                    } else {
                        buyer.clone()
                    },
                    kind: MessageType::Text,
                    content: format!("tin nhắn số {n}: áo thun size M còn hàng không shop?"),
                    card: None,
                    client_msg_id: Some(format!("bench-{n}")),
                    created_at,
                    sets_product: None,
                    owes_push: false,
                };
                let start = Instant::now();
                let appended = store.append_message(&message).await?;
                histogram.record((start.elapsed().as_micros() as u64).max(1))?;
                ensure!(!appended.duplicate, "message {n} reported as a duplicate");
                ids.push((n, appended.message.id));
                progress.inc(1);
            }
            anyhow::Ok((histogram, ids))
        });
    }
    let mut insert = latency_histogram();
    let mut ids = Vec::with_capacity(messages as usize);
    while let Some(done) = writers.join_next().await {
        let (histogram, written) = done??;
        insert.add(histogram)?;
        ids.extend(written);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let mut sorted: Vec<String> = imported_ids;
    sorted.extend(ids.into_iter().map(|(_, id)| id));
    sorted.sort();
    ensure!(
        sorted.len() == messages as usize,
        "stored {} of {messages}",
        sorted.len()
    );
    let middle = sorted[sorted.len() / 2].clone();
    let newest = sorted.last().cloned().context("no message")?;

    let page_size = 30;
    let newest_range = MessageRange::default();
    let deep_range = MessageRange {
        before: Some(middle.clone()),
        after: None,
    };
    let top = store.messages(&thread.id, &newest_range, page_size).await?;
    ensure!(
        top.last().map(|m| &m.id) == Some(&newest),
        "newest page is wrong"
    );
    let deep = store.messages(&thread.id, &deep_range, page_size).await?;
    ensure!(deep.len() == page_size, "deep page is short");
    let expected_deep = &sorted[sorted.len() / 2 - page_size..sorted.len() / 2];
    ensure!(
        deep.iter().map(|m| &m.id).eq(expected_deep.iter()),
        "deep page is not the {page_size} messages before the middle"
    );
    let newest_page = timed_pages(&*store, &thread.id, &newest_range, page_size, requests).await?;
    let deep_page = timed_pages(&*store, &thread.id, &deep_range, page_size, requests).await?;
    Ok(StoreResult {
        backend,
        messages,
        imported,
        imports_per_second,
        timed_inserts,
        concurrency,
        inserts_per_second: f64::from(timed_inserts) / seconds,
        insert: percentiles(&insert),
        page_size,
        newest_page,
        deep_page,
    })
}

async fn timed_pages(
    store: &dyn ChatStore,
    thread_id: &str,
    range: &MessageRange,
    page_size: usize,
    requests: u32,
) -> anyhow::Result<Percentiles> {
    let mut histogram = latency_histogram();
    for i in 0..requests + 50 {
        let start = Instant::now();
        let page = store.messages(thread_id, range, page_size).await?;
        let micros = start.elapsed().as_micros() as u64;
        ensure!(page.len() == page_size, "short page");
        if i >= 50 {
            histogram.record(micros.max(1))?;
        }
    }
    Ok(percentiles(&histogram))
}
