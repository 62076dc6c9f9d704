//! A command session's append of one event right after it read the stream goes in at the version after the one
//! the read found, under the stream lock, with no version read of its own: the version before it must be stored
//! and the unique key on the stream's versions refuses a version taken. These tests make the read stale on purpose — an append commits, or is in flight, between
//! the read and the append — and check that the answer is still the one `append_events` would give, and that
//! readers of the global order still stop below the append while it is in flight.

use annals::{
    CommandSession, EventId, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamVersion,
};
use annals_postgres::PostgresStore;
use sqlx::PgPool;

use crate::support::{
    event, readers_stop_below_a_stalled_append, single_event_append_blocked, store, stream,
};

/// Opens a command session, reads `name` through it, and returns the session and the versions it read.
async fn read<'s>(
    store: &'s PostgresStore,
    name: &str,
) -> (Box<dyn CommandSession + 's>, Vec<u64>) {
    let mut session = store.command_session();
    let mut versions = Vec::new();
    session
        .visit_stream(&stream(name), &mut |e: &RecordedEvent| {
            versions.push(e.stream_version.get());
            Ok(())
        })
        .await
        .unwrap();
    (session, versions)
}

/// The versions stored in `name`.
async fn versions(store: &PostgresStore, name: &str) -> Vec<u64> {
    let events = store.load_stream(&stream(name)).await.unwrap();
    events.iter().map(|e| e.stream_version.get()).collect()
}

async fn append_two(store: &PostgresStore, name: &str) {
    store
        .append(
            &stream(name),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_append_after_a_read_waits_for_the_stream_lock_and_lands_at_the_next_version(
    pool: PgPool,
) {
    let store = store(pool.clone()).await;
    append_two(&store, "cart-1").await;
    // Another transaction holds the stream lock `append_events` takes: the append after a read takes it too
    // (so `append_events`' version read stays final beside it), so it waits until the holder ends.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('annals'), hashtext('cart-1'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let appending = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut session, read) = read(&store, "cart-1").await;
            assert_eq!(read, [1, 2]);
            let cart = stream("cart-1");
            session
                .append(
                    &cart,
                    ExpectedVersion::Exact(StreamVersion(2)),
                    vec![event(3)],
                )
                .await
        })
    };
    let (_, waits_for) = single_event_append_blocked(&pool).await;
    assert_eq!(waits_for, ["advisory"], "waiting for the stream lock");
    holder.rollback().await.unwrap();
    let done = appending.await.unwrap().unwrap();
    assert_eq!(done.stream_version, StreamVersion(3));
    assert_eq!(done.first_position, done.last_position);
    assert_eq!(versions(&store, "cart-1").await, [1, 2, 3]);
    let stored = store.load_stream(&stream("cart-1")).await.unwrap();
    assert_eq!(stored[2].position, done.first_position);
    assert_eq!(stored[2].payload, serde_json::json!({"n": 3}));
}

#[sqlx::test(migrations = false)]
async fn an_append_after_reading_no_events_starts_the_stream(pool: PgPool) {
    let store = store(pool).await;
    for (name, expected) in [
        ("no-stream", ExpectedVersion::NoStream),
        ("exact-0", ExpectedVersion::Exact(StreamVersion(0))),
    ] {
        let (mut session, read) = read(&store, name).await;
        assert!(read.is_empty());
        let done = session
            .append(&stream(name), expected, vec![event(1)])
            .await
            .unwrap();
        assert_eq!(done.stream_version, StreamVersion(1), "{expected}");
        assert_eq!(versions(&store, name).await, [1]);
    }
}

#[sqlx::test(migrations = false)]
async fn an_append_after_a_stale_read_conflicts_or_lands_at_the_real_next_version(pool: PgPool) {
    let store = store(pool).await;
    append_two(&store, "cart-2").await;
    let (mut exact, _) = read(&store, "cart-2").await;
    let (mut any, _) = read(&store, "cart-2").await;
    let (mut exists, _) = read(&store, "cart-2").await;
    // Version 3 commits after all three reads found version 2.
    store
        .append(&stream("cart-2"), ExpectedVersion::Any, vec![event(3)])
        .await
        .unwrap();
    match exact
        .append(
            &stream("cart-2"),
            ExpectedVersion::Exact(StreamVersion(2)),
            vec![event(4)],
        )
        .await
    {
        Err(annals::Error::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream.as_str(), "cart-2");
            assert_eq!(expected, ExpectedVersion::Exact(StreamVersion(2)));
            assert_eq!(actual, StreamVersion(3));
        }
        other => panic!("expected a conflict naming version 3, got {other:?}"),
    }
    let done = any
        .append(&stream("cart-2"), ExpectedVersion::Any, vec![event(5)])
        .await
        .unwrap();
    assert_eq!(done.stream_version, StreamVersion(4));
    let done = exists
        .append(
            &stream("cart-2"),
            ExpectedVersion::StreamExists,
            vec![event(6)],
        )
        .await
        .unwrap();
    assert_eq!(done.stream_version, StreamVersion(5));
    assert_eq!(versions(&store, "cart-2").await, [1, 2, 3, 4, 5]);
}

