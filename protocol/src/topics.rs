//! MQTT topic names.
//!
//! Inbound and outbound topics are different on purpose: a client publishes
//! commands to `thread/<id>/in`, which nobody may subscribe to, and the
//! server publishes processed events to `thread/<id>` and `user/<id>`. So a
//! raw client publish can never reach the other participant unchecked.

/// Characters allowed in user and thread ids: they appear in topic levels,
/// so `/`, `+`, `#` and control characters are excluded, and `:` separates a
/// user id from a device suffix in MQTT client ids.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Topic on which a user receives acks, thread updates and errors.
pub fn user(user_id: &str) -> String {
    format!("user/{user_id}")
}

/// Topic on which a thread's participants receive messages, reads, typing.
pub fn thread(thread_id: &str) -> String {
    format!("thread/{thread_id}")
}

/// Topic to which a participant publishes commands for a thread.
pub fn thread_inbound(thread_id: &str) -> String {
    format!("thread/{thread_id}/in")
}

/// What a topic (or topic filter) names, after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    User(&'a str),
    Thread(&'a str),
    ThreadInbound(&'a str),
    /// v2: `u/<user>`, everything the server says to a user.
    Inbox(&'a str),
    /// v2: `t/<thread>`, a participant's commands.
    Commands(&'a str),
    /// Anything else, wildcards and `$SYS` included.
    Other,
}

/// Parses a topic name or filter. Wildcards never parse as a known topic,
/// because `+` and `#` are not valid id characters.
pub fn parse(topic: &str) -> Topic<'_> {
    let mut levels = topic.split('/');
    let parsed = match (levels.next(), levels.next(), levels.next(), levels.next()) {
        (Some("user"), Some(id), None, None) => Topic::User(id),
        (Some("thread"), Some(id), None, None) => Topic::Thread(id),
        (Some("thread"), Some(id), Some("in"), None) => Topic::ThreadInbound(id),
        (Some("u"), Some(id), None, None) => Topic::Inbox(id),
        (Some("t"), Some(id), None, None) => Topic::Commands(id),
        _ => return Topic::Other,
    };
    match parsed {
        Topic::User(id)
        | Topic::Thread(id)
        | Topic::ThreadInbound(id)
        | Topic::Inbox(id)
        | Topic::Commands(id)
            if is_valid_id(id) =>
        {
            parsed
        }
        _ => Topic::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_topics_and_refuses_wildcards() {
        assert_eq!(parse("user/u1"), Topic::User("u1"));
        assert_eq!(parse("thread/t-1"), Topic::Thread("t-1"));
        assert_eq!(parse("thread/t-1/in"), Topic::ThreadInbound("t-1"));
        assert_eq!(parse("u/u1"), Topic::Inbox("u1"));
        assert_eq!(parse("t/t-1"), Topic::Commands("t-1"));
        for bad in [
            "#",
            "+",
            "thread/+",
            "thread/#",
            "user/+",
            "thread/+/in",
            "$SYS/brokers",
            "user/u1/x",
            "thread//in",
            "user/",
            "thread/t/in/x",
            "",
            "/user/u1",
            "u/+",
            "t/#",
            "u/u1/x",
            "t/",
        ] {
            assert_eq!(parse(bad), Topic::Other, "{bad}");
        }
    }

    #[test]
    fn ids_exclude_topic_and_device_separators() {
        assert!(is_valid_id("buyer_42.a-b"));
        for bad in ["", "a/b", "a+b", "a#", "a:b", "á", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }
}
