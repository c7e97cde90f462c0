//! Load shedding for sends.
//!
//! When more is offered than the store can write, a queue stands in front
//! of its writer and every ack waits in it: acks then take seconds, clients
//! time out and send again, and the retries add load. Instead, once the
//! store's appends have *all* waited longer than a target for a whole
//! interval, new sends are refused `unavailable` with a retry delay before
//! any work is spent on them, until an append is quick again. Watching the
//! minimum over an interval, as CoDel does, tells a standing queue from a
//! burst: a burst drains within the interval and is never shed.
//!
//! A connection told to wait stays refused until its delay has passed, so
//! the sends it had in flight behind the refused one are refused too, and
//! a client that sends its outbox again in order keeps its order.
//!
//! Also a hard cap on sends waiting for the store, so a stalled store
//! costs bounded memory.
//!
//! Pure logic: the caller passes the time (`Instant`), so tests drive it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// When sends are shed; part of section `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Appends that all waited longer than this for `interval` mean a
    /// standing queue. Zero: never shed on latency.
    pub target: Duration,
    pub interval: Duration,
    /// Sends waiting for the store beyond which new ones are shed; 0: no cap.
    pub max_queued: usize,
}

/// A send refused for load: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub retry_after: Duration,
}

/// The longest retry delay handed out.
const MAX_RETRY: Duration = Duration::from_secs(10);

pub struct Admission {
    config: AdmissionConfig,
    queued: AtomicUsize,
    window: Mutex<Window>,
    /// Connections told to wait, and until when. Bounded: expired entries
    /// are dropped whenever it grows past `HELD_SWEEP`.
    held: Mutex<HashMap<String, Instant>>,
}

/// Held connections beyond which expired entries are swept.
const HELD_SWEEP: usize = 4096;

#[derive(Debug)]
struct Window {
    /// When the current interval started (its first completion).
    start: Option<Instant>,
    /// Shortest wait seen in the current interval.
    min: Duration,
    /// The last complete interval: when it ended and its shortest wait.
    last: Option<(Instant, Duration)>,
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            config,
            queued: AtomicUsize::new(0),
            window: Mutex::new(Window {
                start: None,
                min: Duration::MAX,
                last: None,
            }),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new send on `connection` (none: REST) may go on to the
    /// store now.
    pub fn check(&self, now: Instant, connection: Option<&str>) -> Result<(), Shed> {
        if let Some(connection) = connection {
            let mut held = self.held.lock();
            if let Some(&until) = held.get(connection) {
                if until > now {
                    return Err(Shed {
                        retry_after: (until - now).max(Duration::from_millis(1)),
                    });
                }
                held.remove(connection);
            }
        }
        let verdict = self.verdict(now);
        if let (Err(shed), Some(connection)) = (&verdict, connection) {
            let mut held = self.held.lock();
            if held.len() >= HELD_SWEEP {
                held.retain(|_, until| *until > now);
            }
            held.insert(connection.to_owned(), now + shed.retry_after);
        }
        verdict
    }

    fn verdict(&self, now: Instant) -> Result<(), Shed> {
        let cap = self.config.max_queued;
        if cap > 0 && self.queued.load(Ordering::Relaxed) >= cap {
            return Err(Shed {
                retry_after: self.config.interval.max(Duration::from_secs(1)),
            });
        }
        if self.config.target.is_zero() {
            return Ok(());
        }
        let window = self.window.lock();
        let Some((ended, last_min)) = window.last else {
            return Ok(());
        };
        // A verdict from long ago says nothing: with every send shed no
        // append completes to renew it, and the queue has drained since.
        let fresh = now.saturating_duration_since(ended) <= 2 * self.config.interval;
        // One quick append in the current interval: the queue is gone.
        let still = window.start.is_none() || window.min > self.config.target;
        if fresh && last_min > self.config.target && still {
            return Err(Shed {
                retry_after: (2 * last_min).min(MAX_RETRY),
            });
        }
        Ok(())
    }

