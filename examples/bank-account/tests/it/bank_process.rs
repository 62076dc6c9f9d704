//! A real `bank serve` child process for the tests that kill, restart or signal it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// A `bank serve` process; killed (SIGKILL) when dropped.
pub(crate) struct Bank {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Bank {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Bank {
    /// Runs `serve` (a `bank serve` command with its store arguments) on a free port, quietly, and waits until
    /// `/health` answers; returns it and when it first answered.
    pub(crate) async fn start(mut serve: Command, client: &reqwest::Client) -> (Self, Instant) {
        let port = free_port();
        let child = serve
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the bank binary runs");
        let bank = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(reply) = client.get(format!("{}/health", bank.base)).send().await
                && reply.status() == StatusCode::OK
            {
                return (bank, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "bank serve never answered /health"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
