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
    /// About twice what one chatd carries here: 1,000 pairs × 16 msg/s
    /// for 20 s. Sends refused for load are published again after the
    /// delay the server asks for; reports the accepted sends' ack latency
    /// and how fast the refusals came.
    Overload,
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
    /// chatd on the ScyllaDB store (--cql-node, a fresh keyspace per run)
    /// as N nodes; N > 1 joins them with the NATS backbone (a nats-server
    /// started here) and puts the buyer of pair i on node i mod N and its
    /// seller on node (i + 1) mod N, so every message crosses nodes.
    /// Repeat to compare side by side, alternating for --rounds rounds:
    /// `--nodes 1 --nodes 3`.
    #[arg(long, conflicts_with = "compare")]
    nodes: Vec<usize>,
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
    /// `store` preset and --nodes: the CQL server (e.g.
    /// `scripts/cassandra.sh start`).
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
        Scenario::Overload => {
            plan.rate = 16.0;
            plan.messages = 320;
        }
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
    let mut line = format!(
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
    );
    if r.nodes.len() > 1 {
        let nodes: Vec<String> = r
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "node-{} cpu {:.2}s rss {} KiB",
                    i + 1,
                    n.cpu_seconds,
                    n.peak_rss_kib
                )
            })
            .collect();
        line.push_str(&format!(" | {}", nodes.join(", ")));
    }
    if r.shed > 0 {
        line.push_str(&format!(
            " | shed {} (refused in p50 {:.2} p99 {:.2} ms, then sent again)",
            r.shed, r.refusal.p50_ms, r.refusal.p99_ms
        ));
    }
    if let Some(cpu) = r.nats_cpu_seconds {
        line.push_str(&format!(" | nats cpu {cpu:.2}s"));
    }
    if let Some(cpu) = r.cql_cpu_seconds {
        line.push_str(&format!(" | cassandra cpu {cpu:.2}s"));
    }
    line
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
    ("shed (sent again)", |r| r.shed as f64),
    ("refusal p99 ms", |r| r.refusal.p99_ms),
    ("server cpu s", |r| r.server_cpu_seconds),
    ("bench cpu s", |r| r.bench_cpu_seconds),
    ("server peak RSS KiB", |r| r.server_peak_rss_kib as f64),
    ("KiB per connection", |r| r.server_rss_per_connection_kib),
];

/// The figures of a 1-node-vs-N-nodes comparison, in table order.
const NODE_FIGURES: &[Figure] = &[
    ("delivered msg/s", |r| r.delivered_per_s),
    ("ack p50 ms", |r| r.ack.p50_ms),
    ("ack p99 ms", |r| r.ack.p99_ms),
    ("delivery p50 ms", |r| r.delivery.p50_ms),
    ("delivery p99 ms", |r| r.delivery.p99_ms),
    ("sent", |r| r.sequence.sent as f64),
    ("delivered", |r| r.sequence.delivered as f64),
    ("lost", |r| r.sequence.lost as f64),
    ("duplicated", |r| r.sequence.duplicated as f64),
    ("reordered", |r| r.sequence.out_of_order as f64),
    ("errors", |r| r.errors as f64),
    ("connects/s", |r| r.connects_per_s),
    ("chatd cpu s (all nodes)", |r| r.server_cpu_seconds),
    ("nats cpu s", |r| r.nats_cpu_seconds.unwrap_or(0.0)),
    ("cassandra cpu s", |r| r.cql_cpu_seconds.unwrap_or(f64::NAN)),
    ("bench cpu s", |r| r.bench_cpu_seconds),
];

