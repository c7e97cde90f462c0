//! What the receivers saw, checked against what the senders sent: lost,
//! duplicated and out-of-order messages by per-stream sequence numbers,
//! and latencies in HDR histograms. Pure: no I/O, unit-tested.

use std::collections::HashMap;

use hdrhistogram::Histogram;

/// One direction of one pair (buyer→seller or seller→buyer).
pub type StreamId = u32;

#[derive(Default)]
struct StreamState {
    seen: Vec<bool>,
    highest: Option<u32>,
    duplicates: u64,
    out_of_order: u64,
}

/// Sequence bookkeeping of every stream.
#[derive(Default)]
pub struct SequenceTracker {
    sent: HashMap<StreamId, u32>,
    received: HashMap<StreamId, StreamState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SequenceReport {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl SequenceTracker {
    /// The sender of `stream` has sent messages `0..count`.
    pub fn sent(&mut self, stream: StreamId, count: u32) {
        let entry = self.sent.entry(stream).or_default();
        *entry = (*entry).max(count);
    }

    /// A receiver got message `seq` of `stream`.
    pub fn received(&mut self, stream: StreamId, seq: u32) {
        let state = self.received.entry(stream).or_default();
        let index = seq as usize;
        if state.seen.len() <= index {
            state.seen.resize(index + 1, false);
        }
        if state.seen[index] {
            state.duplicates += 1;
            return;
        }
        state.seen[index] = true;
        match state.highest {
            Some(h) if seq < h => state.out_of_order += 1,
            _ => state.highest = Some(seq),
        }
    }

    pub fn report(&self) -> SequenceReport {
        let mut r = SequenceReport::default();
        for (stream, &count) in &self.sent {
            r.sent += u64::from(count);
            let delivered = self.received.get(stream).map_or(0, |s| {
                s.seen.iter().take(count as usize).filter(|x| **x).count() as u64
            });
            r.delivered += delivered;
            r.lost += u64::from(count) - delivered;
        }
        for state in self.received.values() {
            r.duplicated += state.duplicates;
            r.out_of_order += state.out_of_order;
        }
        r
    }
}

/// Latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_run_reports_nothing_wrong() {
        let mut t = SequenceTracker::default();
        t.sent(1, 3);
        for seq in 0..3 {
            t.received(1, seq);
        }
        let r = t.report();
        assert_eq!(
            (r.sent, r.delivered, r.lost, r.duplicated, r.out_of_order),
            (3, 3, 0, 0, 0)
        );
    }

    #[test]
    fn detects_a_lost_a_duplicated_and_a_reordered_message() {
        let mut t = SequenceTracker::default();
        t.sent(7, 5);
        t.sent(8, 2);
        for seq in [0, 2, 1, 2, 4] {
            t.received(7, seq);
        }
        t.received(8, 0);
        t.received(8, 1);
        let r = t.report();
        assert_eq!(r.sent, 7);
        assert_eq!(r.lost, 1, "seq 3 of stream 7 never arrived");
        assert_eq!(r.duplicated, 1, "seq 2 of stream 7 arrived twice");
        assert_eq!(r.out_of_order, 1, "seq 1 of stream 7 arrived after 2");
        assert_eq!(r.delivered, 6);
    }

    #[test]
    fn a_stream_nobody_received_is_all_lost() {
        let mut t = SequenceTracker::default();
        t.sent(1, 4);
        assert_eq!(t.report().lost, 4);
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us * 10).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 5.0).abs() < 0.05, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.05, "{p:?}");
    }
}
