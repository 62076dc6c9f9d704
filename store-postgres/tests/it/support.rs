//! Helpers shared by the integration tests.

use std::future::Future;
use std::time::Duration;

use annals::{NewEvent, StreamId};
use annals_postgres::PostgresStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::time::Instant;

/// A roomier pool than `#[sqlx::test]`'s five connections, on the test's own database, for tests that hold
/// transactions open while other writers and readers work. Close it at the end of the test.
pub async fn big_pool(options: PgConnectOptions, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .unwrap()
}

/// A migrated store in the default schema.
pub async fn store(pool: PgPool) -> PostgresStore {
    let store = PostgresStore::from_pool(pool);
    store.migrate().await.unwrap();
    store
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new("ThingHappened", serde_json::json!({"n": n}))
}

/// Polls `condition` until it holds, failing the test after `deadline` (a wait on a condition, not a sleep).
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !condition().await {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the backend `pid` is blocked on a lock.
pub async fn until_blocked_on_lock(pool: &PgPool, pid: i32) {
    eventually("the backend waits on a lock", Duration::from_secs(30), || async {
        sqlx::query_scalar::<Postgres, bool>(
            "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap()
    })
    .await;
}
