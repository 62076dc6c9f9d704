//! `bank serve` on PostgreSQL stops gracefully on SIGTERM (what every deploy sends), not only on Ctrl-C: it exits
//! 0, and its projections' leases are released, so the next instance takes over at once. A real child process,
//! really signalled.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::restart_after_sigkill::serve;
use crate::support::postgres_config;

#[sqlx::test(migrations = false)]
async fn bank_serve_stops_gracefully_on_sigterm(pool: sqlx::PgPool) {
    let config = postgres_config(&pool);
    let url = config.database_url.clone().unwrap();
    let client = reqwest::Client::new();
    let (mut bank, _) = serve(&url, &config.schema, &client).await;
    let opened = client
        .post(format!("{}/accounts", bank.base))
        .json(&json!({"id": "term", "owner": "Term"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::CREATED);
    let caught_up = client
        .get(format!("{}/accounts/term?min_position=1", bank.base))
        .send()
        .await
        .unwrap();
    assert_eq!(caught_up.status(), StatusCode::OK, "its projections run");
    let leases = format!(
        "SELECT count(*) FROM {}_projections.slots WHERE owner IS NOT NULL",
        config.schema
    );
    let owned: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(leases.clone()))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(owned > 0, "the running service owns its projections");

    // The workspace forbids `unsafe` (so no `libc::kill`): the `kill` utility sends the signal.
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &bank.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "SIGTERM sent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = bank.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "bank serve did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    let owned: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(leases))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        owned, 0,
        "every lease released: the next instance takes over at once"
    );
}