    /// Counts a send as waiting for the store until the guard is dropped
    /// or [`Queued::done`] records how long its append took.
    pub fn enter(&self) -> Queued<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        Queued { admission: self }
    }

    /// Sends waiting for the store now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn completed(&self, now: Instant, waited: Duration) {
        let mut w = self.window.lock();
        match w.start {
            Some(start) if now.saturating_duration_since(start) < self.config.interval => {
                w.min = w.min.min(waited);
            }
            Some(_) => {
                w.last = Some((now, w.min));
                w.start = Some(now);
                w.min = waited;
            }
            None => {
                w.start = Some(now);
                w.min = waited;
            }
        }
    }
}

/// A send waiting for the store.
pub struct Queued<'a> {
    admission: &'a Admission,
}

impl Queued<'_> {
    /// The append returned at `now` after `waited`.
    pub fn done(self, now: Instant, waited: Duration) {
        self.admission.completed(now, waited);
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.admission.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn admission() -> Admission {
        Admission::new(AdmissionConfig {
            target: 200 * MS,
            interval: 1000 * MS,
            max_queued: 3,
        })
    }

    /// Completions every 10 ms from `from` for `span`, each having waited
    /// `waited`.
    fn run(a: &Admission, from: Instant, span: Duration, waited: Duration) -> Instant {
        let mut t = from;
        while t < from + span {
            a.enter().done(t, waited);
            t += 10 * MS;
        }
        t
    }

    #[test]
    fn a_standing_queue_sheds_and_a_quick_append_ends_it() {
        let a = admission();
        let t0 = Instant::now();
        assert_eq!(a.check(t0, None), Ok(()), "nothing known yet");
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        let shed = a
            .check(t, None)
            .expect_err("every append waited 450 ms for a second");
        assert_eq!(shed.retry_after, 900 * MS);
        // One quick append in the current interval: admitted again.
        a.enter().done(t, 5 * MS);
        assert_eq!(a.check(t, None), Ok(()));
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_is_not_shed() {
        let a = admission();
        let t0 = Instant::now();
        // Slow for 600 ms, then quick: each interval's minimum is quick.
        let t = run(&a, t0, 600 * MS, 900 * MS);
        let t = run(&a, t, 1600 * MS, 3 * MS);
        assert_eq!(a.check(t, None), Ok(()));
    }

    #[test]
    fn an_old_verdict_expires_when_nothing_completes() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        assert!(a.check(t, None).is_err());
        // Everything shed, nothing completes: two intervals on, admit to
        // find out again.
        assert_eq!(a.check(t + 2100 * MS, None), Ok(()));
    }

    #[test]
    fn a_connection_told_to_wait_stays_refused_until_its_delay_has_passed() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        let shed = a.check(t, Some("c1")).expect_err("standing queue");
        assert_eq!(shed.retry_after, 900 * MS);
        // The queue clears at once, yet c1's sends behind the refused one
        // are refused too (order), while another connection goes through.
        a.enter().done(t, 5 * MS);
        assert_eq!(a.check(t, Some("c2")), Ok(()));
        let later = a
            .check(t + 300 * MS, Some("c1"))
            .expect_err("still waiting");
        assert_eq!(later.retry_after, 600 * MS);
        assert_eq!(
            a.check(t + 900 * MS, Some("c1")),
            Ok(()),
            "its delay has passed"
        );
    }

    #[test]
    fn the_retry_delay_is_capped() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 30_000 * MS);
        assert_eq!(a.check(t, None).unwrap_err().retry_after, MAX_RETRY);
    }

    #[test]
    fn sends_beyond_the_cap_are_shed_until_one_returns() {
        let a = admission();
        let now = Instant::now();
        let held: Vec<_> = (0..3).map(|_| a.enter()).collect();
        assert_eq!(a.queued(), 3);
        assert!(a.check(now, None).is_err(), "three waiting: the cap");
        drop(held);
        assert_eq!(a.queued(), 0);
        assert_eq!(a.check(now, None), Ok(()));
    }

    #[test]
    fn a_zero_target_never_sheds_on_latency() {
        let a = Admission::new(AdmissionConfig {
            target: Duration::ZERO,
            interval: 1000 * MS,
            max_queued: 0,
        });
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 5000 * MS);
        assert_eq!(a.check(t, None), Ok(()));
    }
}
