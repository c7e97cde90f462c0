//! `chat-bench`: a chat-aware load generator. It simulates buyer–seller
//! pairs against `chatd` and, in the same run, against a plain Mosquitto
//! (the floor: no auth, no storage), and reports connect rate, send→ack and
//! send→delivery latency, throughput, loss, duplicates, reordering, server
//! CPU and memory. Everything runs on loopback and stops by itself.

mod history;
mod plot;
mod push;
mod run;
mod store;
mod target;
mod tracker;
mod workers;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use crate::run::{Plan, RunResult, Via};
use crate::target::{Kind, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// 1,000 pairs × 10 msg/s for 30 s, QoS 1, 200-byte text.
    Steady,
    /// 100 pairs, as fast as acks allow (in-flight window 32).
    Burst,
    /// The steady preset over WebSocket.
    Ws,
    /// A tiny run for the test suite.
    Smoke,
    /// REST page latency on a thread of 1 M stored messages (--messages).
    History,
    /// 19,900 connected clients (the most one server process may hold
    /// here), each sending a message every 4 s: memory per connection and
    /// connect rate. Clients are spread over several bench processes.
    IdleScale,
    /// Push fan-out: offline buyers with one FCM device each, one message
    /// each, through chatd's notification service to a local FCM stand-in.
    Push,
    /// The message stores alone: send (insert) latency and history-page
    /// latency in a thread of 1 M messages (--messages), SQLite then
    /// ScyllaDB (--backend).
    Store,
}

#[derive(Parser, Debug)]
#[command(
    name = "chat-bench",
    about = "Measure the chat path of chatd against a plain Mosquitto"
)]
struct Args {
    #[arg(long, value_enum, default_value = "steady")]
    scenario: Scenario,
    /// Compare with a plain broker in the same run (alternating A B A B);
    /// repeat to compare with several (e.g. mosquitto and chatd-raw).
    #[arg(long, value_enum)]
    compare: Vec<Kind>,
    /// Run against this target only (ignored with --compare).
    #[arg(long, value_enum, default_value = "chatd")]
    target: Kind,
    /// Rounds per target when comparing.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    #[arg(long)]
    pairs: Option<u32>,
    /// Messages per buyer.
    #[arg(long)]
    messages: Option<u32>,
    /// Messages per second per buyer (0: unthrottled).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    inflight: Option<usize>,
    /// Sellers answer every n-th message (0: never).
    #[arg(long)]
    reply_every: Option<u32>,
    /// Text length in bytes.
    #[arg(long)]
    size: Option<usize>,
    #[arg(long, value_enum)]
    via: Option<Via>,
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Hard bound on each run's send and drain phases, in seconds.
    #[arg(long)]
    max_seconds: Option<u64>,
    /// Path of the chatd binary (default: beside chat-bench).
    #[arg(long)]
    chatd: Option<PathBuf>,
    /// Write a latency-percentile plot (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Self-test: make the receiver lose one message and duplicate one.
    #[arg(long, hide = true)]
    inject_faults: bool,
    /// Bench processes to spread the clients over (default: one per 9,000
    /// clients, as each process may open at most 20,000 files here).
    #[arg(long)]
    processes: Option<usize>,
    /// `store` preset: which backends (default: both, SQLite first).
    #[arg(long, value_enum)]
    backend: Vec<store::Backend>,
    /// `store` preset: how many of --messages go through the timed send
    /// path (the rest are bulk-imported first).
    #[arg(long, default_value_t = 20_000)]
    store_inserts: u32,
    /// `store` preset: appends in flight.
    #[arg(long, default_value_t = 64)]
    store_concurrency: usize,
    /// `store` preset: the CQL server (e.g. `scripts/cassandra.sh start`).
    #[arg(long, default_value = "127.0.0.1:9042")]
    cql_node: String,
    /// Internal: run as a worker of a split run.
    #[arg(long, hide = true)]
    worker_spec: Option<PathBuf>,
}

