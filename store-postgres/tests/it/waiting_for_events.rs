//! Waiters wake on notifications from other processes, and fall back to polling when none come.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, Position};
use annals_postgres::PostgresStore;
use sqlx::PgPool;

use crate::support::{event, store, stream};

/// A second store instance on the same database stands in for another process. Its poll interval is far
/// longer than the test's deadline, so only a notification can wake it in time.
fn other_process(pool: &PgPool) -> PostgresStore {
    PostgresStore::from_pool(pool.clone()).with_poll_interval(Duration::from_secs(3600))
}

async fn woken(waiter: tokio::task::JoinHandle<Position>) -> Position {
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter was not woken by a notification")
        .unwrap()
}

fn park(store: &PostgresStore, after: Position) -> tokio::task::JoinHandle<Position> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .wait_for_events(after, Duration::from_secs(3600))
            .await
            .unwrap()
    })
}

#[sqlx::test(migrations = false)]
async fn a_waiter_elsewhere_is_woken_by_an_append(pool: PgPool) {
    let writer = store(pool.clone()).await;
    let reader = other_process(&pool);
    // Let the reader's listener start before the append, so the notification cannot be missed.
    assert_eq!(
        reader
            .wait_for_events(Position::START, Duration::from_millis(100))
            .await
            .unwrap(),
        Position::START
    );
    let waiter = park(&reader, Position::START);
    let done = writer
        .append(&stream("w-1"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(woken(waiter).await, done.last_position);
}

#[sqlx::test(migrations = false)]
async fn a_waiter_elsewhere_is_woken_when_an_append_in_a_transaction_commits(pool: PgPool) {
    let writer = store(pool.clone()).await;
    let reader = other_process(&pool);
    reader
        .wait_for_events(Position::START, Duration::from_millis(100))
        .await
        .unwrap();
    let waiter = park(&reader, Position::START);
    let mut tx = pool.begin().await.unwrap();
    let done = writer
        .append_in(
            &mut tx,
            &stream("w-2"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(woken(waiter).await, done.last_position);
}

#[sqlx::test(migrations = false)]
async fn without_notifications_waiters_fall_back_to_polling(pool: PgPool) {
    let writer = store(pool.clone()).await.with_notify(false);
    let reader =
        PostgresStore::from_pool(pool.clone()).with_poll_interval(Duration::from_millis(20));
    assert_eq!(reader.poll_interval(), Duration::from_millis(20));
    let waiter = park(&reader, Position::START);
    let done = writer
        .append(&stream("w-3"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("polling found the event")
        .unwrap();
    assert_eq!(head, done.last_position);
}

#[sqlx::test(migrations = false)]
async fn waiting_returns_the_head_at_once_or_after_the_timeout(pool: PgPool) {
    let store = store(pool).await;
    let done = store
        .append(
            &stream("w-4"),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    // An endless timeout is fine when events are already there.
    assert_eq!(
        store
            .wait_for_events(Position::START, Duration::MAX)
            .await
            .unwrap(),
        done.last_position
    );
    assert_eq!(
        store
            .wait_for_events(done.last_position, Duration::from_millis(30))
            .await
            .unwrap(),
        done.last_position
    );
}
