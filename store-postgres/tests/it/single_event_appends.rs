//! A single event appended in the store's own transaction goes through one plain `INSERT` (the fast path) that
//! reads the stream's version in a snapshot taken before it holds the stream lock. These tests make that
//! snapshot stale on purpose — another append on the same stream commits while the fast path waits for the
//! lock — and check that the answer is still the one `append_events` would give: appended at the real next
//! version, or a conflict naming the real version, never a duplicate version or a lost event.

use annals::{EventId, EventStore, ExpectedVersion, NewEvent, StreamVersion};
use sqlx::PgPool;

use crate::support::{
    event, readers_stop_below_a_stalled_append, single_event_append_blocked, store, stream,
};

/// [`single_event_append_blocked`] behind another append's stream lock: the fast path waits on the advisory lock
/// that `append_events` took, not on that writer's row, so it serializes with every other append on the stream.
async fn fast_path_waits_for_the_stream_lock(pool: &PgPool) {
    let (_, waits_for) = single_event_append_blocked(pool).await;
    assert_eq!(waits_for, ["advisory"], "the lock the fast path waits for");
}

/// Starts `expected`-checked append of `new` on stream `cart-1` (the fast path), blocked behind a transaction
/// that has appended `cart-1`'s first event and not committed; commits that transaction once the fast path
/// waits on the stream lock, and returns the fast path's result.
async fn append_behind_a_committing_writer(
    pool: PgPool,
    expected: ExpectedVersion,
    new: NewEvent,
) -> (
    annals_postgres::PostgresStore,
    annals::Result<annals::AppendResult>,
) {
    let store = store(pool.clone()).await;
    let cart = stream("cart-1");
    let mut first = store.pool().begin().await.unwrap();
    store
        .append_in(&mut first, &cart, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let fast = {
        let (store, cart) = (store.clone(), cart.clone());
        tokio::spawn(async move { store.append(&cart, expected, vec![new]).await })
    };
    fast_path_waits_for_the_stream_lock(&pool).await;
    first.commit().await.unwrap();
    let result = fast.await.unwrap();
    (store, result)
}

#[sqlx::test(migrations = false)]
async fn an_any_append_that_read_a_stale_version_lands_at_the_real_next_one(pool: PgPool) {
    let (store, result) =
        append_behind_a_committing_writer(pool, ExpectedVersion::Any, event(2)).await;
    let done = result.unwrap();
    assert_eq!(done.stream_version, StreamVersion(2));
    let events = store.load_stream(&stream("cart-1")).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version.get()).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(events[1].position, done.first_position);
    assert_eq!(done.first_position, done.last_position);
}

#[sqlx::test(migrations = false)]
async fn an_exact_append_that_read_a_stale_version_is_a_conflict_naming_the_real_one(pool: PgPool) {
    let (store, result) =
        append_behind_a_committing_writer(pool, ExpectedVersion::NoStream, event(2)).await;
    match result {
        Err(annals::Error::Conflict {
            stream: conflicted,
            expected,
            actual,
        }) => {
            assert_eq!(conflicted.as_str(), "cart-1");
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, StreamVersion(1));
        }
        other => panic!("expected a conflict at version 1, got {other:?}"),
    }
    assert_eq!(store.load_stream(&stream("cart-1")).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn a_stream_exists_append_that_read_no_stream_still_appends(pool: PgPool) {
    let (store, result) =
        append_behind_a_committing_writer(pool, ExpectedVersion::StreamExists, event(2)).await;
    assert_eq!(result.unwrap().stream_version, StreamVersion(2));
    assert_eq!(store.load_stream(&stream("cart-1")).await.unwrap().len(), 2);
}

#[sqlx::test(migrations = false)]
async fn a_retry_that_waited_behind_its_own_first_try_returns_the_stored_result(pool: PgPool) {
    // The first try of an append commits while its retry (same event id, same expected version) waits in the
    // fast path: the retry's insert is refused on the version, and `append_events` finds the id stored.
    let id = EventId::new();
    let store = store(pool.clone()).await;
    let cart = stream("cart-1");
    let mut first = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut first,
            &cart,
            ExpectedVersion::NoStream,
            vec![event(1).with_id(id)],
        )
        .await
        .unwrap();
    let retry = {
        let (store, cart) = (store.clone(), cart.clone());
        tokio::spawn(async move {
            store
                .append(&cart, ExpectedVersion::NoStream, vec![event(1).with_id(id)])
                .await
        })
    };
    fast_path_waits_for_the_stream_lock(&pool).await;
    first.commit().await.unwrap();
    // The same event, same expected version: a replay of the committed append, which returns its result.
    let replayed = retry.await.unwrap().unwrap();
    assert_eq!(replayed.stream_version, StreamVersion(1));
    let events = store.load_stream(&cart).await.unwrap();
    assert_eq!(events.len(), 1, "stored once");
    assert_eq!(events[0].event_id, id);
    assert_eq!(replayed.first_position, events[0].position);
}

#[sqlx::test(migrations = false)]
async fn single_event_replays_and_conflicts_answer_as_batches_do(pool: PgPool) {
    let store = store(pool).await;
    let cart = stream("cart-2");
    let first = event(1);
    let done = store
        .append(&cart, ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    // The same append again (a retry after a lost reply): the first result, nothing written.
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        let again = store
            .append(&cart, expected, vec![first.clone()])
            .await
            .unwrap();
        assert_eq!(again, done, "a replay under {expected}");
    }
    // A new event at a version already taken: a conflict naming the stream and its version.
    match store
        .append(&cart, ExpectedVersion::NoStream, vec![event(2)])
        .await
    {
        Err(annals::Error::Conflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("cart-2", StreamVersion(1)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(
            &stream("cart-3"),
            ExpectedVersion::StreamExists,
            vec![event(3)],
        )
        .await
    {
        Err(annals::Error::Conflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("cart-3", StreamVersion(0)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.load_stream(&cart).await.unwrap().len(), 1);
    assert!(
        store
            .load_stream(&stream("cart-3"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrations = false)]
async fn a_reader_does_not_pass_a_single_event_append_in_flight(pool: PgPool) {
    // The fast path takes its gap marker before it draws its position.
    let store = store(pool.clone()).await;
    readers_stop_below_a_stalled_append(&pool, &store, |stalled| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(&stream("stalled"), ExpectedVersion::NoStream, vec![stalled])
                .await
        })
    })
    .await;
}
