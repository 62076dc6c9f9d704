//! The store shares its pool with the application. A connection the application put back inside an open
//! transaction (a plain `BEGIN` without `COMMIT`) must never carry the store's statements: an append on it would
//! report success without committing, and its gap marker would stop every reader of the global order.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, Position};
use annals_postgres::PostgresStore;
use sqlx::{Executor, PgPool};

use crate::support::{event, eventually, stream};

#[sqlx::test(migrations = false)]
async fn a_connection_left_inside_a_transaction_is_closed_not_used(admin: PgPool) {
    let options = admin.connect_options().as_ref().clone();
    // One connection, so the store can only get the one the application left in a transaction.
    let pool = PostgresStore::pool_options()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let store = crate::support::store(pool.clone()).await;
    {
        let mut conn = pool.acquire().await.unwrap();
        conn.execute("BEGIN").await.unwrap();
    }
    eventually(
        "the connection is back in the pool",
        Duration::from_secs(10),
        || async { pool.num_idle() == 1 },
    )
    .await;
    let done = store
        .append(
            &stream("left-open"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        )
        .await
        .unwrap();
    // Committed for everyone: another pool sees it, and the global order is not held back.
    let loaded: Vec<u64> = sqlx::query_scalar(
        "SELECT stream_version FROM annals.events WHERE stream_id = 'left-open'",
    )
    .fetch_all(&admin)
    .await
    .unwrap()
    .into_iter()
    .map(|v: i64| v as u64)
    .collect();
    assert_eq!(
        loaded,
        [1],
        "the append reported success, so it is committed"
    );
    assert_eq!(store.head().await.unwrap(), done.last_position);
    assert!(store.head().await.unwrap() > Position::START);
    pool.close().await;
}
