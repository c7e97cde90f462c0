//! The masking pipeline's cost per message, on the corpus (typical chat)
//! and on worst cases (4,000 characters — the longest message — of digits
//! and separators, of spelled digits, of near-addresses):
//! `cargo run --release -p chat-moderation --example cost`.

use std::time::Instant;

use chat_moderation::keywords::Keywords;
use chat_moderation::{Moderator, Policy, corpus};

fn percentiles(mut micros: Vec<f64>) -> (f64, f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), micros[micros.len() - 1])
}

fn measure(moderator: &Moderator, texts: &[String], rounds: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(texts.len() * rounds);
    for _ in 0..rounds {
        for text in texts {
            let started = Instant::now();
            let outcome = moderator.moderate(text, &[]);
            out.push(started.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(outcome);
        }
    }
    out
}

fn repeat_to(piece: &str, chars: usize) -> String {
    piece.chars().cycle().take(chars).collect()
}

fn main() {
    // A realistic admin list: a few hundred keywords.
    let block: Vec<String> = (0..200).map(|i| format!("từ cấm {i}")).collect();
    let flag: Vec<String> = (0..200).map(|i| format!("cần xem {i}")).collect();
    let moderator = Moderator::new(Policy::default(), Keywords::new(&block, &flag));
    let typical: Vec<String> = corpus::parse(include_str!("../corpus/messages.tsv"))
        .into_iter()
        .map(|c| c.text)
        .collect();
    let worst = [
        ("digits and separators", repeat_to("0 9 1 2 . 3 4 - ", 4000)),
        (
            "spelled digits",
            repeat_to("không chín một hai ba bốn năm sáu bảy tám ", 4000),
        ),
        (
            "near-addresses",
            repeat_to("lan a còng gmail chấm com chấm vn ", 4000),
        ),
        (
            "plain Vietnamese",
            repeat_to("Dạ shop còn hàng ạ, bạn đặt size nào ạ? ", 4000),
        ),
    ];
    println!("chat-moderation cost per message (one core, release build)");
    let (p50, p99, max) = percentiles(measure(&moderator, &typical, 200));
    println!(
        "  typical (corpus, {} messages × 200): p50 {p50:.1} µs  p99 {p99:.1} µs  max {max:.1} µs",
        typical.len()
    );
    for (name, text) in worst {
        let (p50, p99, max) = percentiles(measure(&moderator, &[text], 200));
        println!(
            "  worst case, 4,000 chars of {name}: p50 {p50:.0} µs  p99 {p99:.0} µs  max {max:.0} µs"
        );
    }
}
