//! The bank service on PostgreSQL, killed with SIGKILL and restarted at once, serves read-your-writes as soon as
//! it is up: its projections take over from the dead process without waiting for its lease (TTL 10 s) to run
//! out. A real `bank serve` child process, really killed.

use std::process::Command;
use std::time::Instant;

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_postgres::PostgresStore;
use reqwest::StatusCode;
use serde_json::json;

use crate::bank_process::Bank;
use crate::support::postgres_config;

/// Starts `bank serve` on `url` and waits until `/health` answers; returns it and when it first answered.
pub(crate) async fn serve(url: &str, schema: &str, client: &reqwest::Client) -> (Bank, Instant) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
    command
        .arg("serve")
        .args(["--database-url", url, "--schema", schema])
        .env_remove("DATABASE_URL");
    Bank::start(command, client).await
}

#[sqlx::test(migrations = false)]
async fn postgres_service_restarted_after_sigkill_serves_read_your_writes_at_once(
    pool: sqlx::PgPool,
) {
    let config = postgres_config(&pool);
    let url = config.database_url.clone().unwrap();
    let client = reqwest::Client::new();
    let (mut first, _) = serve(&url, &config.schema, &client).await;
    let opened = client
        .post(format!("{}/accounts", first.base))
        .json(&json!({"id": "crash", "owner": "Crash Test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::CREATED);
    let caught_up = client
        .get(format!("{}/accounts/crash?min_position=1", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        caught_up.status(),
        StatusCode::OK,
        "the first service's projections run"
    );

    first.child.kill().unwrap(); // SIGKILL: its projections' leases (10 s) stay in the table
    first.child.wait().unwrap();

    // 300 deposits land while it is down, for the restarted service to catch up on.
    let store = PostgresStore::connect(&url)
        .await
        .unwrap()
        .with_schema(&config.schema)
        .unwrap();
    let stream = StreamId::new("account-crash").unwrap();
    let events = (0..300)
        .map(|_| NewEvent::new("MoneyDeposited", json!({"amount": 1})))
        .collect();
    let last = store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .unwrap()
        .last_position;

    let (second, up) = serve(&url, &config.schema, &client).await;
    // The service waits at most 5 s for a read model (then 504), half the dead owner's lease: an answer proves
    // the takeover did not wait for it.
    for path in ["/accounts/crash", "/accounts/crash/history"] {
        let reply = client
            .get(format!("{}{path}?min_position={}", second.base, last.get()))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{path} after the restart");
        if path == "/accounts/crash" {
            let body: serde_json::Value = reply.json().await.unwrap();
            assert_eq!(body["balance"], 300);
        }
    }
    eprintln!(
        "read models current {} ms after the restarted service answered /health",
        up.elapsed().as_millis()
    );
    drop(second);
    store.pool().close().await;
}
