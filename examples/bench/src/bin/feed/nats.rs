//! A nats-server of the benchmark's own: a free port, its own store directory, killed and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annals_nats::async_nats;
use anyhow::Context as _;

/// The running server.
pub(crate) struct NatsServer {
    pub(crate) url: String,
    pub(crate) version: String,
    dir: PathBuf,
    child: Child,
}

impl NatsServer {
    /// Starts `NATS_SERVER_BIN` (default `/usr/sbin/nats-server`) with JetStream and waits until it answers.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let bin =
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned());
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {bin} (set NATS_SERVER_BIN)"))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("annals-feed-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let server = Self {
            url: format!("127.0.0.1:{port}"),
            version,
            dir,
            child,
        };
        let started = Instant::now();
        loop {
            if let Ok(client) = async_nats::connect(&server.url).await {
                // JetStream is up when it answers "no such stream" for a probe.
                let js = async_nats::jetstream::new(client);
                if matches!(js.get_stream("PROBE").await, Err(e)
                    if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(_)))
                {
                    return Ok(server);
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server at {} did not answer",
                server.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
