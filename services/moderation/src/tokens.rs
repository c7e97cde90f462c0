//! Words and numbers of a [`View`], and runs of digits: what people type
//! to spell a number past a filter — digits split by spaces, dots, dashes
//! or emoji, digits written as Vietnamese (or English) words, look-alike
//! letters among digits — all read back as one digit string.

use crate::view::View;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// View char range.
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The digits this token stands for, if it reads as a number.
    pub digits: Option<String>,
}

/// A digit, spelled out: Vietnamese (regional variants included, diacritics
/// already folded) and English.
fn spelled_digit(word: &str) -> Option<char> {
    Some(match word {
        "khong" | "linh" | "le" | "zero" => '0',
        "mot" | "one" => '1',
        "hai" | "two" => '2',
        "ba" | "three" => '3',
        "bon" | "tu" | "four" => '4',
        "nam" | "lam" | "five" => '5',
        "sau" | "six" => '6',
        "bay" | "seven" => '7',
        "tam" | "eight" => '8',
        "chin" | "nine" => '9',
        _ => return None,
    })
}

/// `o`→0, `l`/`i`→1 among digits (`O9O1`, `09l2`).
fn lookalike_digit(c: char) -> Option<char> {
    match c {
        'o' => Some('0'),
        'l' | 'i' => Some('1'),
        _ => None,
    }
}

fn digits_of(word: &str) -> Option<String> {
    if word.chars().all(|c| c.is_ascii_digit()) {
        return Some(word.to_owned());
    }
    if let Some(d) = spelled_digit(word) {
        return Some(d.to_string());
    }
    // Mostly digits, the rest look-alikes: a disguised number.
    let real = word.chars().filter(char::is_ascii_digit).count();
    if real == 0 || real * 2 < word.chars().count() {
        return None;
    }
    word.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                Some(c)
            } else {
                lookalike_digit(c)
            }
        })
        .collect()
}

/// Letters that are a code's, not a word's: no vowel, and not a word
/// that announces a number (`sdt`, `lh`).
fn code_letters(piece: &str) -> bool {
    piece.chars().count() >= 2
        && !piece
            .chars()
            .any(|c| matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y'))
        && !crate::phone::CONTACT_WORDS.contains(&piece)
}

/// The alphanumeric tokens of the view, in order.
pub fn tokens(view: &View) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    let chars = &view.chars;
    while i < chars.len() {
        if !chars[i].is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_alphanumeric() {
            i += 1;
        }
        let text: String = chars[start..i].iter().collect();
        match digits_of(&text) {
            Some(digits) => out.push(Token {
                start,
                end: i,
                text,
                digits: Some(digits),
            }),
            // Digits glued to words (`goi0912345678nhe`, `150k`): the
            // digits and the letters become tokens of their own.
            None if text.chars().any(|c| c.is_ascii_digit()) => {
                let mut piece_start = start;
                // Digits right after a code's letters (`SPXVN0249…`,
                // `DH12345`: consonants only, no word) are a code's.
                let mut after_code = false;
                for k in start + 1..=i {
                    if k == i || chars[k].is_ascii_digit() != chars[k - 1].is_ascii_digit() {
                        let piece: String = chars[piece_start..k].iter().collect();
                        let is_digits = piece.chars().all(|c| c.is_ascii_digit());
                        let digits = (is_digits && !after_code).then(|| piece.clone());
                        after_code = !is_digits && code_letters(&piece);
                        out.push(Token {
                            start: piece_start,
                            end: k,
                            text: piece,
                            digits,
                        });
                        piece_start = k;
                    }
                }
            }
            None => out.push(Token {
                start,
                end: i,
                text,
                digits: None,
            }),
        }
    }
    out
}

/// Most non-alphanumeric characters allowed between two digit tokens of
/// one run (`0912 . 345`, `0🌸9`, `0912 - - - 345`, `🇻🇳`, line breaks:
/// numbers get split over lines too). Runs are only candidates: a phone
/// must still be a number Vietnam could have assigned.
const MAX_GAP: usize = 12;

/// Maximal runs of number tokens separated only by short gaps of
/// non-alphanumeric characters: token index ranges into `tokens`.
pub fn digit_runs(tokens: &[Token]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].digits.is_none() {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < tokens.len()
            && tokens[i].digits.is_some()
            && tokens[i].start - tokens[i - 1].end <= MAX_GAP
        {
            i += 1;
        }
        runs.push(start..i);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_digits(text: &str) -> Vec<String> {
        let view = View::of(text);
        let tokens = tokens(&view);
        digit_runs(&tokens)
            .into_iter()
            .map(|r| {
                tokens[r]
                    .iter()
                    .map(|t| t.digits.clone().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn spelled_spaced_and_disguised_digits_read_as_one_number() {
        assert_eq!(run_digits("0912.345.678"), ["0912345678"]);
        assert_eq!(
            run_digits("không chín một hai 345 sáu bảy tám"),
            ["0912345678"]
        );
        assert_eq!(run_digits("O9l2 3456 78"), ["0912345678"]);
        assert_eq!(run_digits("0🌸9🌸1🌸2"), ["0912"]);
    }

    #[test]
    fn words_and_long_gaps_end_a_run() {
        assert_eq!(run_digits("giá 150 ship 30"), ["150", "30"]);
        assert_eq!(run_digits("12\n34"), ["1234"]);
        assert_eq!(run_digits("12 -- -- 34"), ["1234"]);
        assert_eq!(run_digits("12 ------------- 34"), ["12", "34"]);
        assert!(run_digits("áo polo size L").is_empty());
    }
}
