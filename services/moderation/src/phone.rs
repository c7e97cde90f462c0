//! Vietnamese phone numbers inside digit runs, validated against the
//! numbering plan so that prices, sizes, dates, quantities and order codes
//! are left alone: a run is a phone number only if some of its tokens, in
//! a row, spell a number that Vietnam could have assigned.

use crate::tokens::Token;
use crate::view::View;

/// Mobile prefixes in use since the 2018 renumbering (10 digits).
fn mobile_prefix(p: &str) -> bool {
    matches!(
        p,
        "032"
            | "033"
            | "034"
            | "035"
            | "036"
            | "037"
            | "038"
            | "039"
            | "052"
            | "055"
            | "056"
            | "058"
            | "059"
            | "070"
            | "076"
            | "077"
            | "078"
            | "079"
            | "081"
            | "082"
            | "083"
            | "084"
            | "085"
            | "086"
            | "087"
            | "088"
            | "089"
    ) || (p.starts_with("09") && p.len() == 3)
}

/// Old 11-digit mobile numbers (before 2018), still written by people.
fn old_mobile_prefix(p: &str) -> bool {
    matches!(
        p,
        "0120"
            | "0121"
            | "0122"
            | "0123"
            | "0124"
            | "0125"
            | "0126"
            | "0127"
            | "0128"
            | "0129"
            | "0162"
            | "0163"
            | "0164"
            | "0165"
            | "0166"
            | "0167"
            | "0168"
            | "0169"
            | "0186"
            | "0188"
            | "0199"
    )
}

/// A national number (leading 0) Vietnam could have assigned.
fn national(n: &str) -> bool {
    match n.len() {
        10 => mobile_prefix(&n[..3]),
        // Landlines: 02 + area code (203–299) + 7 digits.
        11 if n.starts_with("02") => n.as_bytes()[2] != b'0' || n.as_bytes()[3] >= b'3',
        11 => old_mobile_prefix(&n[..4]),
        _ => false,
    }
}

/// Whether `digits` is a Vietnamese phone number: national (`09…`),
/// international (`84…`, `0084…`; the `+` is a separator), or — only when
/// the text says it is a contact (`sđt`, `zalo`, `gọi`…) — a mobile number
/// without its leading 0.
pub fn is_vn_phone(digits: &str, contact_context: bool) -> bool {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if digits.starts_with('0') && !digits.starts_with("00") {
        return national(digits);
    }
    if let Some(rest) = digits
        .strip_prefix("0084")
        .or_else(|| digits.strip_prefix("84"))
        && !rest.starts_with('0')
        && national(&format!("0{rest}"))
    {
        return true;
    }
    contact_context && digits.len() == 9 && national(&format!("0{digits}"))
}

/// Words that announce contact details.
pub const CONTACT_WORDS: &[&str] = &[
    "sdt", "dt", "so", "phone", "tel", "zalo", "zl", "goi", "call", "lh", "hotline", "ib", "sms",
    "whatsapp", "viber", "dien", "thoai", "alo", "nhan",
];

/// Whether tokens `i`, `i+1`, `i+2` are a date: day, month, year joined
/// by the same `.`, `/` or `-` (`09.12.2024`, `9/12/2024`).
fn date_at(view: &View, tokens: &[Token], i: usize, end: usize) -> bool {
    if i + 2 >= end {
        return false;
    }
    let value = |t: &Token| t.text.parse::<u32>().ok();
    let (Some(day), Some(month), Some(year)) = (
        value(&tokens[i]),
        value(&tokens[i + 1]),
        value(&tokens[i + 2]),
    ) else {
        return false;
    };
    let gap = |a: &Token, b: &Token| view.chars[a.end..b.start].iter().collect::<String>();
    let separator = gap(&tokens[i], &tokens[i + 1]);
    (1..=31).contains(&day)
        && (1..=12).contains(&month)
        && tokens[i + 2].text.len() == 4
        && (1900..=2099).contains(&year)
        && matches!(separator.as_str(), "." | "/" | "-")
        && gap(&tokens[i + 1], &tokens[i + 2]) == separator
}

/// The longest token window of `run` (token indices into `tokens`) that
/// spells a phone number, earliest first: `(first token, last token)`.
/// Windows that take in a date are not numbers.
pub fn find_in_run(
    view: &View,
    tokens: &[Token],
    run: std::ops::Range<usize>,
    contact_context: bool,
) -> Vec<(usize, usize)> {
    let mut in_date = vec![false; run.end];
    for i in run.clone() {
        if date_at(view, tokens, i, run.end) {
            in_date[i..i + 3].fill(true);
        }
    }
    let mut found = Vec::new();
    let mut i = run.start;
    while i < run.end {
        let mut digits = String::new();
        let mut best = None;
        for j in i..run.end {
            if in_date[j] {
                break;
            }
            digits.push_str(tokens[j].digits.as_deref().unwrap_or(""));
            if digits.len() > 13 {
                break;
            }
            if is_vn_phone(&digits, contact_context) {
                best = Some(j);
            }
        }
        match best {
            Some(j) => {
                found.push((i, j));
                i = j + 1;
            }
            None => i += 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_landline_old_and_international_numbers_are_phones() {
        for n in [
            "0912345678",
            "0387654321",
            "0562223333",
            "0281234567x",
            "02838123456",
            "02412345678",
            "01662345678",
            "84912345678",
            "0084912345678",
        ] {
            let expected = !n.ends_with('x');
            assert_eq!(is_vn_phone(n, false), expected, "{n}");
        }
    }

    #[test]
    fn numbers_that_are_not_phones_stay_unmasked() {
        for n in [
            "1290000",      // a price
            "150000",       // a price
            "15092024",     // a date
            "3839404142",   // sizes
            "0012345678",   // not a prefix
            "0212345678",   // too short for a landline
            "0601234567",   // 060 is not assigned
            "912345678",    // no leading 0, no context
            "240915123456", // an order code
        ] {
            assert!(!is_vn_phone(n, false), "{n}");
        }
        assert!(is_vn_phone("912345678", true), "with a contact word");
    }
}
