//! The bank and `bank-notifier` running together as separate processes: the bank publishes its events to
//! JetStream (real NATS), the notifier consumes them through its inbox into its own schema and serves them; both
//! stop gracefully (exit 0) on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bank_process::free_port;
use crate::jetstream::{fresh_feed, nats_url};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn until<T>(what: &str, deadline: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn the_notifier_service_sees_every_account_event_once(pool: sqlx::PgPool) {
    let url = sqlx::ConnectOptions::to_url_lossy(&*pool.connect_options()).to_string();
    let (_cleanup, stream, prefix) = fresh_feed("bankt");
    let (bank_port, notifier_port) = (free_port(), free_port());
    let mut bank_process = Killed(
        Command::new(env!("CARGO_BIN_EXE_bank"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{bank_port}"),
                "--database-url",
                &url,
            ])
            .args([
                "--nats-url",
                &nats_url(),
                "--nats-stream",
                &stream,
                "--nats-prefix",
                &prefix,
            ])
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut notifier_process = Killed(
        Command::new(env!("CARGO_BIN_EXE_bank-notifier"))
            .args([
                "--database-url",
                &url,
                "--listen",
                &format!("127.0.0.1:{notifier_port}"),
            ])
            .args([
                "--nats-url",
                &nats_url(),
                "--nats-stream",
                &stream,
                "--nats-prefix",
                &prefix,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let bank = format!("http://127.0.0.1:{bank_port}");
    let notifier = format!("http://127.0.0.1:{notifier_port}");
    for base in [&bank, &notifier] {
        until(
            "the service to answer",
            Duration::from_secs(60),
            async || {
                http.get(format!("{base}/health"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        )
        .await;
    }
    let post = async |path: &str, body: Value| {
        let r = http
            .post(format!("{bank}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    };
    post("/accounts", json!({"id": "feed-1", "owner": "Ada"})).await;
    post("/accounts/feed-1/deposit", json!({"amount": 1000})).await;
    post("/accounts/feed-1/withdraw", json!({"amount": 400})).await;
    post("/accounts/feed-1/withdraw", json!({"amount": 600})).await;
    post("/accounts/feed-1/close", json!({})).await;

    let list = until("four notifications", Duration::from_secs(60), async || {
        let r = http
            .get(format!("{notifier}/notifications?account=feed-1"))
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        let list = body["notifications"].as_array()?.clone();
        (list.len() >= 4).then_some(list)
    })
    .await;
    let kinds: Vec<(&str, u64, u64)> = list
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap(),
                n["amount"].as_u64().unwrap(),
                n["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("deposit", 1000, 2),
            ("withdrawal", 400, 3),
            ("withdrawal", 600, 4),
            ("closed", 0, 5)
        ]
    );
    let missing = http
        .get(format!("{notifier}/notifications"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), reqwest::StatusCode::BAD_REQUEST);

    // SIGTERM (what a deploy sends) stops both gracefully: the relay and the inbox end their batch.
    for (name, process) in [
        ("bank serve", &mut bank_process),
        ("bank-notifier", &mut notifier_process),
    ] {
        let sent = Command::new("kill")
            .args(["-TERM", &process.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "SIGTERM sent to {name}");
        let status = until("the service to exit", Duration::from_secs(30), async || {
            process.0.try_wait().unwrap()
        })
        .await;
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status:?}");
    }
}
