//! Readiness: may a load balancer send this node traffic now?
//!
//! A [`Readiness`] holds named asynchronous checks, each with its own
//! timeout, registered by whoever wires the process (`chatd`: the store,
//! the MQTT listeners, NATS; later the cluster backbone), and a draining
//! flag. [`Readiness::report`] runs every check at once and reports each by
//! name: `"ok"` or why not. While draining it answers at once, without
//! running anything, so that a balancer stops sending new work as soon as
//! SIGTERM arrives.
//!
//! ```
//! # async fn demo() {
//! use std::time::Duration;
//! let readiness = chat_ops::Readiness::new();
//! readiness.register("store", Duration::from_secs(2), || async { Ok(()) });
//! let report = readiness.report().await;
//! assert!(report.ready);
//! assert_eq!(report.checks["store"], "ok");
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// What a check answers: `Err` says why the node is not ready.
pub type CheckResult = Result<(), String>;
pub type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;
/// A check: called once per report, its future raced against the timeout.
pub type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The value of a passing check in a [`Report`].
pub const OK: &str = "ok";
/// The name of the built-in drain check.
pub const DRAIN: &str = "drain";

#[derive(Clone)]
struct Named {
    name: String,
    timeout: Duration,
    check: Check,
}

#[derive(Default)]
struct Inner {
    checks: Mutex<Vec<Named>>,
    draining: AtomicBool,
}

/// The readiness registry; clones share it.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

/// The answer of `/readyz`: `{"ready": bool, "checks": {"store": "ok", ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ready: bool,
    pub checks: BTreeMap<String, String>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Adds a check (or replaces the one of the same name). It fails when
    /// it answers `Err` or takes longer than `timeout`.
    pub fn register<F, Fut>(&self, name: impl Into<String>, timeout: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        let name = name.into();
        let check: Check = Arc::new(move || Box::pin(check()));
        let mut checks = self.inner.checks.lock();
        checks.retain(|c| c.name != name);
        checks.push(Named {
            name,
            timeout,
            check,
        });
    }

    /// From now on the node is not ready, whatever the checks say. True
    /// the first time.
    pub fn start_draining(&self) -> bool {
        !self.inner.draining.swap(true, Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Runs every check concurrently, each bounded by its timeout. While
    /// draining: not ready at once, nothing run.
    pub async fn report(&self) -> Report {
        let mut checks = BTreeMap::new();
        if self.is_draining() {
            checks.insert(DRAIN.to_owned(), "draining".to_owned());
            return Report {
                ready: false,
                checks,
            };
        }
        checks.insert(DRAIN.to_owned(), OK.to_owned());
        let registered = self.inner.checks.lock().clone();
        let mut running = tokio::task::JoinSet::new();
        for named in registered {
            running.spawn(async move {
                let outcome = match tokio::time::timeout(named.timeout, (named.check)()).await {
                    Ok(Ok(())) => OK.to_owned(),
                    Ok(Err(why)) if why.is_empty() => "failed".to_owned(),
                    Ok(Err(why)) => why,
                    Err(_) => format!("timed out after {} ms", named.timeout.as_millis()),
                };
                (named.name, outcome)
            });
        }
        while let Some(done) = running.join_next().await {
            match done {
                Ok((name, outcome)) => {
                    checks.insert(name, outcome);
                }
                // A check that panicked: its name is lost with the task,
                // so the report says so under a name of its own.
                Err(e) => {
                    checks.insert("panicked".to_owned(), e.to_string());
                }
            }
        }
        // A draining flag set while the checks ran wins, and reads as a
        // drain that began before them: the same short report whenever it
        // started (a load balancer or test sees one answer, not a race).
        if self.is_draining() {
            checks.clear();
            checks.insert(DRAIN.to_owned(), "draining".to_owned());
            return Report {
                ready: false,
                checks,
            };
        }
        let ready = checks.values().all(|v| v == OK);
        Report { ready, checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_when_every_check_passes() {
        let readiness = Readiness::new();
        readiness.register("store", Duration::from_secs(1), || async { Ok(()) });
        readiness.register("mqtt", Duration::from_secs(1), || async { Ok(()) });
        let report = readiness.report().await;
        assert!(report.ready);
        assert_eq!(report.checks.len(), 3);
        assert!(report.checks.values().all(|v| v == OK));
    }

    #[tokio::test]
    async fn a_failing_or_slow_check_makes_it_not_ready() {
        let readiness = Readiness::new();
        readiness.register("store", Duration::from_secs(1), || async {
            Err("database is locked".to_owned())
        });
        readiness.register("nats", Duration::from_millis(50), || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        let report = readiness.report().await;
        assert!(!report.ready);
        assert_eq!(report.checks["store"], "database is locked");
        assert_eq!(report.checks["nats"], "timed out after 50 ms");
        assert_eq!(report.checks[DRAIN], OK);
    }

    #[tokio::test]
    async fn draining_answers_at_once_without_running_checks() {
        let readiness = Readiness::new();
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        readiness.register("store", Duration::from_secs(1), move || {
            seen.store(true, Ordering::SeqCst);
            async { Ok(()) }
        });
        assert!(readiness.start_draining());
        assert!(!readiness.start_draining());
        let report = readiness.report().await;
        assert!(!report.ready);
        assert_eq!(report.checks[DRAIN], "draining");
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_drain_begun_while_checks_run_reads_as_one_begun_before() {
        let readiness = Readiness::new();
        let during = readiness.clone();
        readiness.register("store", Duration::from_secs(1), move || {
            during.start_draining();
            async { Ok(()) }
        });
        let report = readiness.report().await;
        assert!(!report.ready);
        assert_eq!(
            report.checks,
            BTreeMap::from([(DRAIN.to_owned(), "draining".to_owned())])
        );
    }

    #[tokio::test]
    async fn registering_a_name_again_replaces_the_check() {
        let readiness = Readiness::new();
        readiness.register("nats", Duration::from_secs(1), || async {
            Err("down".to_owned())
        });
        readiness.register("nats", Duration::from_secs(1), || async { Ok(()) });
        let report = readiness.report().await;
        assert!(report.ready, "{report:?}");
    }
}
