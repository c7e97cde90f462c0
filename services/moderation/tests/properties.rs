//! Whatever a client sends, masking never panics, never grows a message
//! without bound, and never leaves a finding's original text in place.

use chat_moderation::keywords::Keywords;
use chat_moderation::{Action, Moderator, Policy};
use proptest::prelude::*;

fn moderator() -> Moderator {
    Moderator::new(
        Policy::default(),
        Keywords::new(&["ma túy".into()], &["lừa đảo".into()]),
    )
}

/// Text made of the pieces the detectors care about, in any order.
fn chat_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9]{1,4}",
        Just(" ".to_owned()),
        Just(".".to_owned()),
        Just("@".to_owned()),
        Just("không".to_owned()),
        Just("chín".to_owned()),
        Just("a còng".to_owned()),
        Just("chấm".to_owned()),
        Just("gmail".to_owned()),
        Just("com".to_owned()),
        Just("zalo:".to_owned()),
        Just("stk".to_owned()),
        Just("https://".to_owned()),
        Just("0️⃣".to_owned()),
        Just("🌸".to_owned()),
        Just("\n".to_owned()),
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

proptest! {
    /// `needs_recent` views only the first word: it must decide as the
    /// whole view's first token would.
    #[test]
    fn the_first_word_decides_as_the_whole_text_would(text in chat_text(), any in "\\PC{0,40}") {
        use chat_moderation::tokens::tokens;
        use chat_moderation::view::View;
        for input in [&text, &any] {
            let whole = tokens(&View::of(input));
            let first = tokens(&View::of_first_word(input));
            prop_assert_eq!(whole.first(), first.first());
        }
    }

    #[test]
    fn masking_never_panics_or_grows_without_bound(text in chat_text(), any in "\\PC{0,200}") {
        let m = moderator();
        for input in [&text, &any] {
            let out = m.moderate(input, &["0912", "345"]);
            // Each placeholder is at most ~30 bytes and replaces at least
            // one character.
            prop_assert!(out.text.len() <= input.len() * 30 + 30);
            let masked = out.findings.iter().filter(|f| f.action == Action::Mask);
            for f in masked {
                prop_assert!(f.start < f.end && f.end <= input.len());
                prop_assert!(input.is_char_boundary(f.start) && input.is_char_boundary(f.end));
            }
        }
    }

    #[test]
    fn phone_numbers_never_survive_whatever_the_separators(
        separators in prop::collection::vec("[ .\\-_*]{0,2}", 9),
        prefix in prop::sample::select(vec!["090", "091", "098", "032", "086", "070"]),
        rest in "[0-9]{7}",
    ) {
        let digits: Vec<char> = format!("{prefix}{rest}").chars().collect();
        let mut text = String::from("sđt ");
        for (i, d) in digits.iter().enumerate() {
            text.push(*d);
            if i < 9 {
                text.push_str(&separators[i]);
            }
        }
        let out = moderator().moderate(&text, &[]);
        prop_assert!(out.text.contains("[ẩn số điện thoại]"), "{} -> {}", text, out.text);
        prop_assert!(!out.text.chars().any(|c| c.is_ascii_digit()), "{} -> {}", text, out.text);
    }
}