/// Prints the runs of each node count side by side (means over rounds,
/// per-node CPU and peak RSS as `a / b / c`) and returns them as JSON.
fn compare_nodes(counts: &[usize], results: &[RunResult]) -> serde_json::Value {
    let mut labels: Vec<String> = Vec::new();
    for r in results {
        if !labels.contains(&r.target) {
            labels.push(r.target.clone());
        }
    }
    let groups: Vec<Vec<&RunResult>> = labels
        .iter()
        .map(|l| results.iter().filter(|r| &r.target == l).collect())
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let most = counts.iter().copied().max().unwrap_or(1);
    eprintln!(
        "\nchatd on the Scylla store, 1 node vs N nodes (NATS backbone; every message crosses \
         nodes). {most} node{} share {cores} cores here with NATS, Cassandra and the bench: \
         this measures the cost of the cluster path, not scale-out capacity.",
        if most == 1 { "" } else { "s" }
    );
    let mut header = format!("{:<26}", "figure (mean)");
    for l in &labels {
        header.push_str(&format!("{l:>22}"));
    }
    eprintln!("{header}");
    let mut json = serde_json::Map::new();
    for l in &labels {
        json.insert(l.clone(), serde_json::Map::new().into());
    }
    for (name, f) in NODE_FIGURES {
        let mut line = format!("{name:<26}");
        for (l, runs) in labels.iter().zip(&groups) {
            let v = mean(runs, f);
            line.push_str(&format!("{v:>22.2}"));
            json[l][*name] = serde_json::json!(v);
        }
        eprintln!("{line}");
    }
    let per_node = |runs: &[&RunResult], f: fn(&run::NodeFigures) -> f64| -> Vec<f64> {
        let n = runs.iter().map(|r| r.nodes.len()).max().unwrap_or(0);
        (0..n)
            .map(|i| {
                runs.iter()
                    .filter_map(|r| r.nodes.get(i).map(f))
                    .sum::<f64>()
                    / runs.len().max(1) as f64
            })
            .collect()
    };
    for (name, f, key) in [
        (
            "cpu s per node",
            (|n: &run::NodeFigures| n.cpu_seconds) as fn(&run::NodeFigures) -> f64,
            "cpu s per node",
        ),
        (
            "peak RSS MiB per node",
            |n: &run::NodeFigures| n.peak_rss_kib as f64 / 1024.0,
            "peak RSS MiB per node",
        ),
    ] {
        let mut line = format!("{name:<26}");
        for (l, runs) in labels.iter().zip(&groups) {
            let values = per_node(runs, f);
            let text = values
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" / ");
            line.push_str(&format!("{text:>22}"));
            json[l][key] = serde_json::json!(values);
        }
        eprintln!("{line}");
    }
    json.into()
}

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
    // A run is a kind of target, or chatd on the Scylla store as N nodes.
    let order: Vec<(Kind, Option<usize>)> = if !args.nodes.is_empty() {
        let rounds = if args.nodes.len() > 1 { args.rounds } else { 1 };
        (0..rounds)
            .flat_map(|_| args.nodes.iter().map(|&n| (Kind::Chatd, Some(n))))
            .collect()
    } else if args.compare.is_empty() {
        vec![(args.target, None)]
    } else {
        (0..args.rounds)
            .flat_map(|_| args.compare.iter().copied().chain([Kind::Chatd]))
            .map(|k| (k, None))
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
    for (kind, nodes) in order {
        let mut target = match nodes {
            Some(n) => Target::start_scylla_nodes(&chatd, n, &args.cql_node).await?,
            None => Target::start(kind, &chatd).await?,
        };
        let bar = progress_bar(&target.label);
        let result = if processes > 1 {
            workers::run_split(&target, &plan, processes, bar).await
        } else {
            run::run(&target, &plan, bar).await
        };
        let alive = target.ensure_alive();
        target.stop().await;
        alive?;
        let result = result?;
        eprintln!("{}", human(&result));
        results.push(result);
    }
    let node_summary = (!args.nodes.is_empty()).then(|| compare_nodes(&args.nodes, &results));

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
    if let Some(nodes) = node_summary {
        summary.insert("nodes".into(), nodes);
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
