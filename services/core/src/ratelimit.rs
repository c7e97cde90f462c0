//! Rate limits and anti-spam. GCRA limiters (`governor`) per user for
//! messages, typing and new threads, per IP for connection attempts, per
//! caller for REST; a flood detector for the same text sent into many
//! threads; strikes that turn repeated abuse into a temporary mute.
//!
//! Limits are per process: with N gateway nodes a user spread over all of
//! them could reach N times a limit (README "Trust and safety").

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Section `[rate_limits]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Messages per user (all devices): sustained rate and burst.
    pub messages_per_minute: u32,
    pub messages_burst: u32,
    /// Messages (`send_message` only) per MQTT connection (one device).
    pub connection_messages_per_minute: u32,
    pub connection_messages_burst: u32,
    /// Typing events per user, `active` true or false (each start is also
    /// throttled per thread). Over-limit ones are dropped.
    pub typing_per_minute: u32,
    pub typing_burst: u32,
    /// Read receipts (`mark_read`) per MQTT connection.
    pub receipts_per_minute: u32,
    pub receipts_burst: u32,
    /// Refused publishes (garbage, forbidden topics, limits) per MQTT
    /// connection answered with an error; beyond it they are dropped
    /// without an answer, and `refusals_to_disconnect` more within the
    /// minute close the connection (MQTT 5: `DISCONNECT 0x96`).
    pub refusals_per_minute: u32,
    pub refusals_burst: u32,
    pub refusals_to_disconnect: u32,
    /// Threads a buyer may start per hour (opening an existing one is free).
    pub new_threads_per_hour: u32,
    /// Image upload slots per user: each may hold up to
    /// `attachments.max_bytes` of disk until it is used or swept.
    pub uploads_per_hour: u32,
    pub uploads_burst: u32,
    /// The same text into more than this many threads within the window
    /// is a flood.
    pub duplicate_threads: usize,
    pub duplicate_window_secs: u64,
    /// MQTT connection attempts per IP address.
    pub connects_per_minute_per_ip: u32,
    pub connects_burst: u32,
    /// Addresses exempt from the per-IP connection limit: a reverse proxy
    /// on this machine, say, whose clients all share its address. Empty by
    /// default: loopback is limited like anyone.
    pub connect_exempt_ips: Vec<IpAddr>,
    /// REST requests per caller (token subject, else IP address).
    pub rest_per_minute: u32,
    pub rest_burst: u32,
    /// This many limited attempts within the window mute the user.
    pub strikes_to_mute: usize,
    pub strike_window_secs: u64,
    pub mute_secs: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            messages_per_minute: 120,
            messages_burst: 30,
            connection_messages_per_minute: 60,
            connection_messages_burst: 20,
            typing_per_minute: 120,
            typing_burst: 20,
            receipts_per_minute: 120,
            receipts_burst: 30,
            refusals_per_minute: 30,
            refusals_burst: 20,
            refusals_to_disconnect: 20,
            new_threads_per_hour: 30,
            uploads_per_hour: 60,
            uploads_burst: 10,
            duplicate_threads: 5,
            duplicate_window_secs: 600,
            connects_per_minute_per_ip: 120,
            connects_burst: 60,
            connect_exempt_ips: Vec::new(),
            rest_per_minute: 600,
            rest_burst: 100,
            strikes_to_mute: 20,
            strike_window_secs: 60,
            mute_secs: 300,
        }
    }
}

/// Refused connection attempts per IP and minute that get a log line and
/// an audit row.
const REFUSED_CONNECTS_RECORDED_PER_MINUTE: u32 = 10;

/// What becomes of a refused publish on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Within the budget: tell the sender why.
    Tell,
    /// Over it: drop without an answer (answers cost memory and bandwidth
    /// of their own, queued in an offline session).
    Quiet,
    /// Still refused after that: close the connection.
    Disconnect,
}

/// Why something was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Too fast: wait this long.
    RateLimited(Duration),
    /// Muted for repeated abuse: this long left.
    Muted(Duration),
}

impl Limited {
    pub fn retry_after(self) -> Duration {
        match self {
            Limited::RateLimited(d) | Limited::Muted(d) => d,
        }
    }
}

fn quota(per_period: u32, burst: u32, period: Duration) -> Quota {
    let per = NonZeroU32::new(per_period.max(1)).expect("nonzero");
    let burst = NonZeroU32::new(burst.max(1)).expect("nonzero");
    Quota::with_period(period / per.get())
        .expect("a positive period")
        .allow_burst(burst)
}

/// A text a user sent recently: the threads it went to since `since`
/// (hashes: only equality matters, and a collision can only miss a flood).
struct Flood {
    text: u64,
    since: Instant,
    threads: Vec<u64>,
}

/// Distinct texts remembered per user. A flood repeats one text, so it
/// stays among the newest; the bound keeps a user's memory fixed however
/// many different messages they send within the window.
const RECENT_TEXTS: usize = 16;

/// The texts' and threads' keys are compared within this process only,
/// so a fast hash will do (SipHash over every character of every message
/// was most of the flood check); a collision merely counts two texts as one.
fn hasher() -> impl Hasher {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6368_6174_6420_666c).build_hasher()
}

/// A text's identity for flood detection: trimmed, case folded, hashed
/// without building the folded copy.
fn text_key(text: &str) -> u64 {
    let mut hasher = hasher();
    for c in text.trim().chars() {
        if c.is_ascii() {
            hasher.write_u32(u32::from(c.to_ascii_lowercase()));
        } else {
            for lower in c.to_lowercase() {
                hasher.write_u32(u32::from(lower));
            }
        }
    }
    hasher.finish()
}

fn hash_of(value: &str) -> u64 {
    let mut hasher = hasher();
    value.hash(&mut hasher);
    hasher.finish()
}

pub struct RateLimiter {
    config: RateLimitConfig,
    clock: DefaultClock,
    messages: DefaultKeyedRateLimiter<String>,
    connections: DefaultKeyedRateLimiter<String>,
    typing: DefaultKeyedRateLimiter<String>,
    receipts: DefaultKeyedRateLimiter<String>,
    refusals: DefaultKeyedRateLimiter<String>,
    /// Refusals past the budget, per connection, since it was last within.
    quiet_refusals: Mutex<HashMap<String, u32>>,
    threads: DefaultKeyedRateLimiter<String>,
    uploads: DefaultKeyedRateLimiter<String>,
    connects: DefaultKeyedRateLimiter<IpAddr>,
    /// Refused connection attempts logged and audited per IP.
    refused_connects: DefaultKeyedRateLimiter<IpAddr>,
    rest: DefaultKeyedRateLimiter<String>,
    /// Per user, their recent distinct texts, least recently sent first.
    floods: Mutex<HashMap<String, VecDeque<Flood>>>,
    strikes: Mutex<HashMap<String, VecDeque<Instant>>>,
    muted: Mutex<HashMap<String, Instant>>,
    /// Users muted since the last `take_new_mutes` (for the audit log).
    newly_muted: Mutex<Vec<String>>,
    checks: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let minute = Duration::from_secs(60);
        RateLimiter {
            messages: DefaultKeyedRateLimiter::keyed(quota(
                config.messages_per_minute,
                config.messages_burst,
                minute,
            )),
            connections: DefaultKeyedRateLimiter::keyed(quota(
                config.connection_messages_per_minute,
                config.connection_messages_burst,
                minute,
            )),
            typing: DefaultKeyedRateLimiter::keyed(quota(
                config.typing_per_minute,
                config.typing_burst,
                minute,
            )),
            receipts: DefaultKeyedRateLimiter::keyed(quota(
                config.receipts_per_minute,
                config.receipts_burst,
                minute,
            )),
            refusals: DefaultKeyedRateLimiter::keyed(quota(
                config.refusals_per_minute,
                config.refusals_burst,
                minute,
            )),
            quiet_refusals: Mutex::new(HashMap::new()),
            threads: DefaultKeyedRateLimiter::keyed(quota(
                config.new_threads_per_hour,
                config.new_threads_per_hour,
                Duration::from_secs(3600),
            )),
            uploads: DefaultKeyedRateLimiter::keyed(quota(
                config.uploads_per_hour,
                config.uploads_burst,
                Duration::from_secs(3600),
            )),
            connects: DefaultKeyedRateLimiter::keyed(quota(
                config.connects_per_minute_per_ip,
                config.connects_burst,
                minute,
            )),
            refused_connects: DefaultKeyedRateLimiter::keyed(quota(
                REFUSED_CONNECTS_RECORDED_PER_MINUTE,
                REFUSED_CONNECTS_RECORDED_PER_MINUTE,
                minute,
            )),
            rest: DefaultKeyedRateLimiter::keyed(quota(
                config.rest_per_minute,
                config.rest_burst,
                minute,
            )),
            clock: DefaultClock::default(),
            floods: Mutex::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
            muted: Mutex::new(HashMap::new()),
            newly_muted: Mutex::new(Vec::new()),
            checks: std::sync::atomic::AtomicU64::new(0),
            config,
        }
    }

    /// Forgets idle keys now and then, so memory follows active users.
    fn housekeeping(&self) {
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !n.is_multiple_of(50_000) || n == 0 {
            return;
        }
        for limiter in [
            &self.messages,
            &self.connections,
            &self.typing,
            &self.receipts,
            &self.refusals,
            &self.threads,
            &self.uploads,
            &self.rest,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.connects.retain_recent();
        self.refused_connects.retain_recent();
        self.quiet_refusals.lock().clear();
        let now = Instant::now();
        let window = Duration::from_secs(self.config.duplicate_window_secs);
        self.floods.lock().retain(|_, recent| {
            recent.retain(|f| now.duration_since(f.since) <= window);
            !recent.is_empty()
        });
        self.muted.lock().retain(|_, until| *until > now);
        let strike_window = Duration::from_secs(self.config.strike_window_secs);
        self.strikes.lock().retain(|_, s| {
            s.back()
                .is_some_and(|t| now.duration_since(*t) < strike_window)
        });
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), Duration> {
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// A limited attempt counts as a strike; enough strikes mute.
    fn strike(&self, user_id: &str, wait: Duration) -> Limited {
        let now = Instant::now();
        let window = Duration::from_secs(self.config.strike_window_secs);
        let mut strikes = self.strikes.lock();
        let list = strikes.entry(user_id.to_owned()).or_default();
        list.push_back(now);
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            list.pop_front();
        }
        if list.len() >= self.config.strikes_to_mute {
            list.clear();
            let mute = Duration::from_secs(self.config.mute_secs);
            self.muted.lock().insert(user_id.to_owned(), now + mute);
            self.newly_muted.lock().push(user_id.to_owned());
            tracing::warn!(user_id, ?mute, "user muted for repeated abuse");
            return Limited::Muted(mute);
        }
        Limited::RateLimited(wait.max(Duration::from_millis(1)))
    }

    fn muted_for(&self, user_id: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut muted = self.muted.lock();
        match muted.get(user_id) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                muted.remove(user_id);
                None
            }
            None => None,
        }
    }

    /// A message `user_id` sends into `thread_id`.
    pub fn check_message(&self, user_id: &str, thread_id: &str, text: &str) -> Result<(), Limited> {
        self.housekeeping();
        if let Some(left) = self.muted_for(user_id) {
            return Err(Limited::Muted(left));
        }
        if let Err(wait) = self.check(&self.messages, user_id) {
            return Err(self.strike(user_id, wait));
        }
        // The same text into many threads: spam, whatever the pace.
        let (text, thread) = (text_key(text), hash_of(thread_id));
        let now = Instant::now();
        let window = Duration::from_secs(self.config.duplicate_window_secs);
        let mut floods = self.floods.lock();
        if !floods.contains_key(user_id) {
            floods.insert(user_id.to_owned(), VecDeque::new());
        }
        let recent = floods.get_mut(user_id).expect("inserted above");
        recent.retain(|f| now.duration_since(f.since) <= window);
        // Newest use last: a repeated text is the last to be forgotten.
        let flood = match recent.iter().position(|f| f.text == text) {
            Some(i) => recent.remove(i).expect("found above"),
            None => {
                if recent.len() >= RECENT_TEXTS {
                    recent.pop_front();
                }
                Flood {
                    text,
                    since: now,
                    threads: Vec::new(),
                }
            }
        };
        recent.push_back(flood);
        let flood = recent.back_mut().expect("pushed above");
        if !flood.threads.contains(&thread) {
            if flood.threads.len() >= self.config.duplicate_threads {
                let wait = window.saturating_sub(now.duration_since(flood.since));
                drop(floods);
                return Err(self.strike(user_id, wait));
            }
            flood.threads.push(thread);
        }
        Ok(())
    }

    /// A `send_message` on connection `client_id` of `user_id`. (A mute
    /// is the send path's business: its refusal is the ack.)
    pub fn check_connection(&self, user_id: &str, client_id: &str) -> Result<(), Limited> {
        self.housekeeping();
        self.check(&self.connections, client_id)
            .map_err(|wait| self.strike(user_id, wait))
    }

    /// A `mark_read` on connection `client_id`: its own budget, so a
    /// reader scrolling through threads never mutes their sending.
    pub fn check_receipt(&self, client_id: &str) -> Result<(), Limited> {
        self.housekeeping();
        self.check(&self.receipts, client_id)
            .map_err(Limited::RateLimited)
    }

    /// A publish refused on connection `client_id`: answer, drop, or
    /// disconnect.
    pub fn refusal(&self, client_id: &str) -> Refusal {
        self.housekeeping();
        let mut quiet = self.quiet_refusals.lock();
        if self.check(&self.refusals, client_id).is_ok() {
            quiet.remove(client_id);
            return Refusal::Tell;
        }
        let over = quiet.entry(client_id.to_owned()).or_insert(0);
        *over += 1;
        if *over > self.config.refusals_to_disconnect {
            *over = 0;
            Refusal::Disconnect
        } else {
            Refusal::Quiet
        }
    }

    /// Users muted since the last call.
    pub fn take_new_mutes(&self) -> Vec<String> {
        std::mem::take(&mut *self.newly_muted.lock())
    }

    /// A typing event, started or stopped (both are relayed, so both
    /// count); limited ones are dropped (typing is never an error).
    pub fn allow_typing(&self, user_id: &str) -> bool {
        self.housekeeping();
        self.muted_for(user_id).is_none() && self.check(&self.typing, user_id).is_ok()
    }

    /// A buyer starting a thread that does not exist yet.
    pub fn check_new_thread(&self, user_id: &str) -> Result<(), Limited> {
        if let Some(left) = self.muted_for(user_id) {
            return Err(Limited::Muted(left));
        }
        self.check(&self.threads, user_id)
            .map_err(|wait| self.strike(user_id, wait))
    }

    /// An image upload slot for `user_id`: slots are disk until used or
    /// swept, so they are counted.
    pub fn check_upload(&self, user_id: &str) -> Result<(), Limited> {
        self.housekeeping();
        self.check(&self.uploads, user_id)
            .map_err(|wait| self.strike(user_id, wait))
    }

    /// An MQTT connection attempt from `ip`. Addresses in
    /// `connect_exempt_ips` are not limited; 0 per minute turns the limit
    /// off (behind a load balancer that hides client addresses).
    pub fn allow_connect(&self, ip: IpAddr) -> bool {
        if self.config.connects_per_minute_per_ip == 0
            || self.config.connect_exempt_ips.contains(&ip)
        {
            return true;
        }
        self.housekeeping();
        self.connects.check_key(&ip).is_ok()
    }

    /// Whether a refused connection attempt from `ip` is still logged and
    /// audited: a few a minute per address, counted in metrics beyond.
    pub fn record_refused_connect(&self, ip: Option<IpAddr>) -> bool {
        let ip = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        self.refused_connects.check_key(&ip).is_ok()
    }

    /// A REST request by `caller` (token subject or IP address).
    pub fn check_rest(&self, caller: &str) -> Result<(), Duration> {
        self.housekeeping();
        self.check(&self.rest, caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(config: RateLimitConfig) -> RateLimiter {
        RateLimiter::new(config)
    }

    #[test]
    fn a_burst_passes_then_the_sender_waits_and_others_are_unaffected() {
        let l = limiter(RateLimitConfig {
            messages_per_minute: 60,
            messages_burst: 5,
            ..RateLimitConfig::default()
        });
        for i in 0..5 {
            assert!(l.check_message("spammer", "t1", &format!("m{i}")).is_ok());
        }
        match l.check_message("spammer", "t1", "m5") {
            Err(Limited::RateLimited(wait)) => {
                assert!(
                    wait <= Duration::from_secs(1) && wait > Duration::ZERO,
                    "{wait:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(l.check_message("someone-else", "t2", "hello").is_ok());
    }

    #[test]
    fn one_connection_is_limited_before_the_user() {
        let l = limiter(RateLimitConfig {
            connection_messages_burst: 2,
            ..RateLimitConfig::default()
        });
        assert!(l.check_connection("u", "u:phone").is_ok());
        assert!(l.check_connection("u", "u:phone").is_ok());
        assert!(matches!(
            l.check_connection("u", "u:phone"),
            Err(Limited::RateLimited(_))
        ));
        assert!(
            l.check_connection("u", "u:web").is_ok(),
            "another device of the same user"
        );
    }

    #[test]
    fn sends_typing_and_receipts_have_budgets_of_their_own() {
        let l = limiter(RateLimitConfig {
            connection_messages_burst: 2,
            typing_burst: 3,
            receipts_burst: 2,
            ..RateLimitConfig::default()
        });
        // A reader and a typist: none of it touches the send budget.
        assert!((0..3).all(|_| l.allow_typing("u")));
        assert!(!l.allow_typing("u"), "started or stopped, typing counts");
        assert!(l.check_receipt("u:phone").is_ok() && l.check_receipt("u:phone").is_ok());
        assert!(matches!(
            l.check_receipt("u:phone"),
            Err(Limited::RateLimited(_))
        ));
        assert!(l.check_connection("u", "u:phone").is_ok());
        assert!(l.check_connection("u", "u:phone").is_ok());
        assert!(l.check_connection("u", "u:phone").is_err());
    }

    #[test]
    fn refusals_are_answered_then_dropped_then_the_connection_closed() {
        let l = limiter(RateLimitConfig {
            refusals_per_minute: 1,
            refusals_burst: 3,
            refusals_to_disconnect: 4,
            ..RateLimitConfig::default()
        });
        let verdicts: Vec<Refusal> = (0..8).map(|_| l.refusal("bad:1")).collect();
        use Refusal::*;
        assert_eq!(
            verdicts,
            [Tell, Tell, Tell, Quiet, Quiet, Quiet, Quiet, Disconnect]
        );
        assert_eq!(l.refusal("good:1"), Tell, "per connection");
    }

    #[test]
    fn the_same_text_into_many_threads_is_a_flood() {
        let l = limiter(RateLimitConfig {
            duplicate_threads: 3,
            ..RateLimitConfig::default()
        });
        for t in ["t1", "t2", "t3"] {
            assert!(l.check_message("u", t, "Mua ngay giá rẻ!").is_ok());
        }
        // Again in a thread already reached: fine (a retry, a repeat).
        assert!(l.check_message("u", "t1", "mua ngay giá rẻ!").is_ok());
        assert!(matches!(
            l.check_message("u", "t4", "Mua ngay giá rẻ!"),
            Err(Limited::RateLimited(_))
        ));
        assert!(l.check_message("u", "t4", "a different text").is_ok());
    }

    #[test]
    fn a_flood_between_other_texts_is_caught_and_a_user_holds_a_bounded_memory() {
        let l = limiter(RateLimitConfig {
            duplicate_threads: 3,
            messages_burst: 100_000,
            messages_per_minute: 100_000,
            ..RateLimitConfig::default()
        });
        // Ordinary chat: thousands of different texts, each in one thread.
        for i in 0..5_000 {
            assert!(l.check_message("u", "t1", &format!("giá {i}k nhé")).is_ok());
        }
        assert_eq!(l.floods.lock()["u"].len(), RECENT_TEXTS);
        // The spam text, with a few others in between each copy.
        for (n, t) in ["t2", "t3", "t4"].into_iter().enumerate() {
            assert!(l.check_message("u", t, "  SALE 50% inbox ngay ").is_ok());
            for i in 0..RECENT_TEXTS - 2 {
                assert!(l.check_message("u", "t1", &format!("{n} khác {i}")).is_ok());
            }
        }
        assert!(matches!(
            l.check_message("u", "t5", "sale 50% INBOX ngay"),
            Err(Limited::RateLimited(_))
        ));
    }

    #[test]
    fn repeated_abuse_mutes_for_a_while() {
        let l = limiter(RateLimitConfig {
            messages_burst: 1,
            messages_per_minute: 1,
            strikes_to_mute: 3,
            mute_secs: 300,
            ..RateLimitConfig::default()
        });
        assert!(l.check_message("u", "t", "1").is_ok());
        assert!(matches!(
            l.check_message("u", "t", "2"),
            Err(Limited::RateLimited(_))
        ));
        assert!(matches!(
            l.check_message("u", "t", "3"),
            Err(Limited::RateLimited(_))
        ));
        assert!(matches!(
            l.check_message("u", "t", "4"),
            Err(Limited::Muted(_))
        ));
        match l.check_message("u", "t", "5") {
            Err(Limited::Muted(left)) => assert!(left > Duration::from_secs(290)),
            other => panic!("{other:?}"),
        }
        assert!(!l.allow_typing("u"), "muted users do not type either");
        assert!(l.allow_typing("v"));
    }

    #[test]
    fn connection_attempts_are_limited_per_address() {
        let l = limiter(RateLimitConfig {
            connects_per_minute_per_ip: 60,
            connects_burst: 2,
            ..RateLimitConfig::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.allow_connect(a) && l.allow_connect(a));
        assert!(!l.allow_connect(a));
        assert!(l.allow_connect(b));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.allow_connect(local) && l.allow_connect(local));
        assert!(!l.allow_connect(local), "loopback is limited like anyone");
        let proxied = limiter(RateLimitConfig {
            connects_burst: 2,
            connect_exempt_ips: vec![local],
            ..RateLimitConfig::default()
        });
        assert!(
            (0..100).all(|_| proxied.allow_connect(local)),
            "an exempt proxy is not limited"
        );
    }
}
