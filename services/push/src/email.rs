//! E-mail fallback: one digest per thread when messages stay unread, sent
//! over SMTP (`lettre`), written in the recipient's language.

use chat_core::i18n::Lang;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// Section `[email]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailConfig {
    /// `smtp://host:25`, `smtp://user:pass@host:587?tls=required` or
    /// `smtps://host:465`; e-mail is off when unset.
    pub smtp_url: Option<String>,
    /// The sender address, e.g. `Chat <no-reply@shop.example>`.
    pub from: String,
    /// How long a message stays unread before the digest goes out.
    pub delay_secs: u64,
    /// Where the e-mail's link points: `{app_url}/threads/{thread id}`.
    pub app_url: String,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: None,
            from: "Chat <no-reply@localhost>".into(),
            delay_secs: 15 * 60,
            app_url: "http://localhost:8080".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("SMTP URL: {0}")]
    Url(String),
    #[error("address {0}: {1}")]
    Address(String, String),
    #[error("building the e-mail: {0}")]
    Build(String),
    /// The server refused or could not be reached; `permanent` when the
    /// SMTP reply code says retrying will not help (5xx).
    #[error("SMTP: {reason}")]
    Send { reason: String, permanent: bool },
}

/// One unread message as it appears in a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLine {
    pub text: String,
}

/// The content of one digest e-mail, before translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub to_name: String,
    pub to_address: String,
    pub lang: Lang,
    pub sender_name: String,
    /// Unread messages, oldest first (at most a few).
    pub lines: Vec<DigestLine>,
    /// How many unread messages there are in all (capped like the badge).
    pub unread: u32,
    pub link: String,
}

/// Longest preview of one message in a digest, in characters.
const PREVIEW_CHARS: usize = 140;

fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

/// Subject and plain-text body. Pure, so the wording is tested without SMTP.
pub fn render(d: &Digest) -> (String, String) {
    let more = d.unread as usize > d.lines.len();
    let count = if d.unread >= chat_core::model::UNREAD_CAP {
        format!("{}+", chat_core::model::UNREAD_CAP - 1)
    } else {
        d.unread.to_string()
    };
    let quoted: Vec<String> = d
        .lines
        .iter()
        .map(|l| format!("  > {}", preview(&l.text)))
        .collect();
    let quoted = quoted.join("\n");
    match d.lang {
        Lang::Vi => {
            let subject = format!("{} đã nhắn cho bạn ({count} tin chưa đọc)", d.sender_name);
            let mut body = format!(
                "Chào {},\n\n{} đã gửi cho bạn {count} tin nhắn mà bạn chưa đọc:\n\n{quoted}\n",
                d.to_name, d.sender_name
            );
            if more {
                body.push_str("  …\n");
            }
            body.push_str(&format!(
                "\nTrả lời tại: {}\n\nBạn nhận được e-mail này vì có tin nhắn chưa đọc quá lâu. \
                 Mở ứng dụng để đọc và trả lời.\n",
                d.link
            ));
            (subject, body)
        }
        Lang::En => {
            let subject = format!("{} sent you a message ({count} unread)", d.sender_name);
            let mut body = format!(
                "Hi {},\n\n{} sent you {count} message(s) you have not read yet:\n\n{quoted}\n",
                d.to_name, d.sender_name
            );
            if more {
                body.push_str("  …\n");
            }
            body.push_str(&format!(
                "\nReply at: {}\n\nYou get this e-mail because messages stayed unread for a \
                 while. Open the app to read and answer them.\n",
                d.link
            ));
            (subject, body)
        }
    }
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    pub config: EmailConfig,
}

impl Mailer {
    /// `None` when no SMTP URL is configured.
    pub fn from_config(config: &EmailConfig) -> Result<Option<Mailer>, EmailError> {
        let Some(url) = &config.smtp_url else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| EmailError::Url(e.to_string()))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = config
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| {
                EmailError::Address(config.from.clone(), e.to_string())
            })?;
        Ok(Some(Mailer {
            transport,
            from,
            config: config.clone(),
        }))
    }

    pub async fn send(&self, digest: &Digest) -> Result<(), EmailError> {
        let to = Mailbox::new(
            Some(digest.to_name.clone()),
            digest
                .to_address
                .parse()
                .map_err(|e: lettre::address::AddressError| {
                    EmailError::Address(digest.to_address.clone(), e.to_string())
                })?,
        );
        let (subject, body) = render(digest);
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| EmailError::Build(e.to_string()))?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| EmailError::Send {
                permanent: e.is_permanent(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(lang: Lang, unread: u32, lines: usize) -> Digest {
        Digest {
            to_name: "Lan".into(),
            to_address: "lan@example.com".into(),
            lang,
            sender_name: "Shop Minh".into(),
            lines: (0..lines)
                .map(|i| DigestLine {
                    text: format!("tin {i}"),
                })
                .collect(),
            unread,
            link: "https://chat.example/threads/t1".into(),
        }
    }

    #[test]
    fn vietnamese_digest_names_the_sender_and_quotes_the_messages() {
        let (subject, body) = render(&digest(Lang::Vi, 2, 2));
        assert_eq!(subject, "Shop Minh đã nhắn cho bạn (2 tin chưa đọc)");
        assert!(body.starts_with("Chào Lan,"));
        assert!(body.contains("  > tin 0\n  > tin 1\n"));
        assert!(body.contains("https://chat.example/threads/t1"));
        assert!(!body.contains('…'), "nothing left out: {body}");
    }

    #[test]
    fn english_digest_and_the_capped_count() {
        let (subject, body) = render(&digest(Lang::En, 100, 5));
        assert_eq!(subject, "Shop Minh sent you a message (99+ unread)");
        assert!(body.starts_with("Hi Lan,"));
        assert!(body.contains("  …\n"), "more than quoted: {body}");
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "a".repeat(500);
        assert_eq!(preview(&long).chars().count(), PREVIEW_CHARS + 1);
        assert_eq!(preview("ngắn"), "ngắn");
    }
}
