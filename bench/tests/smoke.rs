//! The bench tested against the real servers: a short run must report a
//! clean delivery on both targets, and must notice a lost and a duplicated
//! message when the receiver is told to lose one and count one twice.

use std::path::PathBuf;
use std::process::Command;

fn chatd() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_chat-bench"))
        .parent()
        .unwrap()
        .join("chatd");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo test --workspace` does)",
        path.display()
    );
    path
}

fn bench(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["--scenario", "smoke", "--chatd"])
        .arg(chatd())
        .args(extra)
        .output()
        .expect("running chat-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat-bench failed:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}\n{stderr}"))
}

#[test]
fn a_clean_run_against_both_targets_loses_and_duplicates_nothing() {
    let report = bench(&["--compare", "mosquitto", "--rounds", "1"]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let seq = &run["sequence"];
        assert!(seq["sent"].as_u64().unwrap() >= 100, "{run}");
        assert_eq!(seq["delivered"], seq["sent"], "{run}");
        assert_eq!(seq["lost"], 0, "{run}");
        assert_eq!(seq["duplicated"], 0, "{run}");
        assert_eq!(run["errors"], 0, "{run}");
        assert!(run["delivery"]["count"].as_u64().unwrap() > 0);
        assert!(run["ack"]["count"].as_u64().unwrap() > 0);
    }
    assert!(report["summary"]["mosquitto"]["delivery p99 ms"]["ratio"].is_number());
}

#[test]
fn injected_loss_and_duplicate_are_detected_also_across_processes() {
    // Two bench processes: the report is merged from both.
    let report = bench(&["--inject-faults", "--processes", "2"]);
    let seq = &report["runs"][0]["sequence"];
    assert_eq!(seq["lost"], 1, "{report}");
    assert_eq!(seq["duplicated"], 1, "{report}");
}
