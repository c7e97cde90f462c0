//! No storms: at most one push per (user, thread) per window. The first
//! message of a quiet thread is pushed at once; later ones in the window
//! fold into one update sent when the window closes (with the same
//! collapse key, so the device replaces the first notification). The
//! folded items are all kept, latest last: each is a queued job that is
//! only done when the update covering it goes out. Pure logic: time is
//! passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Window<T> {
    until: Instant,
    folded: Vec<T>,
}

pub struct Collapser<T> {
    window: Duration,
    open: HashMap<(String, String), Window<T>>,
}

impl<T> Collapser<T> {
    pub fn new(window: Duration) -> Self {
        Collapser {
            window,
            open: HashMap::new(),
        }
    }

    /// A notification owed to `user` for `thread`: returned when it should
    /// go out now, kept (replacing an older kept one) otherwise.
    pub fn offer(&mut self, user: &str, thread: &str, item: T, now: Instant) -> Option<T> {
        let key = (user.to_owned(), thread.to_owned());
        match self.open.get_mut(&key) {
            Some(window) if window.until > now => {
                window.folded.push(item);
                None
            }
            _ => {
                self.open.insert(
                    key,
                    Window {
                        until: now + self.window,
                        folded: Vec::new(),
                    },
                );
                Some(item)
            }
        }
    }

    /// Updates whose window closed, one per (user, thread): every item
    /// folded into it, latest last. A window that sent an update stays open
    /// for another period, so a steady stream yields one push per window,
    /// not one per message.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<T>> {
        let mut out = Vec::new();
        let window = self.window;
        self.open.retain(|_, w| {
            if w.until > now {
                return true;
            }
            if w.folded.is_empty() {
                return false;
            }
            out.push(std::mem::take(&mut w.folded));
            w.until = now + window;
            true
        });
        out
    }

    /// Every update still folded, whatever its window: for a worker that
    /// is stopping and sends them now rather than leave them to another.
    pub fn flush(&mut self) -> Vec<Vec<T>> {
        self.open
            .drain()
            .map(|(_, w)| w.folded)
            .filter(|folded| !folded.is_empty())
            .collect()
    }

    /// When the next window closes, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|w| w.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_quick_messages_make_one_push_and_one_update() {
        let mut c = Collapser::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let mut now_sent = Vec::new();
        for i in 0..10 {
            if let Some(n) = c.offer("buyer", "t1", i, t0 + Duration::from_millis(i * 100)) {
                now_sent.push(n);
            }
        }
        assert_eq!(now_sent, vec![0], "only the first goes out at once");
        assert!(c.due(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(
            c.due(t0 + Duration::from_secs(30)),
            vec![(1..10).collect::<Vec<_>>()],
            "then one update carrying the rest, latest last"
        );
        assert!(c.due(t0 + Duration::from_secs(61)).is_empty());
        // Quiet since: the next message goes out at once again.
        assert_eq!(
            c.offer("buyer", "t1", 10, t0 + Duration::from_secs(62)),
            Some(10)
        );
    }

    #[test]
    fn flush_hands_over_every_folded_update_at_once() {
        let mut c = Collapser::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(c.offer("buyer", "t1", 1, t0), Some(1));
        assert_eq!(c.offer("buyer", "t1", 2, t0), None);
        assert_eq!(c.offer("buyer", "t1", 3, t0), None);
        assert_eq!(c.offer("buyer", "t2", 4, t0), Some(4));
        assert_eq!(c.flush(), vec![vec![2, 3]], "t2 had nothing folded");
        assert!(c.flush().is_empty());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn threads_and_users_have_their_own_windows() {
        let mut c = Collapser::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(c.offer("buyer", "t1", 1, t0), Some(1));
        assert_eq!(c.offer("buyer", "t2", 2, t0), Some(2));
        assert_eq!(c.offer("other", "t1", 3, t0), Some(3));
        assert_eq!(c.offer("buyer", "t1", 4, t0), None);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(30)));
    }
}
