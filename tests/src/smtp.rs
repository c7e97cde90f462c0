//! A real SMTP server for the e-mail tests: Debian's `python3-aiosmtpd`,
//! storing what it receives in a Maildir, which the tests read back and
//! decode (RFC 2047 subjects, transfer encodings) with `mailparse`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

/// One received e-mail, decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let maildir = dir.path().join("maildir");
        let port = crate::free_port();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3-aiosmtpd (apt-get install python3-aiosmtpd)");
        let server = SmtpServer {
            child,
            port,
            maildir,
            _dir: dir,
        };
        crate::wait_for_port(port, "aiosmtpd").await;
        server
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every e-mail received so far.
    pub fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let raw = std::fs::read(entry.path()).expect("mail file");
                let parsed = mailparse::parse_mail(&raw).expect("a parseable e-mail");
                let header = |name: &str| {
                    use mailparse::MailHeaderMap;
                    parsed.headers.get_first_value(name).unwrap_or_default()
                };
                out.push(Mail {
                    to: header("To"),
                    subject: header("Subject"),
                    body: parsed.get_body().expect("a decodable body"),
                });
            }
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
