//! Any text (and recent messages) through the masking pipeline: never a
//! panic, and the stored text is never longer than a bounded blow-up of the
//! input (placeholders replace findings).
#![no_main]

use chat_moderation::keywords::Keywords;
use chat_moderation::{Moderator, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let moderator = Moderator::new(
        Policy::default(),
        Keywords::new(&["ma túy".into()], &["lừa đảo".into()]),
    );
    // The last line plays the part of the sender's earlier messages.
    let (recent, text) = text.rsplit_once('\n').unwrap_or(("", text));
    let recent: Vec<&str> = recent.split('\n').filter(|l| !l.is_empty()).collect();
    let outcome = moderator.moderate(text, &recent);
    assert!(outcome.text.len() <= text.len() * 8 + 64, "masked text blew up");
});
