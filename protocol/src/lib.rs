//! The wire contract shared by the server, clients and tests.
//!
//! Two things live here and nothing else: the MQTT topic names
//! ([`topics`]) and the MessagePack envelopes carried on them
//! ([`ClientEvent`], [`ServerEvent`]). Every envelope is a MessagePack map
//! with a protocol version `v` and a discriminator `event`; the rest of the
//! fields depend on the event. `docs/protocol.md` is the human-readable form
//! of this module and must be kept in step with it.

pub mod shape;
pub mod topics;
pub mod v2;

use serde::{Deserialize, Serialize};

/// Version written into every envelope. A server accepts envelopes whose `v`
/// is at most this; a client must ignore fields it does not know.
pub const PROTOCOL_VERSION: u8 = 1;

/// Longest `client_msg_id` accepted, in bytes.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 64;

/// Whether `id` is an acceptable `client_msg_id`: 1 to
/// [`MAX_CLIENT_MSG_ID_LEN`] bytes of ASCII letters, digits and `-_.:`
/// (UUIDs, ULIDs, nanoids, `device:counter`). The key is the sender's
/// business: a narrow alphabet keeps it from carrying text to anyone.
pub fn valid_client_msg_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_MSG_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Kind of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    Text,
    Image,
    System,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(MessageType::Text),
            "image" => Some(MessageType::Image),
            "system" => Some(MessageType::System),
            _ => None,
        }
    }
}

/// Structured context shown as a card in a `system` message: the product a
/// buyer asks about, or the order a thread is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "card", rename_all = "snake_case")]
pub enum Card {
    Product {
        product_id: String,
        title: String,
        /// Price in the smallest currency unit (VND has none smaller than 1).
        price: i64,
        currency: String,
        image_url: Option<String>,
    },
    Order {
        order_id: String,
        summary: String,
    },
    /// A notice about the conversation itself (`blocked`, `unblocked`):
    /// clients show `text`, or their own wording for `code`.
    Notice {
        code: String,
        text: String,
    },
    /// The picture of an `image` message, checked and cleaned by the
    /// server. The URLs are signed and short-lived: filled in each time
    /// the message is sent to a client (live or from history), never
    /// stored.
    Image {
        width: u32,
        height: u32,
        /// `image/jpeg` or `image/png`.
        mime: String,
        thumb_width: u32,
        thumb_height: u32,
        /// Storage keys (opaque to clients).
        image_key: String,
        thumb_key: String,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        thumb_url: Option<String>,
    },
}

/// A stored chat message as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Server-assigned, time-ordered (UUIDv7, canonical lowercase text).
    /// Sorting ids as strings sorts messages by creation.
    pub id: String,
    pub thread_id: String,
    /// Sender's user id; `system` messages carry the empty string.
    pub from: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub content: String,
    pub card: Option<Card>,
    /// The sender's idempotency key, echoed so a sender can match its outbox.
    pub client_msg_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// Short form of a thread's last message, for inbox rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePreview {
    pub message_id: String,
    pub from: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// At most [`PREVIEW_CHARS`] characters of the content.
    pub text: String,
    pub created_at: i64,
}

/// Characters of content kept in a [`MessagePreview`].
pub const PREVIEW_CHARS: usize = 100;

/// A thread's state after a change, sent to its participants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadState {
    pub thread_id: String,
    pub buyer_id: String,
    pub seller_id: String,
    pub product_id: Option<String>,
    pub order_id: Option<String>,
    pub last_message: Option<MessagePreview>,
    pub last_message_at: Option<i64>,
    pub unread_buyer: u32,
    pub unread_seller: u32,
}

