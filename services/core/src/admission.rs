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
//! a client that sends its outbox again in order keeps its order. After the
//! delay, its refused sends must come back in the order they were refused
//! before any other is taken: on a loaded node a connection's later sends
//! may still be in its socket when the delay ends, and a client may send a
//! new one before it hears that one in flight was refused; taken then, they
//! would be stored ahead of the sends refused before them. So every send
//! refused on a held connection joins its line, and only the line's head is
//! taken, until the line is empty (or nothing has moved for `RESUME_WAIT`,
//! for a client that gave its sends up).
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

/// How long a held connection's line may stand still before it is let go.
const RESUME_WAIT: Duration = MAX_RETRY;

/// Refused sends remembered per connection: more than a client has in
/// flight (its receive maximum), and bounded.
const MAX_LINE: usize = 256;

/// A connection told to wait.
#[derive(Debug)]
struct Held {
    /// Nothing is taken before this.
    until: Instant,
    /// The `client_msg_id`s refused, in the order they were refused.
    line: std::collections::VecDeque<String>,
    /// When the line last moved (or `until`): let go `RESUME_WAIT` after.
    moved: Instant,
}

impl Held {
    fn refuse(&mut self, client_msg_id: &str) {
        if self.line.len() < MAX_LINE && !self.line.iter().any(|k| k == client_msg_id) {
            self.line.push_back(client_msg_id.to_owned());
        }
    }
}

pub struct Admission {
    config: AdmissionConfig,
    queued: AtomicUsize,
    window: Mutex<Window>,
    /// Connections told to wait, and until when. Bounded: expired entries
    /// are dropped whenever it grows past `HELD_SWEEP`.
    held: Mutex<HashMap<String, Held>>,
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
    pub fn check(
        &self,
        now: Instant,
        connection: Option<&str>,
        client_msg_id: &str,
    ) -> Result<(), Shed> {
        // Whether `connection` is held and its line may now be empty.
        let mut in_line = false;
        if let Some(connection) = connection {
            let mut held = self.held.lock();
            if let Some(h) = held.get_mut(connection) {
                if h.until > now {
                    h.refuse(client_msg_id);
                    return Err(Shed {
                        retry_after: (h.until - now).max(Duration::from_millis(1)),
                    });
                }
                if now >= h.moved.max(h.until) + RESUME_WAIT {
                    held.remove(connection);
                } else if h.line.front().is_some_and(|k| k == client_msg_id) {
                    h.line.pop_front();
                    h.moved = now;
                    in_line = true;
                } else {
                    // Out of turn: the line's head goes first.
                    h.refuse(client_msg_id);
                    return Err(Shed {
                        retry_after: self.config.interval.max(Duration::from_secs(1)),
                    });
                }
            }
        }
        let verdict = self.verdict(now);
        if let Some(connection) = connection.filter(|_| in_line || verdict.is_err()) {
            let mut held = self.held.lock();
            match &verdict {
                Err(shed) => {
                    if held.len() >= HELD_SWEEP {
                        held.retain(|_, h| h.moved.max(h.until) + RESUME_WAIT > now);
                    }
                    let h = held.entry(connection.to_owned()).or_insert_with(|| Held {
                        until: now,
                        line: Default::default(),
                        moved: now,
                    });
                    h.until = now + shed.retry_after;
                    // A head refused again keeps its place.
                    if !h.line.iter().any(|k| k == client_msg_id) {
                        h.line.push_front(client_msg_id.to_owned());
                        h.line.truncate(MAX_LINE);
                    }
                }
                Ok(()) => {
                    if held.get(connection).is_some_and(|h| h.line.is_empty()) {
                        held.remove(connection);
                    }
                }
            }
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
        assert_eq!(a.check(t0, None, "k"), Ok(()), "nothing known yet");
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        let shed = a
            .check(t, None, "k")
            .expect_err("every append waited 450 ms for a second");
        assert_eq!(shed.retry_after, 900 * MS);
        // One quick append in the current interval: admitted again.
        a.enter().done(t, 5 * MS);
        assert_eq!(a.check(t, None, "k"), Ok(()));
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_is_not_shed() {
        let a = admission();
        let t0 = Instant::now();
        // Slow for 600 ms, then quick: each interval's minimum is quick.
        let t = run(&a, t0, 600 * MS, 900 * MS);
        let t = run(&a, t, 1600 * MS, 3 * MS);
        assert_eq!(a.check(t, None, "k"), Ok(()));
    }

    #[test]
    fn an_old_verdict_expires_when_nothing_completes() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        assert!(a.check(t, None, "k").is_err());
        // Everything shed, nothing completes: two intervals on, admit to
        // find out again.
        assert_eq!(a.check(t + 2100 * MS, None, "k"), Ok(()));
    }

    #[test]
    fn a_connection_told_to_wait_stays_refused_until_its_delay_has_passed() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        let shed = a.check(t, Some("c1"), "k1").expect_err("standing queue");
        assert_eq!(shed.retry_after, 900 * MS);
        // The queue clears at once, yet c1's sends behind the refused one
        // are refused too (order), while another connection goes through.
        a.enter().done(t, 5 * MS);
        assert_eq!(a.check(t, Some("c2"), "x"), Ok(()));
        let later = a
            .check(t + 300 * MS, Some("c1"), "k2")
            .expect_err("still waiting");
        assert_eq!(later.retry_after, 600 * MS);
        assert_eq!(
            a.check(t + 900 * MS, Some("c1"), "k1"),
            Ok(()),
            "its delay has passed"
        );
        assert_eq!(a.check(t + 900 * MS, Some("c1"), "k2"), Ok(()));
    }

