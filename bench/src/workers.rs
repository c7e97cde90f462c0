//! Runs with more clients than one process may hold sockets (the machine
//! caps open files at 20,000 per process): the pairs are split between
//! worker processes (this binary with `--worker-spec`), which connect,
//! report, wait for the go, send, and print what they measured.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::run::{self, Partial, Plan, RunResult, ServerSamples};
use crate::target::{Endpoint, Kind, Target};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct WorkerSpec {
    pub endpoint: Endpoint,
    pub kind: Kind,
    pub plan: Plan,
    pub pairs: Vec<(u32, String)>,
}

const CONNECTED: &str = "connected";

/// The worker side: connect the given pairs, say so, wait, send, report.
pub async fn worker(spec_path: &Path) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_slice(&std::fs::read(spec_path)?)?;
    let share = run::connect_share(
        &spec.endpoint,
        spec.kind,
        &spec.plan,
        &spec.pairs,
        ProgressBar::hidden(),
    )
    .await?;
    println!("{CONNECTED}");
    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await?;
    let partial = run::send_share(share).await;
    println!("{}", serde_json::to_string(&partial)?);
    Ok(())
}

/// The parent side: one run split over `processes` workers.
pub async fn run_split(
    target: &Target,
    plan: &Plan,
    processes: usize,
    progress: ProgressBar,
) -> anyhow::Result<RunResult> {
    let threads = run::threads_for(target, plan.pairs).await?;
    let pairs: Vec<(u32, String)> = threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| (i as u32, t))
        .collect();
    let chunk = pairs.len().div_ceil(processes.max(1)).max(1);
    let dir = tempfile::tempdir()?;
    let before = target.snapshot();
    let mut workers = Vec::new();
    for (n, share) in pairs.chunks(chunk).enumerate() {
        let spec = WorkerSpec {
            endpoint: target.endpoint(),
            kind: target.kind,
            plan: plan.clone(),
            pairs: share.to_vec(),
        };
        let path = dir.path().join(format!("worker-{n}.json"));
        std::fs::write(&path, serde_json::to_vec(&spec)?)?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--worker-spec")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a bench worker")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        workers.push((child, stdout));
    }
    progress.set_message(format!(
        "connecting {} clients in {} processes",
        pairs.len() * 2,
        workers.len()
    ));
    for (child, lines) in workers.iter_mut() {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await;
        match line {
            Ok(Ok(Some(l))) if l == CONNECTED => {}
            other => {
                let status = child.try_wait()?;
                bail!("a worker failed to connect ({other:?}, {status:?})");
            }
        }
    }
    let connected = target.snapshot();
    for (child, _) in workers.iter_mut() {
        child
            .stdin
            .as_mut()
            .context("worker stdin")?
            .write_all(b"go\n")
            .await?;
    }
    progress.set_message("sending");
    let mut parts = Vec::new();
    for (mut child, mut lines) in workers {
        let mut last = None;
        while let Some(line) = lines.next_line().await? {
            last = Some(line);
        }
        let status = child.wait().await?;
        let line = last.context("a worker printed nothing")?;
        anyhow::ensure!(status.success(), "a worker failed: {status}");
        parts.push(
            serde_json::from_str::<Partial>(&line)
                .with_context(|| format!("worker report: {line}"))?,
        );
    }
    progress.finish_and_clear();
    let after = target.snapshot();
    Ok(run::combine(
        &target.label,
        &parts,
        &ServerSamples {
            before,
            connected,
            after,
        },
    ))
}
