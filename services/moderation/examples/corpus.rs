//! Prints the masking pipeline's figures on the labelled corpus:
//! `cargo run -p chat-moderation --example corpus`.

use chat_moderation::keywords::Keywords;
use chat_moderation::{Moderator, Policy, corpus};

fn main() {
    let cases = corpus::parse(include_str!("../corpus/messages.tsv"));
    let report = corpus::score(
        &Moderator::new(Policy::default(), Keywords::empty()),
        &cases,
    );
    println!("corpus: {} messages", cases.len());
    println!(
        "contact details: {}/{} caught, recall {:.1} % ({} with every category right)",
        report.detected,
        report.contact_messages,
        report.recall() * 100.0,
        report.categories_right
    );
    println!(
        "ordinary messages: {}/{} touched, false-positive rate {:.1} %",
        report.false_positives,
        report.clean_messages,
        report.false_positive_rate() * 100.0
    );
    for missed in &report.missed {
        println!("  missed: {missed:?}");
    }
    for (text, masked) in &report.wrongly_masked {
        println!("  wrongly masked: {text:?} -> {masked:?}");
    }
}
