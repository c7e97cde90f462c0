//! Trust and safety for marketplace chat, as pure functions: what to hide,
//! refuse or flag in a message before it is stored and delivered.
//!
//! The pipeline: the text's folded [`view::View`] (NFKC, no diacritics,
//! look-alikes folded, each char mapped back to the original bytes) →
//! tokens and digit runs ([`tokens`]: spelled, spaced, disguised digits
//! read back as numbers) → detectors (phone numbers validated against
//! Vietnam's numbering plan, e-mails with spelled `@`/`.`, links, social
//! handles, bank accounts, numbers split over the sender's last messages,
//! admin keywords) → one [`Outcome`]: the text with each finding the
//! [`Policy`] masks replaced by a visible placeholder, whether it is
//! blocked or flagged, and the findings with their originals (for the
//! moderation record only).

pub mod corpus;
pub mod email;
pub mod keywords;
pub mod links;
pub mod phone;
pub mod tokens;
pub mod view;

use serde::{Deserialize, Serialize};

use crate::keywords::{Keywords, ListKind};
use crate::view::View;

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Phone,
    Email,
    Link,
    SocialHandle,
    BankAccount,
    /// A bare mention of another channel (`ib zalo nhé`).
    ChannelMention,
    /// An admin keyword (its list decides the action).
    Keyword,
}

impl Category {
    /// The visible placeholder a masked finding becomes.
    pub fn placeholder(self) -> &'static str {
        match self {
            Category::Phone => "[ẩn số điện thoại]",
            Category::Email => "[ẩn email]",
            Category::Link => "[ẩn liên kết]",
            Category::SocialHandle => "[ẩn liên hệ ngoài sàn]",
            Category::BankAccount => "[ẩn số tài khoản]",
            Category::ChannelMention | Category::Keyword => "[***]",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Phone => "phone",
            Category::Email => "email",
            Category::Link => "link",
            Category::SocialHandle => "social_handle",
            Category::BankAccount => "bank_account",
            Category::ChannelMention => "channel_mention",
            Category::Keyword => "keyword",
        }
    }
}

/// What to do with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through, record nothing.
    Allow,
    /// Deliver unchanged; queue for review.
    Flag,
    /// Replace with the placeholder; record the original.
    Mask,
    /// Refuse the whole message.
    Block,
}

/// Per-deployment choice of action per category. Keywords follow their
/// list (block or flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub phone: Action,
    pub email: Action,
    pub link: Action,
    pub social_handle: Action,
    pub bank_account: Action,
    pub channel_mention: Action,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            phone: Action::Mask,
            email: Action::Mask,
            link: Action::Mask,
            social_handle: Action::Mask,
            bank_account: Action::Mask,
            channel_mention: Action::Flag,
        }
    }
}

impl Policy {
    fn action(&self, category: Category) -> Action {
        match category {
            Category::Phone => self.phone,
            Category::Email => self.email,
            Category::Link => self.link,
            Category::SocialHandle => self.social_handle,
            Category::BankAccount => self.bank_account,
            Category::ChannelMention => self.channel_mention,
            Category::Keyword => Action::Flag,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub category: Category,
    pub action: Action,
    /// The original text of the finding (for the moderation record only).
    pub original: String,
    /// Byte range in the original message.
    pub start: usize,
    pub end: usize,
    /// The keyword, for keyword findings.
    pub keyword: Option<String>,
    /// A phone number completed by the sender's previous messages.
    pub split: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The text to store and deliver (placeholders in place of masked
    /// findings); the original when nothing is masked.
    pub text: String,
    pub findings: Vec<Finding>,
}

impl Outcome {
    pub fn blocked(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Block)
    }

    pub fn flagged(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Flag)
    }

    pub fn masked(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Mask)
    }

    /// The categories masked, without repeats, for the sender's notice.
    pub fn masked_categories(&self) -> Vec<Category> {
        let mut out: Vec<Category> = Vec::new();
        for f in &self.findings {
            if f.action == Action::Mask && !out.contains(&f.category) {
                out.push(f.category);
            }
        }
        out
    }
}

pub struct Moderator {
    pub policy: Policy,
    keywords: Keywords,
}

/// Longest message looked at: the send flow caps text length before, this
/// only bounds the work if it is called with more.
const MAX_SCAN_CHARS: usize = 20_000;

impl Moderator {
    pub fn new(policy: Policy, keywords: Keywords) -> Moderator {
        Moderator { policy, keywords }
    }

    /// Whether the sender's previous messages matter for `text`: it starts
    /// with digits that could complete a number sent before.
    pub fn needs_recent(&self, text: &str) -> bool {
        let view = View::of_first_word(text);
        let tokens = tokens::tokens(&view);
        tokens.first().is_some_and(|t| t.digits.is_some())
    }

