//! The bank on its embedded default: `bank serve` with no database URL keeps everything in one SQLite file in
//! `--data-dir`. Real child processes: a service killed with SIGKILL and restarted still has its accounts; while
//! a service runs, `bank projections ...` in a second process sees its real head and rebuilds a read model
//! without stopping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use annals_nats::async_nats;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::bank_process::Bank;
use crate::jetstream::{fresh_feed, nats_url};

/// A scratch data directory, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bank-data-{}", uuid::Uuid::now_v7()));
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bank <subcommand> --data-dir <dir>`, with no database URL in its environment.
fn bank(subcommand: &str, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
    command
        .arg(subcommand)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    command
}

/// Starts `bank serve` on `dir` and waits until `/health` answers.
async fn serve(dir: &Path, client: &reqwest::Client) -> Bank {
    Bank::start(bank("serve", dir), client).await.0
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let reply = client.post(url).json(&body).send().await.unwrap();
    assert!(reply.status().is_success(), "{reply:?}");
    reply.json().await.unwrap()
}

/// The account's balance once the read model has reached `position`.
async fn balance(client: &reqwest::Client, bank: &Bank, id: &str, position: u64) -> Value {
    let reply = client
        .get(format!(
            "{}/accounts/{id}?min_position={position}",
            bank.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let body: Value = reply.json().await.unwrap();
    body["balance"].clone()
}

/// Runs `bank projections <args>` on `dir` to its end.
fn projections(dir: &Path, args: &[&str]) -> Output {
    let output = bank("projections", dir).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "bank projections {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_service_killed_and_restarted_still_has_its_accounts() {
    let dir = DataDir::new();
    let client = reqwest::Client::new();
    let first = serve(&dir.0, &client).await;
    post(
        &client,
        format!("{}/accounts", first.base),
        json!({"id": "kept", "owner": "Kept"}),
    )
    .await;
    let deposited = post(
        &client,
        format!("{}/accounts/kept/deposit", first.base),
        json!({"amount": 250}),
    )
    .await;
    let position = deposited["position"].as_u64().unwrap();
    drop(first); // SIGKILL

    let second = serve(&dir.0, &client).await;
    assert_eq!(balance(&client, &second, "kept", position).await, 250);
    let history = client
        .get(format!(
            "{}/accounts/kept/history?min_position={position}",
            second.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_status_and_rebuild_in_a_second_process_work_on_the_running_service() {
    let dir = DataDir::new();
    let client = reqwest::Client::new();
    let service = serve(&dir.0, &client).await;
    post(
        &client,
        format!("{}/accounts", service.base),
        json!({"id": "ops", "owner": "Ops"}),
    )
    .await;
    let mut position = 0;
    for _ in 0..5 {
        let reply = post(
            &client,
            format!("{}/accounts/ops/deposit", service.base),
            json!({"amount": 10}),
        )
        .await;
        position = reply["position"].as_u64().unwrap();
    }
    assert_eq!(balance(&client, &service, "ops", position).await, 50);

    let status = String::from_utf8(projections(&dir.0, &["status"]).stdout).unwrap();
    let balances = status
        .lines()
        .find(|line| line.starts_with("balances"))
        .unwrap_or_else(|| panic!("no balances line in:\n{status}"));
    let columns: Vec<&str> = balances.split_whitespace().collect();
    assert_eq!(columns[2], position.to_string(), "checkpoint in:\n{status}");
    assert_eq!(columns[3], position.to_string(), "head in:\n{status}");

    let rebuilt = projections(&dir.0, &["rebuild", "balances"]);
    let said = String::from_utf8_lossy(&rebuilt.stdout).to_string()
        + &String::from_utf8_lossy(&rebuilt.stderr);
    assert!(said.contains("balances"), "{said}");

    // The service kept serving, and follows the rebuilt read model.
    let reply = post(
        &client,
        format!("{}/accounts/ops/deposit", service.base),
        json!({"amount": 1}),
    )
    .await;
    let position = reply["position"].as_u64().unwrap();
    assert_eq!(balance(&client, &service, "ops", position).await, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_from_the_data_file_and_feed_status_in_a_second_process_sees_it() {
    let dir = DataDir::new();
    let client = reqwest::Client::new();
    let (_cleanup, stream, prefix) = fresh_feed("banks");
    let nats = nats_url();
    let feed = [
        "--nats-url",
        &nats,
        "--nats-stream",
        &stream,
        "--nats-prefix",
        &prefix,
    ];
    let mut command = bank("serve", &dir.0);
    command.args(feed);
    let (service, _) = Bank::start(command, &client).await;
    post(
        &client,
        format!("{}/accounts", service.base),
        json!({"id": "fed", "owner": "Fed"}),
    )
    .await;
    let deposited = post(
        &client,
        format!("{}/accounts/fed/deposit", service.base),
        json!({"amount": 70}),
    )
    .await;
    let head = deposited["position"].as_u64().unwrap();

    // Every event reaches JetStream, once.
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.as_str()).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let messages = match jetstream.get_stream(&stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if messages >= head {
            assert_eq!(messages, head, "each event once on {stream}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{messages} of {head} events published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // `bank feed status`, run beside the service on the same directory, sees the relay's checkpoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = bank("feed", &dir.0)
            .args(feed)
            .arg("status")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "bank feed status: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if said.contains(&format!("checkpoint {head} of {head}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "feed status never caught up: {said}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