/// Machine-readable error codes; stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload is not a MessagePack envelope of this protocol.
    Malformed,
    /// `v` is newer than the server understands.
    UnsupportedVersion,
    /// `event` names no client event.
    UnknownEvent,
    /// A field is missing, empty, too long or of the wrong kind.
    InvalidField,
    /// The payload or the message content exceeds the size limit.
    TooLarge,
    /// The topic is not one the sender may publish to.
    Forbidden,
    /// The message type is known but not accepted by this deployment yet.
    UnsupportedType,
    /// The referenced message or thread does not exist.
    NotFound,
    /// The server could not process the event now; retry with the same id.
    Unavailable,
    /// The message breaks the marketplace's rules (a blocked keyword, or a
    /// category the deployment blocks rather than masks); nothing stored.
    ContentBlocked,
    /// Too many messages (or threads, or the same text into many threads)
    /// too fast; retry after `retry_after_ms`.
    RateLimited,
    /// Temporarily muted for repeated abuse; `retry_after_ms` says for how
    /// long.
    Muted,
    /// One participant blocked the other: nothing can be sent in their
    /// threads until it is lifted.
    ThreadBlocked,
    /// The upload of an `image` message is missing, not an accepted image
    /// (by its bytes), too large, or cannot be decoded; nothing stored.
    InvalidAttachment,
    /// The server failed on this message (it crashed processing it) and
    /// set it aside for the operator; nothing stored. Sending it again as
    /// it is will fail the same way.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnsupportedType => "unsupported_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ContentBlocked => "content_blocked",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Muted => "muted",
            ErrorCode::ThreadBlocked => "thread_blocked",
            ErrorCode::InvalidAttachment => "invalid_attachment",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error as carried inside an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Human-readable, in the user's locale (Vietnamese by default).
    pub message: String,
    /// For `rate_limited` and `muted`: when to try again.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

/// Events a client publishes to `thread/<id>/in`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClientEvent {
    SendMessage {
        /// Client-generated idempotency key (≤ 64 bytes). A second send
        /// with the same key by the same sender in the same thread is a
        /// retry: it gets the first one's ack and stores nothing.
        client_msg_id: String,
        #[serde(rename = "type")]
        kind: MessageType,
        /// Text for `text`; the upload id for `image`.
        content: String,
    },
    MarkRead {
        /// Id of the newest message the reader has seen.
        up_to: String,
    },
    Typing {
        /// `true` while composing, `false` when stopped.
        active: bool,
    },
}

/// Events the server publishes on `thread/<id>` and `user/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerEvent {
    /// On `thread/<id>`: a new message, already stored.
    MessageNew { message: Message },
    /// On `user/<sender>`: the outcome of a `send_message`.
    MessageSentAck {
        client_msg_id: String,
        thread_id: String,
        /// Present on success.
        message_id: Option<String>,
        created_at: Option<i64>,
        /// Present on failure; nothing was stored.
        error: Option<ErrorBody>,
    },
    /// On `thread/<id>`: a participant's read marker moved.
    MessageRead {
        thread_id: String,
        user_id: String,
        up_to: String,
        read_at: i64,
    },
    /// On `thread/<id>`: a participant is (not) typing. QoS 0, never stored.
    Typing {
        thread_id: String,
        user_id: String,
        active: bool,
    },
    /// On `user/<id>`: a thread's preview and unread counts changed.
    ThreadUpdated { thread: ThreadState },
    /// On `user/<sender>`, right after the ack: parts of the message were
    /// hidden before delivery (contact details), and why.
    ModerationNotice {
        /// `content_masked`.
        code: String,
        /// Human-readable, in the sender's locale.
        message: String,
        thread_id: String,
        client_msg_id: String,
        message_id: String,
        /// What was hidden: `phone`, `email`, `link`, `social_handle`,
        /// `bank_account`.
        categories: Vec<String>,
    },
    /// On `user/<id>`: something the user sent was refused.
    Error {
        #[serde(flatten)]
        error: ErrorBody,
        /// The topic the refused publish went to.
        topic: Option<String>,
        /// The `client_msg_id` or event the error refers to, when known.
        reference: Option<String>,
    },
}

/// The outer envelope: protocol version plus the event's fields, flattened
/// into one MessagePack map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<E> {
    pub v: u8,
    #[serde(flatten)]
    pub body: E,
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("payload is not a MessagePack map with `v` and `event`")]
    Malformed,
    #[error("protocol version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    #[error("invalid fields for event `{event}`: {detail}")]
    InvalidField { event: String, detail: String },
    /// A `send_message` whose `type` names no message type.
    #[error("unknown message type")]
    UnknownMessageType,
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed => ErrorCode::Malformed,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownEvent(_) => ErrorCode::UnknownEvent,
            DecodeError::InvalidField { .. } => ErrorCode::InvalidField,
            DecodeError::UnknownMessageType => ErrorCode::UnsupportedType,
        }
    }
}

const CLIENT_EVENT_NAMES: &[&str] = &["send_message", "mark_read", "typing"];

/// Only the header, decoded first so a bad body can be told apart from a
/// bad envelope.
#[derive(Deserialize)]
struct Header {
    v: u8,
    event: String,
}