    #[test]
    fn after_the_delay_the_refused_sends_go_first_in_the_order_they_were_refused() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 450 * MS);
        assert!(a.check(t, Some("c1"), "k1").is_err());
        assert!(a.check(t + MS, Some("c1"), "k2").is_err(), "behind k1");
        a.enter().done(t, 5 * MS);
        // k5 was still in the socket when the delay ended: taken now, it
        // would be stored before k1 and k2.
        let out_of_turn = a
            .check(t + 950 * MS, Some("c1"), "k5")
            .expect_err("k1 has not come back");
        assert_eq!(out_of_turn.retry_after, 1000 * MS);
        assert!(a.check(t + 951 * MS, Some("c1"), "k2").is_err(), "k1 first");
        assert_eq!(a.check(t + 960 * MS, Some("c1"), "k1"), Ok(()));
        assert_eq!(a.check(t + 961 * MS, Some("c1"), "k2"), Ok(()));
        // A new send made before the client heard that k5 was refused.
        assert!(a.check(t + 962 * MS, Some("c1"), "k6").is_err(), "k5 first");
        assert_eq!(a.check(t + 970 * MS, Some("c1"), "k5"), Ok(()));
        assert_eq!(a.check(t + 971 * MS, Some("c1"), "k6"), Ok(()));
        assert_eq!(
            a.check(t + 972 * MS, Some("c1"), "k7"),
            Ok(()),
            "line empty"
        );
        // A client that gave its first send up is not held for ever.
        let t = t + 2 * 1000 * MS;
        let t = run(&a, t, 2500 * MS, 450 * MS);
        assert!(a.check(t, Some("c3"), "q1").is_err());
        a.enter().done(t, 5 * MS);
        let resumed = t + 900 * MS + RESUME_WAIT;
        assert!(a.check(resumed - MS, Some("c3"), "q2").is_err());
        assert_eq!(a.check(resumed, Some("c3"), "q2"), Ok(()));
    }

    #[test]
    fn the_retry_delay_is_capped() {
        let a = admission();
        let t0 = Instant::now();
        let t = run(&a, t0, 2500 * MS, 30_000 * MS);
        assert_eq!(a.check(t, None, "k").unwrap_err().retry_after, MAX_RETRY);
    }

    #[test]
    fn sends_beyond_the_cap_are_shed_until_one_returns() {
        let a = admission();
        let now = Instant::now();
        let held: Vec<_> = (0..3).map(|_| a.enter()).collect();
        assert_eq!(a.queued(), 3);
        assert!(a.check(now, None, "k").is_err(), "three waiting: the cap");
        drop(held);
        assert_eq!(a.queued(), 0);
        assert_eq!(a.check(now, None, "k"), Ok(()));
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
        assert_eq!(a.check(t, None, "k"), Ok(()));
    }
}
