//! The `balances` and `history` read models: read-your-writes with `?min_position=N`, and `504` when they lag.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestServer;

async fn reads_see_their_own_writes(server: &TestServer) {
    let opened = server.open("reader", "Alice").await.position();
    let balance = server
        .get(&format!("/accounts/reader?min_position={opened}"))
        .await;
    assert_eq!(balance.status, StatusCode::OK, "{balance:?}");
    assert_eq!(
        balance.body,
        json!({"id": "reader", "owner": "Alice", "balance": 0, "status": "open", "version": 1})
    );

    let deposited = server
        .post("/accounts/reader/deposit", &json!({"amount": 500}))
        .await
        .position();
    let balance = server
        .get(&format!("/accounts/reader?min_position={deposited}"))
        .await;
    assert_eq!(
        (
            balance.body["balance"].as_u64(),
            balance.body["version"].as_u64()
        ),
        (Some(500), Some(2))
    );

    // An idempotent write (appended inside the service's own transaction) is readable too.
    let withdrawn = server
        .send(
            Method::POST,
            "/accounts/reader/withdraw",
            Some(&json!({"amount": 200})),
            &[("idempotency-key", "reader-wd")],
        )
        .await
        .position();
    let history = server
        .get(&format!(
            "/accounts/reader/history?min_position={withdrawn}"
        ))
        .await;
    assert_eq!(history.status, StatusCode::OK, "{history:?}");
    let items = history.body["items"].as_array().unwrap();
    let summary: Vec<_> = items
        .iter()
        .map(|i| {
            (
                i["position"].as_u64().unwrap(),
                i["kind"].as_str().unwrap(),
                i["amount"].as_u64(),
                i["balance_after"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (opened, "opened", None, 0),
            (deposited, "deposit", Some(500), 500),
            (withdrawn, "withdrawal", Some(200), 300),
        ]
    );
    assert!(items.iter().all(|i| i["recorded_at"].is_string()));

    server
        .post("/accounts/reader/withdraw", &json!({"amount": 300}))
        .await;
    let closed = server
        .post("/accounts/reader/close", &json!({}))
        .await
        .position();
    let balance = server
        .get(&format!("/accounts/reader?min_position={closed}"))
        .await;
    assert_eq!(balance.body["status"], "closed");
    assert_eq!(balance.body["balance"], 0);
    assert_eq!(balance.body["version"], 5);
    let history = server
        .get(&format!("/accounts/reader/history?min_position={closed}"))
        .await;
    let last = history.body["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["kind"].as_str(), last["balance_after"].as_u64()),
        (Some("closed"), Some(0))
    );

    server
        .get(&format!("/accounts/nobody?min_position={closed}"))
        .await
        .assert_error(404, "account_not_found");
    server
        .get(&format!("/accounts/nobody/history?min_position={closed}"))
        .await
        .assert_error(404, "account_not_found");
    for query in [
        "min_position=abc",
        "min_position=-1",
        "min_position=1.5",
        "colour=red",
    ] {
        let reply = server.get(&format!("/accounts/reader?{query}")).await;
        reply.assert_error(400, "invalid_request");
    }
}

async fn a_lagging_read_model_answers_504(server: &TestServer) {
    // The read models do not run: a real position, the store's head, is one they have not reached.
    let position = server.open("lagging", "Alice").await.position();
    for path in ["/accounts/lagging", "/accounts/lagging/history"] {
        server
            .get(&format!("{path}?min_position={position}"))
            .await
            .assert_error(504, "projection_lagging");
    }
}

/// No write was handed a position beyond the store's head, so no read model can reach it: after the read's wait
/// for the store's head (200 ms here) the read is refused with `422`, not `504`. (A position a write answered
/// with is waited for instead, while an append below it commits: `annals-axum`'s
/// `a_position_handed_out_above_an_append_still_committing_is_waited_for`.)
async fn a_position_no_write_was_handed_is_refused(server: &TestServer) {
    let position = server.open("ahead", "Alice").await.position();
    for far in [position + 1, position + 1_000_000, i64::MAX as u64] {
        for path in ["/accounts/ahead", "/accounts/ahead/history"] {
            server
                .get(&format!("{path}?min_position={far}"))
                .await
                .assert_error(422, "position_beyond_head");
        }
    }
    for path in ["/accounts/ahead", "/accounts/ahead/history"] {
        let reply = server.get(&format!("{path}?min_position={position}")).await;
        assert_eq!(reply.status.as_u16(), 200, "{reply:?}");
    }
}

on_both_stores!(
    reads_see_their_own_writes,
    memory_reads_see_their_own_writes,
    postgres_reads_see_their_own_writes
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_lagging_read_model_answers_504() {
    let server = TestServer::without_projections(bank_account::StoreConfig::memory(), |s| {
        s.with_read_timeout(Duration::from_millis(200))
    })
    .await;
    a_lagging_read_model_answers_504(&server).await;
    server.stop().await;
}

#[sqlx::test(migrations = false)]
async fn postgres_a_lagging_read_model_answers_504(pool: sqlx::PgPool) {
    let config = crate::support::postgres_config(&pool);
    let server = TestServer::without_projections(config, |s| {
        s.with_read_timeout(Duration::from_millis(200))
    })
    .await;
    a_lagging_read_model_answers_504(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_position_no_write_was_handed_is_refused() {
    let server = TestServer::start(bank_account::StoreConfig::memory(), |s| {
        s.with_read_timeout(Duration::from_millis(200))
    })
    .await;
    a_position_no_write_was_handed_is_refused(&server).await;
    server.stop().await;
}

#[sqlx::test(migrations = false)]
async fn postgres_a_position_no_write_was_handed_is_refused(pool: sqlx::PgPool) {
    let config = crate::support::postgres_config(&pool);
    let server =
        TestServer::start(config, |s| s.with_read_timeout(Duration::from_millis(200))).await;
    a_position_no_write_was_handed_is_refused(&server).await;
    server.stop().await;
}