    /// Moderates `text`; `recent` are the sender's last few messages in the
    /// thread, oldest first (as stored), for numbers split across them.
    pub fn moderate(&self, text: &str, recent: &[&str]) -> Outcome {
        let scanned = match text.char_indices().nth(MAX_SCAN_CHARS) {
            Some((cut, _)) => &text[..cut],
            None => text,
        };
        let view = View::of(scanned);
        let tokens = tokens::tokens(&view);
        let runs = tokens::digit_runs(&tokens);
        // (category, view start, view end, keyword, split)
        let mut raw: Vec<(Category, usize, usize, Option<String>, bool)> = Vec::new();

        for (a, b) in links::find_links(&view, &tokens) {
            raw.push((Category::Link, a, b, None, false));
        }
        for (a, b) in email::find(&view, &tokens) {
            raw.push((Category::Email, a, b, None, false));
        }
        for run in &runs {
            let context = tokens[run.start.saturating_sub(4)..run.start]
                .iter()
                .any(|t| phone::CONTACT_WORDS.contains(&t.text.as_str()));
            for (i, j) in phone::find_in_run(&view, &tokens, run.clone(), context) {
                raw.push((Category::Phone, tokens[i].start, tokens[j].end, None, false));
            }
        }
        if let Some((a, b)) = split_phone(&tokens, &runs, recent) {
            raw.push((Category::Phone, a, b, None, true));
        }
        for (a, b) in links::find_bank_accounts(&view, &tokens, &runs) {
            raw.push((Category::BankAccount, a, b, None, false));
        }
        for (a, b) in links::find_handles(&view, &tokens) {
            raw.push((Category::SocialHandle, a, b, None, false));
        }
        for (a, b) in links::find_channel_mentions(&tokens) {
            raw.push((Category::ChannelMention, a, b, None, false));
        }
        for hit in self.keywords.find(&view) {
            raw.push((
                Category::Keyword,
                hit.start,
                hit.end,
                Some(hit.keyword),
                hit.list == ListKind::Block,
            ));
        }

        let mut findings = Vec::new();
        for (category, a, b, keyword, flag) in raw {
            let action = match category {
                // For keywords the flag slot says "block list".
                Category::Keyword if flag => Action::Block,
                _ => self.policy.action(category),
            };
            if action == Action::Allow {
                continue;
            }
            let range = view.original(a, b);
            findings.push(Finding {
                category,
                action,
                original: scanned[range.clone()].to_owned(),
                start: range.start,
                end: range.end,
                keyword,
                split: category == Category::Phone && flag,
            });
        }
        // Masks must not overlap: the earliest, then the longest, wins
        // (a link that contains a phone number is masked as the link).
        findings.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut masked_until = 0;
        let mut kept = Vec::with_capacity(findings.len());
        for f in findings {
            if f.action == Action::Mask {
                if f.start < masked_until {
                    continue;
                }
                masked_until = f.end;
            }
            kept.push(f);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in kept.iter().filter(|f| f.action == Action::Mask) {
            out.push_str(&text[at..f.start]);
            out.push_str(f.category.placeholder());
            at = f.end;
        }
        out.push_str(&text[at..]);
        Outcome {
            text: out,
            findings: kept,
        }
    }
}

/// A phone number whose start was sent in the sender's previous messages
/// and whose end starts this one: the view range of this message's part.
fn split_phone(
    tokens: &[tokens::Token],
    runs: &[std::ops::Range<usize>],
    recent: &[&str],
) -> Option<(usize, usize)> {
    let first = runs.first().filter(|r| r.start == 0)?;
    // Digits at the end of the previous messages, newest last, as long as
    // each of them ends with digits.
    let mut before = String::new();
    for message in recent.iter().rev() {
        let view = View::of(message);
        let tokens = tokens::tokens(&view);
        let runs = tokens::digit_runs(&tokens);
        match runs.last() {
            Some(last) if last.end == tokens.len() => {
                let digits: String = tokens[last.clone()]
                    .iter()
                    .filter_map(|t| t.digits.as_deref())
                    .collect();
                before.insert_str(0, &digits);
                if last.start > 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    if before.is_empty() {
        return None;
    }
    let mut mine = String::new();
    for j in first.clone() {
        mine.push_str(tokens[j].digits.as_deref().unwrap_or(""));
        for k in (0..before.len()).rev() {
            let candidate = format!("{}{mine}", &before[k..]);
            if candidate.len() > 13 {
                continue;
            }
            if phone::is_vn_phone(&candidate, false) {
                return Some((tokens[first.start].start, tokens[j].end));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderator() -> Moderator {
        Moderator::new(
            Policy::default(),
            Keywords::new(&["ma túy".into()], &["lừa đảo".into()]),
        )
    }

    #[test]
    fn contact_details_are_masked_and_the_rest_kept() {
        let out = moderator().moderate(
            "Gọi mình 0912 345 678 hoặc mail lan@gmail.com nha, giá 150k",
            &[],
        );
        assert_eq!(
            out.text,
            "Gọi mình [ẩn số điện thoại] hoặc mail [ẩn email] nha, giá 150k"
        );
        assert_eq!(out.masked_categories(), [Category::Phone, Category::Email]);
        assert_eq!(out.findings[0].original, "0912 345 678");
        assert!(!out.blocked());
    }

    #[test]
    fn a_number_split_over_messages_is_masked_where_it_completes() {
        let m = moderator();
        assert!(m.needs_recent("345 678"));
        let out = m.moderate("345 678", &["số mình nè", "0912"]);
        assert_eq!(out.text, "[ẩn số điện thoại]");
        assert!(out.findings[0].split);
        // Not a continuation of anything: left alone.
        assert_eq!(m.moderate("345 678", &["size 38 nhé"]).text, "345 678");
    }

    #[test]
    fn block_keywords_block_and_flag_keywords_flag() {
        let m = moderator();
        assert!(m.moderate("bán MA TÚY không", &[]).blocked());
        let out = m.moderate("shop lừa đảo", &[]);
        assert!(out.flagged() && !out.blocked());
        assert_eq!(out.text, "shop lừa đảo", "flagged text is delivered as is");
    }

    #[test]
    fn the_policy_decides_per_category() {
        let policy = Policy {
            phone: Action::Block,
            link: Action::Allow,
            ..Policy::default()
        };
        let m = Moderator::new(policy, Keywords::empty());
        assert!(m.moderate("0912345678", &[]).blocked());
        let out = m.moderate("xem shopabc.vn", &[]);
        assert_eq!(out.text, "xem shopabc.vn");
        assert!(out.findings.is_empty());
    }
}
