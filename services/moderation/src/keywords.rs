//! Admin-managed keyword lists (block, flag), matched on the folded view
//! (so `lừa đảo`, `lua dao` and `LỪA ĐẢO` are one keyword) with one
//! Aho–Corasick automaton, at word boundaries (`ma túy` does not match
//! `mã túyp`… nor `hàng` inside `hàngxịn`).

use aho_corasick::{AhoCorasick, MatchKind};

use crate::view::{View, folded};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Block,
    Flag,
}

pub struct Keywords {
    automaton: Option<AhoCorasick>,
    /// Per pattern: its list and the keyword as the admin wrote it.
    patterns: Vec<(ListKind, String)>,
}

/// One keyword found: its list, the keyword, and the view char range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywordHit {
    pub list: ListKind,
    pub keyword: String,
    pub start: usize,
    pub end: usize,
}

impl Keywords {
    pub fn new(block: &[String], flag: &[String]) -> Keywords {
        let mut patterns = Vec::new();
        let mut folded_patterns = Vec::new();
        for (list, words) in [(ListKind::Block, block), (ListKind::Flag, flag)] {
            for word in words {
                let f = folded(word)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                if f.is_empty() {
                    continue;
                }
                folded_patterns.push(f);
                patterns.push((list, word.clone()));
            }
        }
        let automaton = (!folded_patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&folded_patterns)
                .expect("keyword automaton")
        });
        Keywords {
            automaton,
            patterns,
        }
    }

    pub fn empty() -> Keywords {
        Keywords::new(&[], &[])
    }

    pub fn find(&self, view: &View) -> Vec<KeywordHit> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        // Whitespace runs collapse to one space, as in the patterns.
        let mut text = String::with_capacity(view.len());
        let mut char_of_byte = Vec::with_capacity(view.len());
        let mut last_space = false;
        for (i, c) in view.chars.iter().enumerate() {
            let space = c.is_whitespace();
            if space && last_space {
                continue;
            }
            let c = if space { ' ' } else { *c };
            for _ in 0..c.len_utf8() {
                char_of_byte.push(i);
            }
            text.push(c);
            last_space = space;
        }
        char_of_byte.push(view.len());
        let boundary = |byte: usize| {
            text[..byte]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric())
        };
        let boundary_after = |byte: usize| {
            text[byte..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
        };
        automaton
            .find_iter(&text)
            .filter(|m| boundary(m.start()) && boundary_after(m.end()))
            .map(|m| {
                let (list, keyword) = &self.patterns[m.pattern().as_usize()];
                KeywordHit {
                    list: *list,
                    keyword: keyword.clone(),
                    start: char_of_byte[m.start()],
                    end: char_of_byte[m.end() - 1] + 1,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(k: &Keywords, text: &str) -> Vec<(ListKind, String)> {
        k.find(&View::of(text))
            .into_iter()
            .map(|h| (h.list, h.keyword))
            .collect()
    }

    #[test]
    fn keywords_match_without_diacritics_case_or_extra_spaces() {
        let k = Keywords::new(&["ma túy".into()], &["lừa đảo".into(), "hàng fake".into()]);
        assert_eq!(
            hits(&k, "shop này LỪA  ĐẢO"),
            [(ListKind::Flag, "lừa đảo".into())]
        );
        assert_eq!(hits(&k, "bán ma tuy"), [(ListKind::Block, "ma túy".into())]);
        assert_eq!(
            hits(&k, "Hàng Fake à?"),
            [(ListKind::Flag, "hàng fake".into())]
        );
    }

    #[test]
    fn keywords_match_whole_words_only() {
        let k = Keywords::new(&["ma túy".into()], &[]);
        assert!(hits(&k, "mã túyp").is_empty());
        assert!(hits(&k, "thema tuy").is_empty());
        assert!(Keywords::empty().find(&View::of("bất kỳ")).is_empty());
    }
}
