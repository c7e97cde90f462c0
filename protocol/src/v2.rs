//! Protocol version 2: one topic per user for everything the server
//! says, compact keys, optional keys omitted, and the send's answer in
//! the MQTT 5 PUBACK. `docs/asyncapi.yaml` is its machine-readable form,
//! `docs/protocol.md` the guide.
//!
//! The version is the topic family: a client publishes to `t/<thread>`
//! and subscribes to `u/<me>`, so no payload carries a version key.

use serde::{Deserialize, Serialize};

use crate::{
    Card, ClientEvent, DecodeError, ErrorCode, MAX_CLIENT_MSG_ID_LEN, MessageType, shape,
    valid_client_msg_id,
};

/// Topic a user's devices subscribe to: every event for them.
pub fn user(user_id: &str) -> String {
    format!("u/{user_id}")
}

/// Topic a participant publishes a thread's commands to.
pub fn thread(thread_id: &str) -> String {
    format!("t/{thread_id}")
}

/// User Property names of an MQTT 5 PUBACK that answers a `msg`.
pub mod puback {
    /// The stored message's id (success).
    pub const ID: &str = "id";
    /// Its `created_at`, decimal milliseconds (success).
    pub const TS: &str = "ts";
    /// The error code (refusal): authoritative over the reason code.
    pub const CODE: &str = "code";
    /// Milliseconds to wait before retrying (refusal, when known).
    pub const RETRY: &str = "retry";

    /// The PUBACK reason code of a refusal: a coarse class that generic
    /// MQTT tooling understands; the `code` property says exactly.
    pub fn reason_code(code: crate::ErrorCode) -> u8 {
        use crate::ErrorCode::*;
        match code {
            Malformed | UnsupportedVersion | UnknownEvent | InvalidField | TooLarge
            | UnsupportedType | InvalidAttachment => 0x99,
            Forbidden | ThreadBlocked | ContentBlocked => 0x87,
            RateLimited | Muted => 0x97,
            NotFound | Unavailable | Internal => 0x80,
        }
    }
}

