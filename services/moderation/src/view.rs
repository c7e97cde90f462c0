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
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

pub struct View {
    pub chars: Vec<char>,
    /// Byte range in the original text of each char of `chars`.
    pub origin: Vec<Range<usize>>,
}

/// Marks that carry no letter: keycap (`1️⃣`), variation selectors, and
/// every format character (zero-width spaces and joiners, the soft
/// hyphen, bidirectional marks, the BOM, tags).
fn invisible(c: char) -> bool {
    matches!(c, '\u{20E3}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
        || c.general_category() == GeneralCategory::Format
}

/// The value of a digit of any script (`٣`, `३`, `๓`, `𝟑`), and of the
/// circled dingbat digits NFKC leaves alone (`❸`, `➂`, `➌`, `⓿`).
fn digit_value(c: char) -> Option<char> {
    let code = c as u32;
    let dingbat = match code {
        0x24FF => Some(0),
        0x2776..=0x277E => Some(code - 0x2775),
        0x2780..=0x2788 => Some(code - 0x277F),
        0x278A..=0x2792 => Some(code - 0x2789),
        _ => None,
    };
    if let Some(d) = dingbat {
        return char::from_digit(d, 10);
    }
    if c.general_category() != GeneralCategory::DecimalNumber {
        return None;
    }
    // Unicode encodes every decimal digit in runs of ten, 0 to 9, with
    // no gaps: the value is the distance from the run's start.
    let mut zero = code;
    while zero > 0
        && char::from_u32(zero - 1)
            .is_some_and(|p| p.general_category() == GeneralCategory::DecimalNumber)
    {
        zero -= 1;
    }
    char::from_digit((code - zero) % 10, 10)
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

/// The view chars of one original char, as the general path makes them.
fn general(c: char, out: &mut impl FnMut(char)) {
    if let Some(d) = digit_value(c) {
        out(d);
        return;
    }
    for compatible in std::iter::once(c).nfkc() {
        fold(compatible, out);
    }
}

/// Non-ASCII chars below this (Latin with every Vietnamese letter, Greek,
/// Cyrillic, punctuation) are looked up in a table the general path
/// filled once; the normalisation iterators cost a send more than the
/// detectors did.
const TABLE_END: u32 = 0x2070;

struct Table {
    /// `chars[starts[i]..starts[i + 1]]` is the view of `0x80 + i`.
    starts: Vec<u16>,
    chars: Vec<char>,
}

fn table() -> &'static Table {
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut starts = Vec::with_capacity((TABLE_END - 0x80 + 1) as usize);
        let mut chars = Vec::with_capacity((TABLE_END - 0x80) as usize);
        for code in 0x80..TABLE_END {
            starts.push(chars.len() as u16);
            if let Some(c) = char::from_u32(code) {
                general(c, &mut |f| chars.push(f));
            }
        }
        starts.push(chars.len() as u16);
        Table { starts, chars }
    })
}

impl View {
    pub fn of(text: &str) -> View {
        let mut view = View {
            chars: Vec::with_capacity(text.len()),
            origin: Vec::with_capacity(text.len()),
        };
        for (start, c) in text.char_indices() {
            view.push(start, c);
        }
        view
    }

    /// The view of `text` up to the end of its first word (the first run
    /// of alphanumeric view chars): all that the first token depends on.
    pub fn of_first_word(text: &str) -> View {
        let mut view = View {
            chars: Vec::new(),
            origin: Vec::new(),
        };
        let mut in_word = false;
        for (start, c) in text.char_indices() {
            let before = view.chars.len();
            view.push(start, c);
            let added = &view.chars[before..];
            if in_word && added.iter().any(|c| !c.is_alphanumeric()) {
                break;
            }
            in_word |= added.iter().any(|c| c.is_alphanumeric());
        }
        view
    }

    /// Appends the view chars of `c`, found at byte `start` of the text.
    fn push(&mut self, start: usize, c: char) {
        // ASCII is its own NFKC and NFD form and no look-alike: only its
        // case folds. Most chat text is mostly ASCII.
        if c.is_ascii() {
            self.chars.push(c.to_ascii_lowercase());
            self.origin.push(start..start + 1);
            return;
        }
        let range = start..start + c.len_utf8();
        let code = c as u32;
        if code < TABLE_END {
            let t = table();
            let i = (code - 0x80) as usize;
            let folded = &t.chars[usize::from(t.starts[i])..usize::from(t.starts[i + 1])];
            self.chars.extend_from_slice(folded);
            self.origin.extend(std::iter::repeat_n(range, folded.len()));
            return;
        }
        let (chars, origin) = (&mut self.chars, &mut self.origin);
        general(c, &mut |folded| {
            chars.push(folded);
            origin.push(range.clone());
        });
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
    fn digits_of_every_script_and_dingbat_digits_become_ascii() {
        assert_eq!(text("٠٣٣"), "033", "Arabic-Indic");
        assert_eq!(text("۰۹۱"), "091", "extended Arabic-Indic");
        assert_eq!(text("०९१२"), "0912", "Devanagari");
        assert_eq!(text("๐๙"), "09", "Thai");
        assert_eq!(text("𝟎𝟗𝟏𝟐 𝟘𝟡 𝟶𝟿"), "0912 09 09", "mathematical");
        assert_eq!(text("⓿❾➀➊"), "0911");
        // Other numbers keep their NFKC form; letters stay letters.
        assert_eq!(text("½ Ⅻ"), "1⁄2 xii");
    }

    #[test]
    fn lookalikes_and_invisible_marks_are_folded() {
        assert_eq!(
            text("09\u{00AD}1\u{2060}2\u{200E}3"),
            "0912 3".replace(' ', "")
        );
        assert_eq!(text("gmаil"), "gmail", "Cyrillic а");
        assert_eq!(text("09\u{200B}12"), "0912");
    }

    #[test]
    fn the_fast_paths_fold_as_the_general_path_does() {
        // ASCII, the whole table, and a little past its end.
        for code in 0..TABLE_END + 0x100 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let mut expected = Vec::new();
            general(c, &mut |f| expected.push(f));
            let text = format!("a{c}b");
            let view = View::of(&text);
            assert_eq!(
                &view.chars[1..view.len() - 1],
                expected,
                "{c:?} U+{code:04X}"
            );
            for i in 1..view.len() - 1 {
                assert_eq!(&text[view.original(i, i + 1)], c.to_string(), "{c:?}");
            }
        }
    }

    #[test]
    fn the_first_word_view_gives_the_first_token_of_the_whole_view() {
        for text in [
            "0912 345 678",
            "  09\u{200B}12 nhé",
            "không chín một hai",
            "goi0912345678nhe",
            "",
            "   ",
            "!!! ０９１２ 34",
            "½ cân",
            "Chào shop, áo này còn size M không?",
            "0️⃣9️⃣1️⃣ hai",
        ] {
            let whole = crate::tokens::tokens(&View::of(text));
            let first = crate::tokens::tokens(&View::of_first_word(text));
            assert_eq!(whole.first(), first.first(), "{text:?}");
        }
    }

    #[test]
    fn every_view_char_maps_back_to_its_original_bytes() {
        let original = "Gọi ０９";
        let view = View::of(original);
        let range = view.original(4, 6);
        assert_eq!(&original[range], "０９");
    }
}
