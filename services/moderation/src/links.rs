//! Ways off the platform that are not a phone or an e-mail: links
//! (`https://…`, `www.…`, `zalo.me/…`, `m.me/…`, `t.me/…`, `shop.vn`),
//! social handles (`fb: nguyen.van.a`, `tele @shopabc`, `ig lan_nguyen`),
//! bank account numbers next to a bank's name, and bare mentions of
//! another channel (`ib zalo nhé`), which are only worth a flag.

use crate::tokens::Token;
use crate::view::View;

const LINK_TLDS: &[&str] = &[
    "com", "vn", "net", "me", "io", "ly", "co", "org", "link", "gl", "to", "info", "shop", "store",
    "page", "site", "online", "xyz", "app",
];

/// Names of other channels, as people write them.
const CHANNELS: &[&str] = &[
    "zalo",
    "zl",
    "fb",
    "facebook",
    "face",
    "phay",
    "messenger",
    "mess",
    "tele",
    "telegram",
    "tlg",
    "insta",
    "instagram",
    "ig",
    "tiktok",
    "whatsapp",
    "viber",
    "skype",
    "wechat",
    "line",
    "kakao",
];

const BANKS: &[&str] = &[
    "stk",
    "vietcombank",
    "vcb",
    "techcombank",
    "tcb",
    "mbbank",
    "mb",
    "acb",
    "bidv",
    "vietinbank",
    "vtb",
    "agribank",
    "tpbank",
    "vpbank",
    "sacombank",
    "scb",
    "shb",
    "hdbank",
    "ocb",
    "vib",
    "msb",
    "seabank",
    "eximbank",
    "momo",
    "zalopay",
    "nganhang",
    "taikhoan",
];

/// Currency words after a number: then it is an amount, not an account.
const MONEY: &[&str] = &[
    "d", "dong", "vnd", "k", "tr", "trieu", "nghin", "ngan", "xu", "usd",
];

fn is_tld(label: &str) -> bool {
    LINK_TLDS.contains(&label)
}

/// Links as view char ranges: from the start of the address to the next
/// space.
pub fn find_links(view: &View, tokens: &[Token]) -> Vec<(usize, usize)> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    let to_space = |from: usize| {
        let mut end = from;
        while end < view.len() && !view.chars[end].is_whitespace() {
            end += 1;
        }
        // Trailing punctuation belongs to the sentence.
        while end > from && matches!(view.chars[end - 1], '.' | ',' | '!' | '?' | ')' | ';') {
            end -= 1;
        }
        end
    };
    for (i, token) in tokens.iter().enumerate() {
        if found.last().is_some_and(|last| token.start < last.1) {
            continue;
        }
        let gap_is = |k: usize, s: &str| {
            k + 1 < tokens.len()
                && view.chars[tokens[k].end..tokens[k + 1].start]
                    .iter()
                    .collect::<String>()
                    == s
        };
        let start = token.start;
        let link = match token.text.as_str() {
            "http" | "https" if gap_is(i, "://") => true,
            "www" if gap_is(i, ".") => true,
            // label.tld (shop.vn, zalo.me/…, bit.ly/…): not numbers
            // (1.290.000) and not a sentence's full stop (a space follows).
            _ if token.digits.is_none() && gap_is(i, ".") => {
                let next = &tokens[i + 1];
                is_tld(&next.text)
                    && next.digits.is_none()
                    && (next.end == view.len() || !view.chars[next.end].is_alphanumeric())
            }
            _ => false,
        };
        if link {
            found.push((start, to_space(start)));
        }
    }
    found
}

/// Channel names long enough to be recognised one edit away (`zaloo`,
/// `instagam`, `fbook`): people respell them to pass filters.
const FUZZY_CHANNELS: &[&str] = &[
    "zalo",
    "facebook",
    "fbook",
    "insta",
    "instagram",
    "telegram",
    "tiktok",
    "whatsapp",
    "messenger",
];

/// Names that introduce a mail account's local part (`gmail: lan.ng99`).
const MAIL_NAMES: &[&str] = &[
    "gmail", "mail", "email", "yahoo", "outlook", "hotmail", "icloud",
];

/// Words between a channel's name and the handle (`insta mình là …`,
/// `zalo tên là …`, `fb nick …`).
const FILLERS: &[&str] = &[
    "la", "ten", "minh", "nick", "id", "acc", "cua", "toi", "em", "shop", "nha", "ne", "user",
    "name", "username", "account", "is",
];

/// Whether `a` and `b` are at most one insertion, deletion or
/// substitution apart, byte for byte (the names are ASCII; a non-ASCII
/// char is more than one edit, which only errs towards "no").
fn one_edit(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if prefix == short.len() {
        return true;
    }
    let skip = usize::from(short.len() == long.len());
    short[prefix + skip..] == long[prefix + 1..]
}