#[sqlx::test(migrations = false)]
async fn a_read_of_another_stream_proves_nothing_about_this_one(pool: PgPool) {
    let store = store(pool).await;
    append_two(&store, "read").await;
    let (mut session, _) = read(&store, "read").await;
    // The session read `read` at version 2; `other` has no events, so an exact append at 2 conflicts.
    match session
        .append(
            &stream("other"),
            ExpectedVersion::Exact(StreamVersion(2)),
            vec![event(1)],
        )
        .await
    {
        Err(annals::Error::Conflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("other", StreamVersion(0)));
        }
        other => panic!("expected a conflict on `other`, got {other:?}"),
    }
    assert!(versions(&store, "other").await.is_empty());
}

/// Starts an append of `new` under `expected` after a read of `cart-3` found version 2, while a transaction
/// has appended version 3 and not ended; returns once that append waits for the stream lock.
async fn append_behind_an_append_in_flight(
    pool: &PgPool,
    expected: ExpectedVersion,
    new: NewEvent,
) -> (
    PostgresStore,
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<annals::Result<annals::AppendResult>>,
) {
    let store = store(pool.clone()).await;
    append_two(&store, "cart-3").await;
    let mut in_flight = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut in_flight,
            &stream("cart-3"),
            ExpectedVersion::Any,
            vec![event(3)],
        )
        .await
        .unwrap();
    let appending = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut session, read) = read(&store, "cart-3").await;
            assert_eq!(read, [1, 2], "the read does not see the append in flight");
            session.append(&stream("cart-3"), expected, vec![new]).await
        })
    };
    let (_, waits_for) = single_event_append_blocked(pool).await;
    assert_eq!(
        waits_for,
        ["advisory"],
        "waiting for the stream lock the append in flight holds"
    );
    (store, in_flight, appending)
}

#[sqlx::test(migrations = false)]
async fn an_append_in_flight_that_commits_makes_the_append_after_the_read_conflict(pool: PgPool) {
    let exact = ExpectedVersion::Exact(StreamVersion(2));
    let (store, in_flight, appending) =
        append_behind_an_append_in_flight(&pool, exact, event(4)).await;
    in_flight.commit().await.unwrap();
    match appending.await.unwrap() {
        Err(annals::Error::Conflict { actual, .. }) => assert_eq!(actual, StreamVersion(3)),
        other => panic!("expected a conflict naming version 3, got {other:?}"),
    }
    assert_eq!(versions(&store, "cart-3").await, [1, 2, 3]);
}

#[sqlx::test(migrations = false)]
async fn an_append_in_flight_that_rolls_back_lets_the_append_after_the_read_land(pool: PgPool) {
    let exact = ExpectedVersion::Exact(StreamVersion(2));
    let (store, in_flight, appending) =
        append_behind_an_append_in_flight(&pool, exact, event(4)).await;
    in_flight.rollback().await.unwrap();
    let done = appending.await.unwrap().unwrap();
    assert_eq!(done.stream_version, StreamVersion(3));
    let stored = store.load_stream(&stream("cart-3")).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].payload, serde_json::json!({"n": 4}));
}

#[sqlx::test(migrations = false)]
async fn a_retry_after_a_read_returns_the_first_result_and_stores_nothing(pool: PgPool) {
    let store = store(pool).await;
    append_two(&store, "cart-4").await;
    let id = EventId::new();
    let (mut first, _) = read(&store, "cart-4").await;
    let done = first
        .append(
            &stream("cart-4"),
            ExpectedVersion::Any,
            vec![event(3).with_id(id)],
        )
        .await
        .unwrap();
    // The retry of an append whose reply was lost reads the stream again, which now holds the event, and
    // tries the version after it: the event id's unique key refuses it and `append_events` finds the replay.
    let (mut retry, read) = read(&store, "cart-4").await;
    assert_eq!(read, [1, 2, 3]);
    let again = retry
        .append(
            &stream("cart-4"),
            ExpectedVersion::Any,
            vec![event(3).with_id(id)],
        )
        .await
        .unwrap();
    assert_eq!(again, done);
    assert_eq!(versions(&store, "cart-4").await, [1, 2, 3]);
}

#[sqlx::test(migrations = false)]
async fn a_reader_does_not_pass_an_append_after_a_read_in_flight(pool: PgPool) {
    // As `single_event_appends::a_reader_does_not_pass_a_single_event_append_in_flight`, through the statement
    // that appends after a read.
    let store = store(pool.clone()).await;
    readers_stop_below_a_stalled_append(&pool, &store, |stalled| {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut session, _) = read(&store, "stalled").await;
            session
                .append(&stream("stalled"), ExpectedVersion::NoStream, vec![stalled])
                .await
        })
    })
    .await;
}