/// Decodes a client envelope, telling apart garbage, a version from the
/// future, an unknown event and a known event with bad fields. Only one
/// MessagePack map, nested at most [`shape::MAX_DEPTH`] deep, gets past
/// the first line; everything else is [`DecodeError::Malformed`].
pub fn decode_client(payload: &[u8]) -> Result<ClientEvent, DecodeError> {
    shape::check(payload).map_err(|_| DecodeError::Malformed)?;
    let header: Header = rmp_serde::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
    if header.v == 0 || header.v > PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(header.v));
    }
    if !CLIENT_EVENT_NAMES.contains(&header.event.as_str()) {
        return Err(DecodeError::UnknownEvent(header.event));
    }
    let event = rmp_serde::from_slice::<Envelope<ClientEvent>>(payload)
        .map(|e| e.body)
        .map_err(|e| {
            if header.event == "send_message" && loose(payload).is_some_and(|l| l.unknown_type()) {
                return DecodeError::UnknownMessageType;
            }
            DecodeError::InvalidField {
                event: header.event.clone(),
                detail: e.to_string(),
            }
        })?;
    if let ClientEvent::SendMessage { client_msg_id, .. } = &event
        && !valid_client_msg_id(client_msg_id)
    {
        return Err(DecodeError::InvalidField {
            event: header.event,
            detail: format!(
                "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_LEN} of A-Z a-z 0-9 - _ . :"
            ),
        });
    }
    Ok(event)
}

/// The fields a refusal can name, read from any well-shaped payload.
#[derive(Deserialize)]
struct Loose {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl Loose {
    fn unknown_type(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|k| MessageType::parse(k).is_none())
    }
}

fn loose(payload: &[u8]) -> Option<Loose> {
    shape::check(payload).ok()?;
    rmp_serde::from_slice::<Loose>(payload).ok()
}

/// The `client_msg_id` of a payload that is a `send_message` (by its
/// `event` field) with a valid key, however wrong its other fields: a
/// refusal of it is a `message_sent_ack` the sender's outbox can settle.
pub fn send_reference(payload: &[u8]) -> Option<String> {
    loose(payload)
        .filter(|l| l.event.as_deref() == Some("send_message"))
        .and_then(|l| l.client_msg_id)
        .filter(|id| valid_client_msg_id(id))
}

/// Encodes any envelope as a MessagePack map with named fields.
pub fn encode<E: Serialize>(body: &E) -> Vec<u8> {
    rmp_serde::to_vec_named(&Envelope {
        v: PROTOCOL_VERSION,
        body,
    })
    .expect("protocol types always serialise")
}

/// Decodes a server envelope (used by clients and tests).
pub fn decode_server(payload: &[u8]) -> Result<ServerEvent, DecodeError> {
    shape::check(payload).map_err(|_| DecodeError::Malformed)?;
    let header: Header = rmp_serde::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
    rmp_serde::from_slice::<Envelope<ServerEvent>>(payload)
        .map(|e| e.body)
        .map_err(|e| DecodeError::InvalidField {
            event: header.event,
            detail: e.to_string(),
        })
}

