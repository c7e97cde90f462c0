//! A searchable view of a message. Every detector works on it, not on the
//! raw text: Unicode NFKC (full-width and circled digits become ASCII),
//! lower case, Vietnamese diacritics removed (`đ` → `d`), look-alike
//! letters from other scripts folded to Latin, keycap and zero-width marks
//! dropped. Each character of the view remembers the byte range of the
//! original character it came from, so a match found in the view masks
//! exactly the original characters.

use std::ops::Range;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub struct View {
    pub chars: Vec<char>,
    /// Byte range in the original text of each char of `chars`.
    pub origin: Vec<Range<usize>>,
}

/// Marks that carry no letter: keycap (`1️⃣`), variation selectors,
/// zero-width joiners and spaces, the BOM.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{20E3}' | '\u{FE0E}' | '\u{FE0F}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// Cyrillic and Greek letters that look like Latin ones, as used to dodge
/// filters (`gmаil` with a Cyrillic `а`).
fn latin_lookalike(c: char) -> char {
    match c {
        'а' => 'a',
        'е' => 'e',
        'о' | 'ο' => 'o',
        'р' | 'ρ' => 'p',
        'с' => 'c',
        'у' => 'y',
        'х' | 'χ' => 'x',
        'і' | 'ι' => 'i',
        'к' | 'κ' => 'k',
        'м' => 'm',
        'т' | 'τ' => 't',
        'в' => 'b',
        'н' | 'η' => 'h',
        'ѕ' => 's',
        'ј' => 'j',
        'ԁ' => 'd',
        'ν' => 'v',
        _ => c,
    }
}

/// The base letter of `c`, lower case, without diacritics.
fn fold(c: char, out: &mut impl FnMut(char)) {
    if c == 'đ' || c == 'Đ' {
        out('d');
        return;
    }
    for decomposed in std::iter::once(c).nfd() {
        if is_combining_mark(decomposed) || invisible(decomposed) {
            continue;
        }
        for lower in decomposed.to_lowercase() {
            out(latin_lookalike(lower));
        }
    }
}

impl View {
    pub fn of(text: &str) -> View {
        let mut chars = Vec::with_capacity(text.len());
        let mut origin = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let range = start..start + c.len_utf8();
            for compatible in std::iter::once(c).nfkc() {
                fold(compatible, &mut |folded| {
                    chars.push(folded);
                    origin.push(range.clone());
                });
            }
        }
        View { chars, origin }
    }

    /// The original byte range covering view chars `from..to`.
    pub fn original(&self, from: usize, to: usize) -> Range<usize> {
        self.origin[from].start..self.origin[to - 1].end
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }
}

/// The view of a short pattern (keywords, bank names) as a string.
pub fn folded(text: &str) -> String {
    View::of(text).chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        View::of(s).chars.into_iter().collect()
    }

    #[test]
    fn vietnamese_is_folded_to_plain_lower_case() {
        assert_eq!(text("Không Chín Một ĐƯỜNG"), "khong chin mot duong");
        assert_eq!(text("bảy bẩy mốt lăm"), "bay bay mot lam");
    }

    #[test]
    fn full_width_circled_and_keycap_digits_become_ascii() {
        assert_eq!(text("０９１２"), "0912");
        assert_eq!(text("⓪⑨①②"), "0912");
        assert_eq!(text("0️⃣9️⃣"), "09");
    }

    #[test]
    fn lookalikes_and_invisible_marks_are_folded() {
        assert_eq!(text("gmаil"), "gmail", "Cyrillic а");
        assert_eq!(text("09\u{200B}12"), "0912");
    }

    #[test]
    fn every_view_char_maps_back_to_its_original_bytes() {
        let original = "Gọi ０９";
        let view = View::of(original);
        let range = view.original(4, 6);
        assert_eq!(&original[range], "０９");
    }
}
