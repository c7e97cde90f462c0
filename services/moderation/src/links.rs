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

/// `channel: handle` or `channel @handle` / `channel handle.with_dots`.
pub fn find_handles(view: &View, tokens: &[Token]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if !CHANNELS.contains(&token.text.as_str()) {
            continue;
        }
        let Some(next) = tokens.get(i + 1) else {
            continue;
        };
        let gap: String = view.chars[token.end..next.start].iter().collect();
        if gap.contains('\n') {
            continue;
        }
        let colon = gap.contains(':');
        let at = gap.trim_end().ends_with('@');
        // A handle with inner dots or underscores: nguyen.van.a, lan_ng.
        let mut end_token = i + 1;
        while end_token + 1 < tokens.len() {
            let joint: String = view.chars[tokens[end_token].end..tokens[end_token + 1].start]
                .iter()
                .collect();
            if joint == "." || joint == "_" {
                end_token += 1;
            } else {
                break;
            }
        }
        let dotted = end_token > i + 1;
        // Digits are the phone detector's business.
        if next.digits.is_some() && !at {
            continue;
        }
        if colon || at || dotted {
            let end = if colon && !at && !dotted {
                // `fb: Nguyễn Văn A` — the rest of the line, up to 4 words.
                let mut last = i + 1;
                while last + 1 < tokens.len()
                    && last < i + 4
                    && !view.chars[tokens[last].end..tokens[last + 1].start].contains(&'\n')
                    && view.chars[tokens[last].end..tokens[last + 1].start]
                        .iter()
                        .all(|c| *c == ' ')
                {
                    last += 1;
                }
                tokens[last].end
            } else {
                tokens[end_token].end
            };
            found.push((token.start, end));
        }
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