fn plan_for(args: &Args) -> Plan {
    let mut plan = Plan {
        pairs: 1000,
        messages: 300,
        rate: 10.0,
        inflight: 32,
        reply_every: 0,
        size: 200,
        via: Via::Tcp,
        connect_concurrency: 200,
        max_duration: Duration::from_secs(120),
        drain: Duration::from_secs(10),
        inject_faults: args.inject_faults,
    };
    match args.scenario {
        // History and Store have their own flows; the plan is unused.
        Scenario::Steady | Scenario::History | Scenario::Store | Scenario::Push => {}
        Scenario::Ws => plan.via = Via::Ws,
        Scenario::Burst => {
            plan.pairs = 100;
            plan.messages = 2000;
            plan.rate = 0.0;
        }
        Scenario::IdleScale => {
            plan.pairs = 9_950;
            plan.messages = 3;
            plan.rate = 0.25;
            plan.reply_every = 1;
            plan.connect_concurrency = 250;
            plan.max_duration = Duration::from_secs(180);
        }
        Scenario::Smoke => {
            plan.pairs = 4;
            plan.messages = 25;
            plan.rate = 0.0;
            plan.inflight = 4;
            plan.reply_every = 5;
            plan.max_duration = Duration::from_secs(60);
            plan.drain = Duration::from_secs(5);
        }
    }
    if let Some(v) = args.pairs {
        plan.pairs = v;
    }
    if let Some(v) = args.messages {
        plan.messages = v;
    }
    if let Some(v) = args.rate {
        plan.rate = v;
    }
    if let Some(v) = args.inflight {
        plan.inflight = v;
    }
    if let Some(v) = args.reply_every {
        plan.reply_every = v;
    }
    if let Some(v) = args.size {
        plan.size = v;
    }
    if let Some(v) = args.via {
        plan.via = v;
    }
    if let Some(v) = args.connect_concurrency {
        plan.connect_concurrency = v;
    }
    if let Some(v) = args.max_seconds {
        plan.max_duration = Duration::from_secs(v);
    }
    plan
}

fn progress_bar(label: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} delivered ({per_sec})",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_owned());
    bar
}

fn human(r: &RunResult) -> String {
    format!(
        "{:>9}: {} clients, connect {:.0}/s | ack p50 {:.2} p99 {:.2} ms | delivery p50 {:.2} p99 {:.2} ms | \
         {:.0} msg/s | sent {} delivered {} lost {} dup {} reordered {} errors {} | \
         server cpu {:.2}s, peak rss {} KiB, {:.1} KiB/conn | bench cpu {:.2}s",
        r.target,
        r.clients,
        r.connects_per_s,
        r.ack.p50_ms,
        r.ack.p99_ms,
        r.delivery.p50_ms,
        r.delivery.p99_ms,
        r.delivered_per_s,
        r.sequence.sent,
        r.sequence.delivered,
        r.sequence.lost,
        r.sequence.duplicated,
        r.sequence.out_of_order,
        r.errors,
        r.server_cpu_seconds,
        r.server_peak_rss_kib,
        r.server_rss_per_connection_kib,
        r.bench_cpu_seconds,
    )
}

/// Mean of a figure over the runs of one target.
fn mean(runs: &[&RunResult], f: impl Fn(&RunResult) -> f64) -> f64 {
    runs.iter().map(|r| f(r)).sum::<f64>() / runs.len().max(1) as f64
}

