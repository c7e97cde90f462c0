//! A real NATS server with JetStream for the scaled-out tests: Debian's
//! `nats-server`, on a free loopback port, storing in a temporary
//! directory.

use std::process::{Child, Command, Stdio};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn binary() -> &'static str {
    // Debian installs it in /usr/sbin, not on every user's PATH.
    if std::path::Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    Command::new(binary())
        .args(["-js", "-a", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-sd")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)")
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let server = NatsServer {
            child: spawn(port, dir.path()),
            port,
            _dir: dir,
        };
        crate::wait_for_port(port, "nats-server").await;
        server
    }

    /// `kill -9`, then the server again on the same port and store.
    pub async fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, self._dir.path());
        crate::wait_for_port(self.port, "nats-server").await;
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
