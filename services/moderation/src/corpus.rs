//! Scoring the pipeline on a labelled corpus (`corpus/messages.tsv`):
//! recall on messages with contact details, false positives on ordinary
//! product talk. Used by the corpus test and by
//! `cargo run -p chat-moderation --example corpus`.

use crate::{Action, Category, Moderator};

/// Categories that count as contact details.
const CONTACT: &[Category] = &[
    Category::Phone,
    Category::Email,
    Category::Link,
    Category::SocialHandle,
    Category::BankAccount,
];

#[derive(Debug, Clone)]
pub struct Case {
    pub expected: Vec<Category>,
    pub text: String,
}

/// Parses the TSV: `categories<TAB>text`, `#` comments, `\n` escapes.
pub fn parse(tsv: &str) -> Vec<Case> {
    tsv.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let (labels, text) = line.split_once('\t')?;
            let expected = if labels == "clean" {
                Vec::new()
            } else {
                labels
                    .split(',')
                    .filter_map(|l| match l.trim() {
                        "phone" => Some(Category::Phone),
                        "email" => Some(Category::Email),
                        "link" => Some(Category::Link),
                        "social_handle" => Some(Category::SocialHandle),
                        "bank_account" => Some(Category::BankAccount),
                        _ => None,
                    })
                    .collect()
            };
            Some(Case {
                expected,
                text: text.replace("\\n", "\n"),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub contact_messages: usize,
    pub detected: usize,
    /// Detected with every expected category among the findings.
    pub categories_right: usize,
    pub clean_messages: usize,
    pub false_positives: usize,
    /// The texts that went wrong, for tuning.
    pub missed: Vec<String>,
    pub wrongly_masked: Vec<(String, String)>,
}

impl Report {
    pub fn recall(&self) -> f64 {
        self.detected as f64 / self.contact_messages.max(1) as f64
    }

    pub fn false_positive_rate(&self) -> f64 {
        self.false_positives as f64 / self.clean_messages.max(1) as f64
    }
}

pub fn score(moderator: &Moderator, cases: &[Case]) -> Report {
    let mut report = Report::default();
    for case in cases {
        let outcome = moderator.moderate(&case.text, &[]);
        let found: Vec<Category> = outcome
            .findings
            .iter()
            .filter(|f| f.action >= Action::Mask && CONTACT.contains(&f.category))
            .map(|f| f.category)
            .collect();
        if case.expected.is_empty() {
            report.clean_messages += 1;
            if !found.is_empty() {
                report.false_positives += 1;
                report
                    .wrongly_masked
                    .push((case.text.clone(), outcome.text.clone()));
            }
        } else {
            report.contact_messages += 1;
            if found.is_empty() {
                report.missed.push(case.text.clone());
            } else {
                report.detected += 1;
                if case.expected.iter().all(|c| found.contains(c)) {
                    report.categories_right += 1;
                }
            }
        }
    }
    report
}