type Figure = (&'static str, fn(&RunResult) -> f64);

const FIGURES: &[Figure] = &[
    ("connects/s", |r| r.connects_per_s),
    ("ack p50 ms", |r| r.ack.p50_ms),
    ("ack p99 ms", |r| r.ack.p99_ms),
    ("delivery p50 ms", |r| r.delivery.p50_ms),
    ("delivery p99 ms", |r| r.delivery.p99_ms),
    ("delivered msg/s", |r| r.delivered_per_s),
    ("lost", |r| r.sequence.lost as f64),
    ("duplicated", |r| r.sequence.duplicated as f64),
    ("server cpu s", |r| r.server_cpu_seconds),
    ("bench cpu s", |r| r.bench_cpu_seconds),
    ("server peak RSS KiB", |r| r.server_peak_rss_kib as f64),
    ("KiB per connection", |r| r.server_rss_per_connection_kib),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(spec) = &args.worker_spec {
        return workers::worker(spec).await;
    }
    let plan = plan_for(&args);
    let processes = args
        .processes
        .unwrap_or_else(|| (plan.pairs as usize * 2).div_ceil(9_000));
    let chatd = args.chatd.clone().unwrap_or_else(target::default_chatd);
    if args.scenario == Scenario::History {
        let messages = args.messages.unwrap_or(1_000_000);
        eprintln!("chat-bench history: seeding {messages} messages, then timing pages");
        let result = history::run(&chatd, messages, 2000).await?;
        eprintln!(
            "history: {} messages (seeded in {:.1}s) | newest page p50 {:.2} p99 {:.2} ms | \
             deep page p50 {:.2} p99 {:.2} ms | server peak rss {} KiB",
            result.messages,
            result.seed_seconds,
            result.newest_page.p50_ms,
            result.newest_page.p99_ms,
            result.deep_page.p50_ms,
            result.deep_page.p99_ms,
            result.server_peak_rss_kib
        );
        println!(
            "{}",
            serde_json::json!({"scenario": args.scenario, "history": result})
        );
        return Ok(());
    }
    if args.scenario == Scenario::Push {
        let pairs = args.pairs.unwrap_or(2000);
        eprintln!("chat-bench push: {pairs} offline buyers with one FCM device each");
        let mut result = push::run(&chatd, pairs).await?;
        eprintln!(
            "push: {}/{} pushes | {:.0} notifications/s | message→push p50 {:.2} p99 {:.2} ms | server cpu {:.1}s",
            result.pushes_received,
            result.offline_recipients,
            result.notifications_per_second,
            result.message_to_push.p50_ms,
            result.message_to_push.p99_ms,
            result.server_cpu_seconds
        );
        result.server_cpu_seconds = (result.server_cpu_seconds * 100.0).round() / 100.0;
        println!(
            "{}",
            serde_json::json!({"scenario": args.scenario, "push": result})
        );
        return Ok(());
    }
    if args.scenario == Scenario::Store {
        let messages = args.messages.unwrap_or(1_000_000);
        let backends = if args.backend.is_empty() {
            vec![store::Backend::Sqlite, store::Backend::Scylla]
        } else {
            args.backend.clone()
        };
        let mut results = Vec::new();
        for backend in backends {
            eprintln!(
                "chat-bench store: {backend:?}, {messages} messages, {} in flight",
                args.store_concurrency
            );
            let r = store::run(
                backend,
                messages,
                args.store_inserts,
                args.store_concurrency,
                2000,
                &args.cql_node,
            )
            .await?;
            eprintln!(
                "store {:?}: {} stored ({} imported at {:.0}/s) | {} timed sends: {:.0}/s, \
                 p50 {:.2} p99 {:.2} ms | newest page p50 {:.2} p99 {:.2} ms | deep page p50 {:.2} p99 {:.2} ms",
                r.backend,
                r.messages,
                r.imported,
                r.imports_per_second,
                r.timed_inserts,
                r.inserts_per_second,
                r.insert.p50_ms,
                r.insert.p99_ms,
                r.newest_page.p50_ms,
                r.newest_page.p99_ms,
                r.deep_page.p50_ms,
                r.deep_page.p99_ms
            );
            results.push(r);
        }
        println!(
            "{}",
            serde_json::json!({"scenario": args.scenario, "store": results})
        );
        return Ok(());
    }
    let order: Vec<Kind> = if args.compare.is_empty() {
        vec![args.target]
    } else {
        (0..args.rounds)
            .flat_map(|_| args.compare.iter().copied().chain([Kind::Chatd]))
            .collect()
    };
    eprintln!(
        "chat-bench {:?}: {} pairs, {} msg/buyer at {} msg/s, window {}, reply every {}, {} B, {:?}",
        args.scenario,
        plan.pairs,
        plan.messages,
        plan.rate,
        plan.inflight,
        plan.reply_every,
        plan.size,
        plan.via
    );
    let mut results = Vec::new();
    for kind in order {
        let mut target = Target::start(kind, &chatd).await?;
        let result = if processes > 1 {
            workers::run_split(&target, &plan, processes, progress_bar(kind.name())).await
        } else {
            run::run(&target, &plan, progress_bar(kind.name())).await
        };
        target.ensure_alive()?;
        let result = result?;
        eprintln!("{}", human(&result));
        results.push(result);
    }

    let mut summary = serde_json::Map::new();
    let ours: Vec<&RunResult> = results.iter().filter(|r| r.target == "chatd").collect();
    for other in &args.compare {
        let theirs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.target == other.name())
            .collect();
        eprintln!(
            "\n{:<22}{:>14}{:>14}{:>10}",
            "figure (mean)",
            "chatd",
            other.name(),
            "ratio"
        );
        let mut figures = serde_json::Map::new();
        for (name, f) in FIGURES {
            let (a, b) = (mean(&ours, f), mean(&theirs, f));
            let ratio = if b != 0.0 { a / b } else { f64::NAN };
            eprintln!("{name:<22}{a:>14.2}{b:>14.2}{ratio:>10.2}");
            figures.insert(
                (*name).to_owned(),
                serde_json::json!({"chatd": a, "other": b, "ratio": ratio}),
            );
        }
        summary.insert(other.name().to_owned(), figures.into());
    }
    if let Some(path) = &args.plot {
        plot::percentiles_svg(path, &results)?;
        eprintln!("plot written to {}", path.display());
    }
    println!(
        "{}",
        serde_json::json!({
            "scenario": args.scenario,
            "plan": plan,
            "runs": results,
            "summary": summary,
        })
    );
    Ok(())
}
