//! The real `bank` binary as a child process on PostgreSQL, SIGKILLed in the middle of a run of random
//! concurrent transfers and started again: every transfer still ends, money is conserved, no transfer is applied
//! twice; a scheduled transfer fires after a restart that happened before its time; a cancelled one never does.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::bank_process::free_port;
use crate::support::postgres_config;
use crate::transfers::{check, prepare, send_all};

/// A `bank serve` child process on `database_url`, listening on `port`.
struct Bank {
    child: Child,
}

impl Bank {
    async fn start(database_url: &str, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let bank = Self { child };
        let client = reqwest::Client::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                && response.status() == StatusCode::OK
            {
                return bank;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the bank did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, no lease released.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_of(base: &str, id: &str) -> Value {
    reqwest::get(format!("{base}/transfers/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn transfers_end_and_conserve_money_across_a_sigkill(pool: sqlx::PgPool) {
    let url = postgres_config(&pool).database_url.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let bank = Bank::start(&url, port).await;
    let run = prepare(&base, 11, 100, 600).await;

    // Scheduled transfers: one due after the restart, one cancelled before it.
    let due = chrono::Utc::now() + chrono::Duration::seconds(15);
    let (status, _) = post(
        &base,
        "/transfers",
        json!({"id": "sched-1", "from": "acc-001", "to": "acc-002", "amount": 1, "execute_at": due.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = post(
        &base,
        "/transfers",
        json!({"id": "sched-2", "from": "acc-001", "to": "acc-003", "amount": 1, "execute_at": due.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let cancelled = reqwest::Client::new()
        .delete(format!("{base}/transfers/sched-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);

    // Random transfers from 8 clients; the service is killed once a sixth of them were accepted, and started
    // again; the clients retry what was not answered (the transfer id makes a retry harmless).
    let progress = AtomicUsize::new(0);
    let sending = send_all(&base, &run.transfers, 8, &progress);
    let crash = async {
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        while progress.load(Ordering::SeqCst) < run.transfers.len() / 6 {
            assert!(
                tokio::time::Instant::now() < until,
                "the run did not get going"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            chrono::Utc::now() < due,
            "the restart must happen before the scheduled time; the run was too slow"
        );
        bank.kill();
        Bank::start(&url, port).await
    };
    let (ids, restarted) = tokio::join!(sending, crash);
    assert_eq!(ids.len(), run.transfers.len());

    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = status_of(&base, "sched-1").await;
        if view["status"] != "scheduled" && view["status"] != "pending" {
            assert_eq!(view["status"], "completed", "{view}");
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // sched-1 moved 1 from acc-001 to acc-002 between the run's accounts, so the books still balance.
    check(&base, &run, &ids).await;
    assert!(chrono::Utc::now() >= due);
    let view = status_of(&base, "sched-2").await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let events: Value = reqwest::get(format!("{base}/accounts/acc-003/events"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["payload"]["transfer"] != "sched-2"),
        "a cancelled transfer never moves money"
    );
    restarted.kill();
}
