//! Hand-overs a persistence worker fails on. A worker acknowledges a
//! hand-over only after processing it, so one that crashes the worker would
//! come back after every restart, forever, and hold one slot of the
//! worker's in-flight window each time. Two defences:
//!
//! - a panic while processing is caught and the hand-over set aside at once;
//! - a crash that no unwinding survives (abort, stack overflow, OOM kill) is
//!   counted: the broker marks a redelivered hand-over `DUP`, and before
//!   processing one the worker writes its delivery count to a small file
//!   (the [`Ledger`]), removed once it is processed. Past
//!   `persist.max_deliveries` it is set aside without being processed.
//!   Redeliveries are processed one at a time, so that a crash counts
//!   against the hand-over that caused it only.
//!
//! Setting aside (`dead_letter`) means: an audit entry, a failed ack
//! (`internal`) to its sender, its payload kept in `dead-letters/` of the
//! data directory (up to [`MAX_KEPT`] files) for the operator, and the
//! hand-over acknowledged. First deliveries cost nothing here.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Payloads kept at most (each at most `limits.max_payload_bytes`); beyond
/// that only the audit log records them.
pub const MAX_KEPT: usize = 1000;

/// A hand-over's identity across deliveries: its topic and payload.
pub fn fingerprint(topic: &str, payload: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(topic.as_bytes());
    hash.update([0]);
    hash.update(payload);
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Delivery counts of redelivered hand-overs being processed.
pub struct Ledger {
    dir: PathBuf,
    max_deliveries: u32,
}

impl Ledger {
    pub fn open(data_dir: &Path, worker: &str, max_deliveries: u32) -> std::io::Result<Ledger> {
        let dir = data_dir.join("persist-attempts").join(worker);
        std::fs::create_dir_all(&dir)?;
        Ok(Ledger {
            dir,
            max_deliveries: max_deliveries.max(1),
        })
    }

    /// Counts one more delivery of a redelivered hand-over, durably (it
    /// must survive the crash it may cause). `Ok(false)`: it has been
    /// delivered more than `max_deliveries` times; set it aside.
    pub fn admit(&self, fingerprint: &str) -> std::io::Result<bool> {
        let path = self.dir.join(fingerprint);
        let seen: u32 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            // A redelivery we have no record of: its first delivery
            // crashed us before anything was written.
            .unwrap_or(1);
        let now = seen + 1;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(now.to_string().as_bytes())?;
        file.sync_all()?;
        Ok(now <= self.max_deliveries)
    }

    /// The hand-over was processed (or set aside): forget it.
    pub fn done(&self, fingerprint: &str) {
        let _ = std::fs::remove_file(self.dir.join(fingerprint));
    }
}

/// Keeps a set-aside payload for the operator; `None` when the folder is
/// full or cannot be written (the audit entry still says what happened).
pub fn keep(data_dir: &Path, thread: &str, sender: &str, payload: &[u8]) -> Option<PathBuf> {
    let dir = data_dir.join("dead-letters");
    std::fs::create_dir_all(&dir).ok()?;
    if std::fs::read_dir(&dir).ok()?.count() >= MAX_KEPT {
        return None;
    }
    let path = dir.join(format!(
        "{}-{thread}-{sender}.msgpack",
        chat_core::now_millis()
    ));
    std::fs::write(&path, payload).ok()?;
    Some(path)
}

/// Test-only faults, compiled into debug builds only: the e2e suite makes
/// a worker panic, or abort, on a hand-over whose payload contains the
/// marker in `CHATD_FAULT_PERSIST` (`panic:<marker>` or `abort:<marker>`).
#[cfg(debug_assertions)]
pub fn inject_fault(payload: &[u8]) {
    use std::sync::OnceLock;
    static FAULT: OnceLock<Option<(bool, Vec<u8>)>> = OnceLock::new();
    let fault = FAULT.get_or_init(|| {
        let spec = std::env::var("CHATD_FAULT_PERSIST").ok()?;
        let (kind, marker) = spec.split_once(':')?;
        Some((kind == "abort", marker.as_bytes().to_vec()))
    });
    if let Some((abort, marker)) = fault
        && !marker.is_empty()
        && payload
            .windows(marker.len())
            .any(|w| w == marker.as_slice())
    {
        if *abort {
            eprintln!("fault injection: aborting on a hand-over");
            std::process::abort();
        }
        panic!("fault injection: panicking on a hand-over");
    }
}

#[cfg(not(debug_assertions))]
pub fn inject_fault(_payload: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_is_admitted_until_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), "w1", 3).unwrap();
        let key = fingerprint("svc/persist/t/u", b"payload");
        assert_eq!(key.len(), 32);
        assert_ne!(key, fingerprint("svc/persist/t/v", b"payload"));
        // First delivery crashed unrecorded; redeliveries 2 and 3 pass.
        assert!(ledger.admit(&key).unwrap());
        assert!(ledger.admit(&key).unwrap());
        // The count survives a restart of the worker.
        let ledger = Ledger::open(dir.path(), "w1", 3).unwrap();
        assert!(
            !ledger.admit(&key).unwrap(),
            "a fourth delivery is set aside"
        );
        ledger.done(&key);
        assert!(ledger.admit(&key).unwrap(), "forgotten once done");
    }

    #[test]
    fn kept_payloads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let kept = keep(dir.path(), "t", "u", b"x").expect("kept");
        assert_eq!(std::fs::read(kept).unwrap(), b"x");
        for i in 0..MAX_KEPT {
            std::fs::write(dir.path().join("dead-letters").join(i.to_string()), b"").unwrap();
        }
        assert_eq!(keep(dir.path(), "t", "u", b"y"), None);
    }
}