/// Cuts `text` to [`PREVIEW_CHARS`] characters, on a character boundary.
pub fn preview_text(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_events_round_trip() {
        let events = [
            ClientEvent::SendMessage {
                client_msg_id: "c-1".into(),
                kind: MessageType::Text,
                content: "Chào shop, áo này còn size M không?".into(),
            },
            ClientEvent::MarkRead {
                up_to: "0190a000-0000-7000-8000-000000000000".into(),
            },
            ClientEvent::Typing { active: true },
        ];
        for event in events {
            let bytes = encode(&event);
            assert_eq!(decode_client(&bytes).unwrap(), event);
        }
    }

    #[test]
    fn server_events_round_trip() {
        let events = [
            ServerEvent::Error {
                error: ErrorBody {
                    code: ErrorCode::Malformed,
                    message: "x".into(),
                    retry_after_ms: None,
                },
                topic: Some("thread/t/in".into()),
                reference: None,
            },
            ServerEvent::MessageSentAck {
                client_msg_id: "c".into(),
                thread_id: "t".into(),
                message_id: Some("m".into()),
                created_at: Some(1),
                error: None,
            },
            ServerEvent::MessageNew {
                message: Message {
                    id: "m".into(),
                    thread_id: "t".into(),
                    from: String::new(),
                    kind: MessageType::System,
                    content: String::new(),
                    card: Some(Card::Product {
                        product_id: "p".into(),
                        title: "Áo".into(),
                        price: 150_000,
                        currency: "VND".into(),
                        image_url: None,
                    }),
                    client_msg_id: None,
                    created_at: 5,
                },
            },
        ];
        for event in events {
            let bytes = encode(&event);
            assert_eq!(decode_server(&bytes).unwrap(), event);
        }
    }

    #[test]
    fn envelope_is_a_named_map_with_version() {
        let bytes = encode(&ClientEvent::Typing { active: false });
        #[derive(Deserialize)]
        struct Probe {
            v: u8,
            event: String,
            active: bool,
        }
        let probe: Probe = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            (probe.v, probe.event.as_str(), probe.active),
            (1, "typing", false)
        );
    }

    #[test]
    fn decode_errors_are_classified() {
        assert_eq!(decode_client(b"\xc1garbage"), Err(DecodeError::Malformed));
        let future = rmp_serde::to_vec_named(&Header {
            v: 9,
            event: "typing".into(),
        });
        assert_eq!(
            decode_client(&future.unwrap()),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let unknown = rmp_serde::to_vec_named(&Header {
            v: 1,
            event: "join".into(),
        });
        assert_eq!(
            decode_client(&unknown.unwrap()),
            Err(DecodeError::UnknownEvent("join".into()))
        );
        let missing = rmp_serde::to_vec_named(&Header {
            v: 1,
            event: "send_message".into(),
        });
        assert!(matches!(
            decode_client(&missing.unwrap()),
            Err(DecodeError::InvalidField { .. })
        ));
    }

    /// Hostile shapes are `malformed` before any recursive decoder runs:
    /// 800 levels in an ignored field overflowed a debug build's stack.
    #[test]
    fn deep_arrays_and_trailing_bytes_are_malformed() {
        let mut deep = rmp_serde::to_vec_named(&Header {
            v: 1,
            event: "typing".into(),
        })
        .unwrap();
        deep[0] = 0x83; // one more entry: "x": [[[…]]]
        deep.extend([0xa1, b'x']);
        deep.extend(std::iter::repeat_n(0x91, 800));
        deep.push(0x90);
        assert_eq!(decode_client(&deep), Err(DecodeError::Malformed));
        assert_eq!(send_reference(&deep), None);
        assert_eq!(decode_server(&deep), Err(DecodeError::Malformed));
        // The protocol is maps: an array is not read by position.
        let array = rmp_serde::to_vec(&(1u8, "send_message", "c-1", "text", "hi")).unwrap();
        assert_eq!(decode_client(&array), Err(DecodeError::Malformed));
        let mut trailing = encode(&ClientEvent::Typing { active: true });
        trailing.push(0xc0);
        assert_eq!(decode_client(&trailing), Err(DecodeError::Malformed));
    }

    #[test]
    fn client_msg_ids_are_short_and_plain() {
        let send = |id: &str, kind: &str| {
            #[derive(Serialize)]
            struct Send<'a> {
                v: u8,
                event: &'a str,
                client_msg_id: &'a str,
                #[serde(rename = "type")]
                kind: &'a str,
                content: &'a str,
            }
            rmp_serde::to_vec_named(&Send {
                v: 1,
                event: "send_message",
                client_msg_id: id,
                kind,
                content: "hi",
            })
            .unwrap()
        };
        for ok in [
            "c-1",
            "0190a000-0000-7000-8000-000000000000",
            "01HZX3:17",
            "a_b.c",
        ] {
            assert!(decode_client(&send(ok, "text")).is_ok(), "{ok}");
            assert_eq!(send_reference(&send(ok, "text")).as_deref(), Some(ok));
        }
        for bad in [
            "",
            "zalo.me/0938471265",
            "gọi tôi",
            "a b",
            &"x".repeat(65),
            "a\nb",
        ] {
            assert!(
                matches!(
                    decode_client(&send(bad, "text")),
                    Err(DecodeError::InvalidField { .. })
                ),
                "{bad:?}"
            );
            assert_eq!(send_reference(&send(bad, "text")), None, "{bad:?}");
        }
        // An unknown type is its own refusal, and the key is still readable.
        assert_eq!(
            decode_client(&send("c-9", "video")),
            Err(DecodeError::UnknownMessageType)
        );
        assert_eq!(
            send_reference(&send("c-9", "video")).as_deref(),
            Some("c-9")
        );
        assert_eq!(
            DecodeError::UnknownMessageType.code(),
            ErrorCode::UnsupportedType
        );
    }

    #[test]
    fn preview_cuts_on_char_boundary() {
        let long = "ệ".repeat(150);
        let p = preview_text(&long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
        assert_eq!(preview_text("ngắn"), "ngắn");
    }

    impl Serialize for Header {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("v", &self.v)?;
            m.serialize_entry("event", &self.event)?;
            m.end()
        }
    }
}
