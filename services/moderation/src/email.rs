//! E-mail addresses, also when spelled to dodge a filter: `a còng`,
//! `acong`, `(at)`, ` at ` for `@`; `chấm`, `(dot)`, ` dot ` for `.`;
//! spaces around them. An address must end in a known top-level domain or
//! name a known mail provider, so `I'm at home` is not an address.

use crate::tokens::Token;
use crate::view::View;

const TLDS: &[&str] = &[
    "com", "vn", "net", "org", "edu", "gov", "io", "me", "info", "biz", "co", "xyz", "us", "uk",
    "asia", "online", "site",
];
const PROVIDERS: &[&str] = &[
    "gmail",
    "yahoo",
    "outlook",
    "hotmail",
    "icloud",
    "live",
    "ymail",
    "proton",
    "protonmail",
    "zoho",
    "fpt",
    "viettel",
];

/// Whether `labels` end in a suffix of the Public Suffix List with a
/// registrable name before it (`mail.ru`, `shop.com.vn`, `abc.store`).
fn public_suffix(labels: &[&str]) -> bool {
    let domain = labels.join(".");
    psl::domain(domain.as_bytes()).is_some_and(|d| d.suffix().is_known())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// A token (index into the token list).
    Label(usize),
    At,
    Dot,
    /// `_`, `-`, `+` inside a local part or domain label.
    Joiner,
    Space,
    Other,
}

/// The message as a sequence of pieces, each with its view char range.
fn pieces(view: &View, tokens: &[Token]) -> Vec<(Piece, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut t = 0;
    while pos < view.len() {
        if t < tokens.len() && tokens[t].start == pos {
            let token = &tokens[t];
            let next_is = |word: &str| tokens.get(t + 1).is_some_and(|n| n.text == word);
            let piece = match token.text.as_str() {
                "acong" | "at" => Piece::At,
                "a" if next_is("cong") => {
                    // `a còng`: both tokens are the `@`.
                    let end = tokens[t + 1].end;
                    out.push((Piece::At, token.start, end));
                    pos = end;
                    t += 2;
                    continue;
                }
                "cham" | "dot" => Piece::Dot,
                // `(a)` for `@`.
                "a" if token.start > 0
                    && view.chars[token.start - 1] == '('
                    && view.chars.get(token.end) == Some(&')') =>
                {
                    Piece::At
                }
                _ => Piece::Label(t),
            };
            out.push((piece, token.start, token.end));
            pos = token.end;
            t += 1;
            continue;
        }
        let c = view.chars[pos];
        let piece = match c {
            '@' => Piece::At,
            '.' => Piece::Dot,
            '_' | '-' | '+' => Piece::Joiner,
            '(' | ')' | '[' | ']' | '{' | '}' => Piece::Space,
            c if c.is_whitespace() => Piece::Space,
            _ => Piece::Other,
        };
        out.push((piece, pos, pos + 1));
        pos += 1;
    }
    out
}

fn skip_spaces(pieces: &[(Piece, usize, usize)], mut i: usize, forward: bool) -> Option<usize> {
    loop {
        match pieces.get(i)?.0 {
            Piece::Space => {
                if forward {
                    i += 1
                } else {
                    i = i.checked_sub(1)?
                }
            }
            _ => return Some(i),
        }
    }
}

/// E-mail addresses as view char ranges.
pub fn find(view: &View, tokens: &[Token]) -> Vec<(usize, usize)> {
    let pieces = pieces(view, tokens);
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (at, &(piece, _, _)) in pieces.iter().enumerate() {
        if piece != Piece::At {
            continue;
        }
        // Local part: labels joined by dots or joiners, leftwards.
        let Some(mut left) = at
            .checked_sub(1)
            .and_then(|i| skip_spaces(&pieces, i, false))
        else {
            continue;
        };
        if !matches!(pieces[left].0, Piece::Label(_)) {
            continue;
        }
        while left >= 2
            && matches!(pieces[left - 1].0, Piece::Dot | Piece::Joiner)
            && matches!(pieces[left - 2].0, Piece::Label(_))
        {
            left -= 2;
        }
        // Domain: labels joined by dots (spelled or not, spaces allowed
        // around a dot), rightwards.
        let Some(first) = skip_spaces(&pieces, at + 1, true) else {
            continue;
        };
        let Piece::Label(first_token) = pieces[first].0 else {
            continue;
        };
        let mut labels = vec![tokens[first_token].text.as_str()];
        let mut right = first;
        while let Some(dot) = skip_spaces(&pieces, right + 1, true) {
            if !matches!(pieces[dot].0, Piece::Dot | Piece::Joiner) {
                break;
            }
            let Some(next) = skip_spaces(&pieces, dot + 1, true) else {
                break;
            };
            let Piece::Label(token) = pieces[next].0 else {
                break;
            };
            labels.push(tokens[token].text.as_str());
            right = next;
        }
        let tld_known =
            labels.len() > 1 && (TLDS.contains(labels.last().unwrap()) || public_suffix(&labels));
        let provider = PROVIDERS.contains(&labels[0]);
        if !(tld_known || provider) {
            continue;
        }
        let range = (pieces[left].1, pieces[right].2);
        if found.last().is_none_or(|last| last.1 <= range.0) {
            found.push(range);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tokens;

    fn emails(text: &str) -> Vec<String> {
        let view = View::of(text);
        let tokens = tokens(&view);
        find(&view, &tokens)
            .into_iter()
            .map(|(a, b)| text[view.original(a, b)].to_owned())
            .collect()
    }

    #[test]
    fn plain_and_spelled_addresses_are_found() {
        assert_eq!(
            emails("mail mình: lan.nguyen@gmail.com nhé"),
            ["lan.nguyen@gmail.com"]
        );
        assert_eq!(
            emails("lan_nguyen a còng gmail chấm com"),
            ["lan_nguyen a còng gmail chấm com"]
        );
        assert_eq!(
            emails("shopabc (at) yahoo (dot) com.vn"),
            ["shopabc (at) yahoo (dot) com.vn"]
        );
        assert_eq!(emails("lan @ gmail . com"), ["lan @ gmail . com"]);
        assert_eq!(emails("gửi về hoa acong gmail"), ["hoa acong gmail"]);
    }

    #[test]
    fn at_and_dots_in_ordinary_text_are_not_addresses() {
        assert!(emails("I'm at home now").is_empty());
        assert!(emails("giá 1.290.000 at shop").is_empty());
        assert!(emails("hàng về lúc 9 giờ chấm công").is_empty());
    }
}
