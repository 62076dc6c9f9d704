//! End-to-end tests of the bank-account service over real HTTP, on the embedded memory store and on PostgreSQL
//! (each PostgreSQL test in its own fresh database).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Runs `scenario` against a server on the memory store (test `$memory`) and on PostgreSQL in a fresh database
/// (test `$postgres`).
macro_rules! on_both_stores {
    ($scenario:ident, $memory:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            let server = $crate::support::TestServer::memory().await;
            $scenario(&server).await;
            server.stop().await;
        }

        #[sqlx::test(migrations = false)]
        async fn $postgres(pool: sqlx::PgPool) {
            let server = $crate::support::TestServer::postgres(&pool).await;
            $scenario(&server).await;
            server.stop().await;
        }
    };
}

mod api_contract;
mod bank_process;
mod concurrency;
mod event_feed;
mod history_pages;
mod hostile_execute_at;
mod idempotency;
mod jetstream;
mod logs;
mod read_models;
mod rebuild;
mod restart_after_sigkill;
mod sqlite_default;
mod stops_gracefully_on_sigterm;
mod support;
mod transfer_legs;
mod transfers;
mod transfers_survive_a_crash;
mod transfers_survive_a_database_outage;