/// Whether `word` names another channel, exactly or one edit away.
fn channel_name(word: &str) -> bool {
    CHANNELS.contains(&word)
        || (word.len() >= 4 && FUZZY_CHANNELS.iter().any(|c| one_edit(c, word)))
}

/// Whether `a` then `b` spell a channel's name (`za lo`, `in ta`).
fn channel_name_split(a: &str, b: &str) -> bool {
    let len = a.len() + b.len();
    if !(4..=10).contains(&len) || a.is_empty() || b.is_empty() {
        return false;
    }
    let mut joined = [0u8; 10];
    joined[..a.len()].copy_from_slice(a.as_bytes());
    joined[a.len()..len].copy_from_slice(b.as_bytes());
    std::str::from_utf8(&joined[..len]).is_ok_and(|w| channel_name(w) || w == "phaybuc")
}

/// The tokens from `i` that spell another channel's name: one token
/// (`zalo`, `zaloo`), or two that do together (`za lo`, `phay buc`,
/// `in ta`). Returns the index of its last token.
fn channel_at(view: &View, tokens: &[Token], i: usize) -> Option<usize> {
    let word = tokens[i].text.as_str();
    if tokens[i].digits.is_some() {
        return None;
    }
    if let Some(next) = tokens.get(i + 1)
        && next.digits.is_none()
        && next.start - tokens[i].end <= 1
        && view.chars[tokens[i].end..next.start]
            .iter()
            .all(|c| matches!(c, ' ' | '-' | '.'))
        && channel_name_split(word, &next.text)
    {
        return Some(i + 1);
    }
    channel_name(word).then_some(i)
}

/// The end (last token) of a handle starting at token `i`: words, digits
/// and letters joined by `.`, `_`, `-` or nothing (`lan_nguyen99`,
/// `huong.do.75`), and whether it has such a joint (a handle's shape,
/// not a word's).
fn handle_from(view: &View, tokens: &[Token], i: usize) -> (usize, bool) {
    let mut end = i;
    let mut joined = false;
    while end + 1 < tokens.len() {
        let joint = &view.chars[tokens[end].end..tokens[end + 1].start];
        let glued = joint.is_empty();
        if glued || matches!(joint, ['.'] | ['_'] | ['-']) {
            joined = true;
            end += 1;
        } else {
            break;
        }
    }
    (end, joined)
}

/// `channel: handle`, `channel @handle`, `channel handle.with_dots`, and
/// handles introduced by a phrase (`tìm mình trên insta là lan_ng`,
/// `zalo 👉 huong.nguyen`), channel names respelled included.
pub fn find_handles(view: &View, tokens: &[Token]) -> Vec<(usize, usize)> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (last, mail) = match channel_at(view, tokens, i) {
            Some(last) => (last, false),
            None if MAIL_NAMES.contains(&tokens[i].text.as_str()) => (i, true),
            None => {
                i += 1;
                continue;
            }
        };
        let token = &tokens[i];
        // Up to three filler words, then the handle.
        let mut h = last + 1;
        let mut fillers = 0;
        while h < tokens.len() && fillers < 3 && FILLERS.contains(&tokens[h].text.as_str()) {
            h += 1;
            fillers += 1;
        }
        let Some(next) = tokens.get(h) else {
            break;
        };
        let gap: String = view.chars[tokens[last].end..next.start].iter().collect();
        if gap.contains('\n') || next.start - tokens[last].end > 24 {
            i = last + 1;
            continue;
        }
        let colon = gap.contains(':');
        let at = gap.trim_end().ends_with('@');
        let (end_token, joined) = handle_from(view, tokens, h);
        // Digits alone are the phone detector's business.
        let all_digits = tokens[h..=end_token].iter().all(|t| t.digits.is_some());
        if all_digits && !at {
            i = last + 1;
            continue;
        }
        // A handle's shape (joints, letters with digits), or a plain word
        // right after `:` or `@`; a mail name needs the shape.
        let letters_and_digits = tokens[h..=end_token].iter().any(|t| t.digits.is_some());
        let shaped = joined || letters_and_digits;
        let plain_ok = !mail && (colon || at) && fillers == 0;
        if shaped || plain_ok {
            let end = if colon && !at && !shaped && !mail {
                // `fb: Nguyễn Văn A` — the rest of the line, up to 4 words.
                let mut last_word = h;
                while last_word + 1 < tokens.len()
                    && last_word < h + 3
                    && !view.chars[tokens[last_word].end..tokens[last_word + 1].start]
                        .contains(&'\n')
                    && view.chars[tokens[last_word].end..tokens[last_word + 1].start]
                        .iter()
                        .all(|c| *c == ' ')
                {
                    last_word += 1;
                }
                tokens[last_word].end
            } else {
                tokens[end_token].end
            };
            let start = if mail { next.start } else { token.start };
            if found.last().is_none_or(|f| f.1 <= start) {
                found.push((start, end));
            }
            i = end_token + 1;
            continue;
        }
        i = last + 1;
    }
    found
}

