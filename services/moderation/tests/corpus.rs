//! The labelled corpus: at least 95 % of messages with contact details are
//! caught, at most 1 % of ordinary messages are touched.

use chat_moderation::keywords::Keywords;
use chat_moderation::{Moderator, Policy, corpus};

#[test]
fn the_corpus_meets_the_recall_and_false_positive_targets() {
    let cases = corpus::parse(include_str!("../corpus/messages.tsv"));
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let report = corpus::score(
        &Moderator::new(Policy::default(), Keywords::empty()),
        &cases,
    );
    assert!(
        report.recall() >= 0.95,
        "recall {:.3}; missed: {:#?}",
        report.recall(),
        report.missed
    );
    assert!(
        report.false_positive_rate() <= 0.01,
        "false positives {:.3}: {:#?}",
        report.false_positive_rate(),
        report.wrongly_masked
    );
}