fn is_text(t: &MessageType) -> bool {
    *t == MessageType::Text
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a client publishes to `t/<thread>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Command {
    Msg {
        /// The sender's idempotency key.
        #[serde(rename = "k")]
        client_msg_id: String,
        /// The text, or an `image`'s upload id.
        #[serde(rename = "b")]
        content: String,
        #[serde(rename = "t", default = "text", skip_serializing_if = "is_text")]
        kind: MessageType,
    },
    Read {
        /// The newest message seen.
        #[serde(rename = "id")]
        up_to: String,
    },
    Typing {
        #[serde(rename = "on")]
        active: bool,
    },
}

fn text() -> MessageType {
    MessageType::Text
}

impl From<Command> for ClientEvent {
    fn from(c: Command) -> Self {
        match c {
            Command::Msg {
                client_msg_id,
                content,
                kind,
            } => ClientEvent::SendMessage {
                client_msg_id,
                kind,
                content,
            },
            Command::Read { up_to } => ClientEvent::MarkRead { up_to },
            Command::Typing { active } => ClientEvent::Typing { active },
        }
    }
}

/// A stored message as one user's topic gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    #[serde(rename = "th")]
    pub thread_id: String,
    pub id: String,
    /// Absent for `system` messages.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "t", default = "text", skip_serializing_if = "is_text")]
    pub kind: MessageType,
    #[serde(rename = "b", default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    #[serde(rename = "ts")]
    pub created_at: i64,
    /// The sender's key: on the sender's own copies only.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// The topic's user's unread count in the thread after it.
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    pub unread: u32,
}

/// Short form of a thread's last message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub id: String,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "t", default = "text", skip_serializing_if = "is_text")]
    pub kind: MessageType,
    #[serde(rename = "b", default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(rename = "ts")]
    pub created_at: i64,
}

/// A thread's row in one user's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadRow {
    #[serde(rename = "th")]
    pub thread_id: String,
    pub buyer: String,
    pub seller: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Preview>,
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    pub unread: u32,
}

/// An error inside an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Err {
    pub code: ErrorCode,
    /// In the user's locale.
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

/// What the server publishes on `u/<user>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Event {
    Msg(Msg),
    /// The answer to a `msg` that neither a PUBACK nor the sender's own
    /// copy gave: a refusal, or a retry of a stored message.
    Ack {
        #[serde(rename = "th")]
        thread_id: String,
        #[serde(rename = "k")]
        client_msg_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(rename = "ts", default, skip_serializing_if = "Option::is_none")]
        created_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<Err>,
    },
    Read {
        #[serde(rename = "th")]
        thread_id: String,
        #[serde(rename = "u")]
        user_id: String,
        #[serde(rename = "id")]
        up_to: String,
        #[serde(rename = "ts")]
        read_at: i64,
        /// On the reader's own topic: their unread count after it.
        #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
        unread: Option<u32>,
    },
    Typing {
        #[serde(rename = "th")]
        thread_id: String,
        #[serde(rename = "u")]
        user_id: String,
        #[serde(rename = "on")]
        active: bool,
    },
    Thread(ThreadRow),
    Masked {
        #[serde(rename = "th")]
        thread_id: String,
        #[serde(rename = "k")]
        client_msg_id: String,
        id: String,
        /// What was stored and delivered.
        #[serde(rename = "b")]
        content: String,
        cats: Vec<String>,
        msg: String,
    },
    Error {
        code: ErrorCode,
        msg: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

const COMMANDS: &[&str] = &["msg", "read", "typing"];

#[derive(Deserialize)]
struct Header {
    e: String,
}

/// The fields a refusal can name, read from any well-shaped payload.
#[derive(Deserialize)]
struct Loose {
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    k: Option<String>,
    #[serde(default)]
    t: Option<String>,
}

fn loose(payload: &[u8]) -> Option<Loose> {
    shape::check(payload).ok()?;
    rmp_serde::from_slice::<Loose>(payload).ok()
}

/// Decodes a command, classified as [`crate::decode_client`] does. Only
/// one MessagePack map, nested at most [`shape::MAX_DEPTH`] deep, is read.
pub fn decode_command(payload: &[u8]) -> Result<ClientEvent, DecodeError> {
    shape::check(payload).map_err(|_| DecodeError::Malformed)?;
    let header: Header = rmp_serde::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
    if !COMMANDS.contains(&header.e.as_str()) {
        return Err(DecodeError::UnknownEvent(header.e));
    }
    let command = rmp_serde::from_slice::<Command>(payload).map_err(|e| {
        let unknown_type = loose(payload)
            .and_then(|l| l.t)
            .is_some_and(|t| MessageType::parse(&t).is_none());
        if header.e == "msg" && unknown_type {
            return DecodeError::UnknownMessageType;
        }
        DecodeError::InvalidField {
            event: header.e.clone(),
            detail: e.to_string(),
        }
    })?;
    if let Command::Msg { client_msg_id, .. } = &command
        && !valid_client_msg_id(client_msg_id)
    {
        return Err(DecodeError::InvalidField {
            event: header.e,
            detail: format!("k must be 1 to {MAX_CLIENT_MSG_ID_LEN} of A-Z a-z 0-9 - _ . :"),
        });
    }
    Ok(command.into())
}

/// The key of a payload that is a `msg` with a valid `k`, however wrong
/// its other fields: its refusal settles the sender's outbox entry.
pub fn send_reference(payload: &[u8]) -> Option<String> {
    loose(payload)
        .filter(|l| l.e.as_deref() == Some("msg"))
        .and_then(|l| l.k)
        .filter(|k| valid_client_msg_id(k))
}

/// Encodes a v2 event or command (no version key: the topic says it).
pub fn encode<E: Serialize>(body: &E) -> Vec<u8> {
    // Most events fit: growing from empty cost a send three reallocations.
    let mut out = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut out, body).expect("protocol types always serialise");
    out
}

/// Decodes a server event (clients and tests).
pub fn decode_event(payload: &[u8]) -> Result<Event, DecodeError> {
    shape::check(payload).map_err(|_| DecodeError::Malformed)?;
    let header: Header = rmp_serde::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
    rmp_serde::from_slice::<Event>(payload).map_err(|e| DecodeError::InvalidField {
        event: header.e,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_omit_defaults() {
        let send = Command::Msg {
            client_msg_id: "c7a1".into(),
            content: "Còn size M không?".into(),
            kind: MessageType::Text,
        };
        let bytes = encode(&send);
        // {"e":"msg","k":"c7a1","b":"Còn size M không?"}: three keys, no type.
        assert_eq!(bytes[0], 0x83);
        assert_eq!(bytes.len(), 1 + 2 + 4 + 2 + 5 + 2 + 20);
        assert_eq!(decode_command(&bytes).unwrap(), ClientEvent::from(send));
        for c in [
            Command::Msg {
                client_msg_id: "c-2".into(),
                content: "up_1".into(),
                kind: MessageType::Image,
            },
            Command::Read {
                up_to: "0190a000-0000-7000-8000-000000000000".into(),
            },
            Command::Typing { active: false },
        ] {
            assert_eq!(decode_command(&encode(&c)).unwrap(), ClientEvent::from(c));
        }
    }

    #[test]
    fn refusals_are_classified_and_keep_the_key() {
        assert_eq!(decode_command(b"\xc1x"), Err(DecodeError::Malformed));
        let unknown = rmp_serde::to_vec_named(&serde_json::json!({"e": "join"})).unwrap();
        assert_eq!(
            decode_command(&unknown),
            Err(DecodeError::UnknownEvent("join".into()))
        );
        let video = rmp_serde::to_vec_named(
            &serde_json::json!({"e": "msg", "k": "c-9", "b": "x", "t": "video"}),
        )
        .unwrap();
        assert_eq!(decode_command(&video), Err(DecodeError::UnknownMessageType));
        assert_eq!(send_reference(&video).as_deref(), Some("c-9"));
        let no_body =
            rmp_serde::to_vec_named(&serde_json::json!({"e": "msg", "k": "c-9"})).unwrap();
        assert!(matches!(
            decode_command(&no_body),
            Err(DecodeError::InvalidField { .. })
        ));
        assert_eq!(send_reference(&no_body).as_deref(), Some("c-9"));
        let bad_key =
            rmp_serde::to_vec_named(&serde_json::json!({"e": "msg", "k": "gọi tôi", "b": "x"}))
                .unwrap();
        assert!(matches!(
            decode_command(&bad_key),
            Err(DecodeError::InvalidField { .. })
        ));
        assert_eq!(send_reference(&bad_key), None);
        // A v1 envelope on a v2 topic names no v2 command.
        let v1 = crate::encode(&ClientEvent::Typing { active: true });
        assert!(matches!(
            decode_command(&v1),
            Err(DecodeError::Malformed
                | DecodeError::UnknownEvent(_)
                | DecodeError::InvalidField { .. })
        ));
    }

    #[test]
    fn a_recipients_message_is_small() {
        let msg = Event::Msg(Msg {
            thread_id: "t_01".into(),
            id: "019077fd-3000-7b21-9d4a-5e6f7a8b9c0d".into(),
            from: Some("b42".into()),
            kind: MessageType::Text,
            content: "Còn size M không?".into(),
            card: None,
            created_at: 1_720_000_000_000,
            client_msg_id: None,
            unread: 1,
        });
        let bytes = encode(&msg);
        assert_eq!(decode_event(&bytes).unwrap(), msg);
        // e, th, id, f, b, ts, n: the keys cost 7 × ~3 bytes, not 77.
        assert!(bytes.len() < 110, "{}", bytes.len());
    }

    #[test]
    fn events_round_trip() {
        let events = [
            Event::Ack {
                thread_id: "t".into(),
                client_msg_id: "c".into(),
                id: None,
                created_at: None,
                err: Some(Err {
                    code: ErrorCode::RateLimited,
                    msg: "chậm lại".into(),
                    retry: Some(1500),
                }),
            },
            Event::Read {
                thread_id: "t".into(),
                user_id: "s7".into(),
                up_to: "m".into(),
                read_at: 5,
                unread: Some(0),
            },
            Event::Typing {
                thread_id: "t".into(),
                user_id: "b".into(),
                active: true,
            },
            Event::Thread(ThreadRow {
                thread_id: "t".into(),
                buyer: "b".into(),
                seller: "s".into(),
                product: Some("p".into()),
                order: None,
                last: Some(Preview {
                    id: "m".into(),
                    from: None,
                    kind: MessageType::System,
                    text: "Áo".into(),
                    created_at: 3,
                }),
                unread: 2,
            }),
            Event::Msg(Msg {
                thread_id: "t".into(),
                id: "m".into(),
                from: None,
                kind: MessageType::System,
                content: String::new(),
                card: Some(Card::Order {
                    order_id: "o1".into(),
                    summary: "2 món".into(),
                }),
                created_at: 9,
                client_msg_id: None,
                unread: 0,
            }),
            Event::Masked {
                thread_id: "t".into(),
                client_msg_id: "c".into(),
                id: "m".into(),
                content: "gọi ***".into(),
                cats: vec!["phone".into()],
                msg: "đã ẩn".into(),
            },
            Event::Error {
                code: ErrorCode::Forbidden,
                msg: "x".into(),
                retry: None,
                topic: Some("t/x".into()),
                reference: None,
            },
        ];
        for event in events {
            assert_eq!(decode_event(&encode(&event)).unwrap(), event);
        }
    }

    #[test]
    fn every_error_code_has_a_refusal_reason() {
        for code in [
            ErrorCode::Malformed,
            ErrorCode::Forbidden,
            ErrorCode::Muted,
            ErrorCode::Unavailable,
        ] {
            assert!(puback::reason_code(code) >= 0x80);
        }
    }
}