/// Bare mentions of another channel (`qua zalo nhé`): view ranges.
pub fn find_channel_mentions(tokens: &[Token]) -> Vec<(usize, usize)> {
    tokens
        .iter()
        .filter(|t| {
            CHANNELS.contains(&t.text.as_str()) && !matches!(t.text.as_str(), "line" | "face")
        })
        .map(|t| (t.start, t.end))
        .collect()
}

/// Runs of 8–19 digits within a few words after a bank's name or `stk`,
/// that are not amounts (`1.290.000`, `12.900.000đ`).
pub fn find_bank_accounts(
    view: &View,
    tokens: &[Token],
    runs: &[std::ops::Range<usize>],
) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for run in runs {
        let digits: String = tokens[run.clone()]
            .iter()
            .filter_map(|t| t.digits.as_deref())
            .collect();
        if !(8..=19).contains(&digits.len()) {
            continue;
        }
        let near_bank = tokens[run.start.saturating_sub(5)..run.start]
            .iter()
            .any(|t| BANKS.contains(&t.text.as_str()))
            || tokens[run.start.saturating_sub(4)..run.start]
                .windows(2)
                .any(|w| {
                    matches!(
                        (w[0].text.as_str(), w[1].text.as_str()),
                        ("tai", "khoan") | ("so", "tk") | ("ngan", "hang")
                    )
                });
        if !near_bank {
            continue;
        }
        let grouped_in_thousands = run.len() > 1
            && tokens[run.start + 1..run.end]
                .iter()
                .all(|t| t.text.len() == 3)
            && tokens[run.start..run.end - 1]
                .iter()
                .all(|t| matches!(view.chars.get(t.end), Some('.' | ',')));
        let money_after = tokens.get(run.end).is_some_and(|t| {
            MONEY.contains(&t.text.as_str()) && t.start - tokens[run.end - 1].end <= 1
        });
        if grouped_in_thousands || money_after {
            continue;
        }
        found.push((tokens[run.start].start, tokens[run.end - 1].end));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{digit_runs, tokens};

    fn with(text: &str, f: impl Fn(&View, &[Token]) -> Vec<(usize, usize)>) -> Vec<String> {
        let view = View::of(text);
        let tokens = tokens(&view);
        f(&view, &tokens)
            .into_iter()
            .map(|(a, b)| text[view.original(a, b)].to_owned())
            .collect()
    }

    #[test]
    fn links_are_found_and_prices_are_not() {
        assert_eq!(
            with("vào https://shopabc.vn/sale nhé", find_links),
            ["https://shopabc.vn/sale"]
        );
        assert_eq!(
            with("add zalo.me/0912345678.", find_links),
            ["zalo.me/0912345678"]
        );
        assert_eq!(with("xem t.me/shopabc", find_links), ["t.me/shopabc"]);
        assert_eq!(with("web www.shopabc.com", find_links), ["www.shopabc.com"]);
        assert!(with("giá 1.290.000đ. Còn hàng.", find_links).is_empty());
        assert!(with("Dạ vâng. Com bo 2 cái", find_links).is_empty());
    }

    #[test]
    fn channel_names_one_edit_away_and_split_in_two() {
        for (a, b, near) in [
            ("zalo", "zaloo", true),
            ("zalo", "dalo", true),
            ("zalo", "zalo", true),
            ("instagram", "instagam", true),
            ("insta", "inxta", true),
            ("zalo", "zl", false),
            ("zalo", "halo!!", false),
            ("facebook", "fbook", false),
        ] {
            assert_eq!(one_edit(a, b), near, "{a} {b}");
        }
        assert!(channel_name_split("za", "lo"));
        assert!(channel_name_split("in", "ta"));
        assert!(channel_name_split("phay", "buc"));
        assert!(!channel_name_split("shop", "oi"));
    }

    #[test]
    fn handles_after_a_channel_name() {
        assert_eq!(
            with("fb: Nguyễn Văn An", find_handles),
            ["fb: Nguyễn Văn An"]
        );
        assert_eq!(with("tele @shopabc nha", find_handles), ["tele @shopabc"]);
        assert_eq!(with("ig lan_nguyen.99", find_handles), ["ig lan_nguyen.99"]);
        assert!(with("bạn có dùng zalo không", find_handles).is_empty());
    }

    #[test]
    fn bank_accounts_but_not_amounts() {
        let banks = |text: &str| with(text, |v, t| find_bank_accounts(v, t, &digit_runs(t)));
        assert_eq!(banks("stk vcb 0071001234567 chủ tk Lan"), ["0071001234567"]);
        assert_eq!(
            banks("Techcombank 1903 4567 8901 23"),
            ["1903 4567 8901 23"]
        );
        assert!(banks("ck vcb 12.900.000 nhé").is_empty());
        assert!(banks("chuyển khoản acb 15000000đ").is_empty());
        assert!(banks("mã đơn 240915123456").is_empty());
    }
}
