//! Group commit (`GroupCommitStore`): the conformance suite, per-append results inside one batch, appends to one
//! stream in one batch, replays inside a batch, the gap-safe global order under concurrent batches, and a batch
//! whose connection is killed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{
    AppendResult, EventId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StreamVersion,
};
use annals_postgres::{GroupCommit, GroupCommitStore, PostgresStore};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::task::JoinHandle;

use crate::support::{big_pool, event, eventually, store, stream};

/// Group commit with one batch in flight, so that a batch blocked on a lock makes the next appends queue up.
fn grouped(store: PostgresStore) -> GroupCommitStore {
    GroupCommitStore::new(store, GroupCommit::default().with_max_in_flight(1))
}

annals::store_conformance!(
    #[sqlx::test(migrations = false)]
    fn(pool: PgPool) -> {
        let store = PostgresStore::from_pool(pool);
        store.migrate().await.unwrap();
        GroupCommitStore::new(store, GroupCommit::default())
    }
);

mod command_ids {
    use annals_postgres::{GroupCommit, GroupCommitStore, PostgresStore};
    use sqlx::PgPool;

    annals::command_id_conformance!(
        #[sqlx::test(migrations = false)]
        fn(pool: PgPool) -> {
            let store = PostgresStore::from_pool(pool).with_schema("Tenant_7").unwrap();
            store.migrate().await.unwrap();
            GroupCommitStore::new(store, GroupCommit::default())
        }
    );
}

/// The batch statement's backends currently waiting on a lock.
async fn blocked_batches(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar::<Postgres, i32>(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT r_index%' AND state = 'active' \
         AND wait_event_type = 'Lock' AND datname = current_database()",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Holds the stream lock of `name` in an open transaction of the test's own, so that an append to it waits.
async fn hold_stream(store: &PostgresStore, name: &str) -> Transaction<'static, Postgres> {
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in(&mut tx, &stream(name), ExpectedVersion::Any, vec![event(0)])
        .await
        .unwrap();
    tx
}

fn spawn_append(
    grouped: &GroupCommitStore,
    name: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> JoinHandle<annals::Result<AppendResult>> {
    let (grouped, name) = (grouped.clone(), stream(name));
    tokio::spawn(async move { grouped.append(&name, expected, events).await })
}

/// Blocks the batching task on a batch of one append to `gate` (whose stream lock the test holds), so that the
/// appends made next all queue up and form the following batch. Returns the gate's transaction and append.
async fn close_the_gate(
    store: &PostgresStore,
    grouped: &GroupCommitStore,
) -> (
    Transaction<'static, Postgres>,
    JoinHandle<annals::Result<AppendResult>>,
) {
    let gate = hold_stream(store, "gate").await;
    let gated = spawn_append(grouped, "gate", ExpectedVersion::Any, vec![event(1)]);
    eventually(
        "the gate's batch waits",
        Duration::from_secs(30),
        || async { !blocked_batches(store.pool()).await.is_empty() },
    )
    .await;
    (gate, gated)
}

async fn until_queued(grouped: &GroupCommitStore, appends: usize) {
    eventually(
        "the appends are queued",
        Duration::from_secs(30),
        || async { grouped.queued() == appends },
    )
    .await;
}

/// How many transactions wrote the events of `streams` (rows written by one transaction share its `xmin`).
async fn writing_transactions(pool: &PgPool, streams: &[&str]) -> i64 {
    sqlx::query_scalar::<Postgres, i64>(
        "SELECT count(DISTINCT xmin::text) FROM annals.events WHERE stream_id = ANY ($1)",
    )
    .bind(streams)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn one_batch_answers_each_append_and_isolates_its_conflicts(pool: PgPool) {
    let store = store(pool).await;
    store
        .append(
            &stream("existing"),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    let grouped = grouped(store.clone());
    let (gate, gated) = close_the_gate(&store, &grouped).await;

    let fresh = spawn_append(&grouped, "fresh", ExpectedVersion::NoStream, vec![event(3)]);
    let stale = spawn_append(
        &grouped,
        "existing",
        ExpectedVersion::NoStream,
        vec![event(4)],
    );
    let wrong = spawn_append(
        &grouped,
        "existing",
        ExpectedVersion::Exact(StreamVersion(1)),
        vec![event(5)],
    );
    let missing = spawn_append(
        &grouped,
        "missing",
        ExpectedVersion::StreamExists,
        vec![event(6)],
    );
    let right = spawn_append(
        &grouped,
        "existing",
        ExpectedVersion::Exact(StreamVersion(2)),
        vec![event(7), event(8)],
    );
    let any = spawn_append(&grouped, "other", ExpectedVersion::Any, vec![event(9)]);
    until_queued(&grouped, 6).await;
    gate.rollback().await.unwrap();
    gated.await.unwrap().unwrap();

    let fresh = fresh.await.unwrap().unwrap();
    assert_eq!(fresh.stream_version, StreamVersion(1));
    for (refused, actual) in [(stale, 2), (wrong, 2), (missing, 0)] {
        match refused.await.unwrap() {
            Err(annals::Error::Conflict { actual: found, .. }) => {
                assert_eq!(found, StreamVersion(actual));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let right = right.await.unwrap().unwrap();
    assert_eq!(right.stream_version, StreamVersion(4));
    assert_eq!(right.last_position.get(), right.first_position.get() + 1);
    let any = any.await.unwrap().unwrap();
    assert_eq!(any.stream_version, StreamVersion(1));

    let existing = store
        .read_stream(&stream("existing"), StreamVersion::FIRST, 100)
        .await
        .unwrap();
    let payloads: Vec<_> = existing
        .iter()
        .map(|e| e.payload.to_value().unwrap()["n"].as_u64())
        .collect();
    assert_eq!(
        payloads,
        [Some(1), Some(2), Some(7), Some(8)],
        "only the right append was stored"
    );
    assert!(
        store
            .read_stream(&stream("missing"), StreamVersion::FIRST, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        writing_transactions(store.pool(), &["fresh", "other"]).await,
        1,
        "the batch's appends committed in one transaction"
    );
}

#[sqlx::test(migrations = false)]
async fn appends_to_one_stream_in_one_batch_behave_as_if_sequential(pool: PgPool) {
    let store = store(pool).await;
    let grouped = grouped(store.clone());
    let (gate, gated) = close_the_gate(&store, &grouped).await;

    let first = spawn_append(&grouped, "same", ExpectedVersion::NoStream, vec![event(1)]);
    until_queued(&grouped, 1).await;
    let second = spawn_append(
        &grouped,
        "same",
        ExpectedVersion::Exact(StreamVersion(1)),
        vec![event(2), event(3)],
    );
    until_queued(&grouped, 2).await;
    let third = spawn_append(&grouped, "same", ExpectedVersion::NoStream, vec![event(4)]);
    until_queued(&grouped, 3).await;
    let fourth = spawn_append(&grouped, "same", ExpectedVersion::Any, vec![event(5)]);
    until_queued(&grouped, 4).await;
    gate.rollback().await.unwrap();
    gated.await.unwrap().unwrap();

    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(first.stream_version, StreamVersion(1));
    assert_eq!(
        second.stream_version,
        StreamVersion(3),
        "the second saw the first"
    );
    assert!(second.first_position > first.last_position);
    match third.await.unwrap() {
        Err(annals::Error::Conflict { actual, .. }) => assert_eq!(actual, StreamVersion(3)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        fourth.await.unwrap().unwrap().stream_version,
        StreamVersion(4)
    );
    let stored = store
        .read_stream(&stream("same"), StreamVersion::FIRST, 100)
        .await
        .unwrap();
    let payloads: Vec<_> = stored
        .iter()
        .map(|e| e.payload.to_value().unwrap()["n"].as_u64())
        .collect();
    assert_eq!(payloads, [Some(1), Some(2), Some(3), Some(5)]);
    assert_eq!(writing_transactions(store.pool(), &["same"]).await, 1);
}

#[sqlx::test(migrations = false)]
async fn replays_inside_a_batch_return_the_original_result(pool: PgPool) {
    let store = store(pool).await;
    let earlier_events = vec![event(1)];
    let earlier = store
        .append(
            &stream("earlier"),
            ExpectedVersion::NoStream,
            earlier_events.clone(),
        )
        .await
        .unwrap();
    let grouped = grouped(store.clone());
    let (gate, gated) = close_the_gate(&store, &grouped).await;

    let twice = vec![event(2), event(3)];
    let replay_of_earlier = spawn_append(
        &grouped,
        "earlier",
        ExpectedVersion::NoStream,
        earlier_events,
    );
    until_queued(&grouped, 1).await;
    let original = spawn_append(&grouped, "twice", ExpectedVersion::NoStream, twice.clone());
    until_queued(&grouped, 2).await;
    let replay = spawn_append(&grouped, "twice", ExpectedVersion::NoStream, twice.clone());
    until_queued(&grouped, 3).await;
    let reused = spawn_append(&grouped, "elsewhere", ExpectedVersion::Any, twice);
    until_queued(&grouped, 4).await;
    gate.rollback().await.unwrap();
    gated.await.unwrap().unwrap();

    assert_eq!(replay_of_earlier.await.unwrap().unwrap(), earlier);
    // Appends to different streams of one batch run in the order of their stream locks, not of arrival (they
    // were concurrent, so either order is a valid one): whichever stream took the ids first keeps them.
    let reused_id = |result: &annals::Result<AppendResult>| {
        matches!(result, Err(annals::Error::EventIdReused { .. }))
    };
    let (original, replay, reused) = (
        original.await.unwrap(),
        replay.await.unwrap(),
        reused.await.unwrap(),
    );
    match &original {
        Ok(done) => {
            assert_eq!(
                replay.as_ref().ok(),
                Some(done),
                "a replay in the same batch"
            );
            assert!(reused_id(&reused), "{reused:?}");
        }
        Err(_) => {
            assert!(reused.is_ok(), "{reused:?}");
            assert!(reused_id(&original), "{original:?}");
            assert!(reused_id(&replay), "{replay:?}");
        }
    }
    assert_eq!(store.read_all(Position::START, 100).await.unwrap().len(), 4);
}

#[sqlx::test(migrations = false)]
async fn a_cancelled_append_does_not_disturb_its_batch(pool: PgPool) {
    let store = store(pool).await;
    let grouped = grouped(store.clone());
    let (gate, gated) = close_the_gate(&store, &grouped).await;

    let kept = spawn_append(&grouped, "kept", ExpectedVersion::NoStream, vec![event(1)]);
    let cancelled = spawn_append(
        &grouped,
        "cancelled",
        ExpectedVersion::NoStream,
        vec![event(2)],
    );
    until_queued(&grouped, 2).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    gate.rollback().await.unwrap();
    gated.await.unwrap().unwrap();

    assert_eq!(
        kept.await.unwrap().unwrap().stream_version,
        StreamVersion(1)
    );
    // The cancelled append was dropped before its batch started.
    assert!(
        store
            .read_stream(&stream("cancelled"), StreamVersion::FIRST, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after = grouped
        .append(&stream("after"), ExpectedVersion::NoStream, vec![event(3)])
        .await
        .unwrap();
    assert_eq!(after.stream_version, StreamVersion(1));
}

#[sqlx::test(migrations = false)]
async fn a_batch_whose_connection_is_killed_reports_only_what_is_stored(
    _options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let pool = big_pool(connect, 8).await;
    let store = store(pool.clone()).await;
    let grouped = grouped(store.clone());
    let (gate, gated) = close_the_gate(&store, &grouped).await;
    // The next batch will wait for this stream's lock, after appending what comes before it in lock order.
    let held = hold_stream(&store, "held").await;

    let names: Vec<String> = (0..6).map(|n| format!("killed-{n}")).collect();
    let mut appends = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let events = vec![event(n as u64 * 10), event(n as u64 * 10 + 1)];
        let ids: Vec<EventId> = events.iter().map(|e| e.event_id).collect();
        appends.push((
            name.clone(),
            ids,
            spawn_append(&grouped, name, ExpectedVersion::NoStream, events),
        ));
    }
    let held_events = vec![event(99)];
    let held_ids: Vec<EventId> = held_events.iter().map(|e| e.event_id).collect();
    appends.push((
        "held".to_owned(),
        held_ids,
        spawn_append(&grouped, "held", ExpectedVersion::Any, held_events),
    ));
    until_queued(&grouped, 7).await;
    gate.rollback().await.unwrap();
    gated.await.unwrap().unwrap();

    // The batch is now blocked on "held" (its appends before it in lock order are written, uncommitted): kill it.
    eventually(
        "the batch waits for the held stream",
        Duration::from_secs(30),
        || async { !blocked_batches(&pool).await.is_empty() },
    )
    .await;
    let killed = blocked_batches(&pool).await;
    for pid in &killed {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .unwrap();
    }
    held.rollback().await.unwrap();

    for (name, ids, append) in appends {
        let result = append.await.unwrap();
        let stored = store
            .read_stream(&stream(&name), StreamVersion::FIRST, 100)
            .await
            .unwrap();
        let stored_ids: Vec<EventId> = stored.iter().map(|e| e.event_id).collect();
        match result {
            Ok(done) => {
                assert_eq!(stored_ids, ids, "{name}: a success is stored, exactly once");
                assert_eq!(done.last_position, stored.last().unwrap().position);
            }
            Err(error) => {
                assert!(error.is_retryable(), "{name}: {error}");
                assert!(
                    stored_ids.is_empty() || stored_ids == ids,
                    "{name}: never half stored"
                );
            }
        }
    }
    // The killed batch's appends were sent again one by one and all succeeded.
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(
        all.len(),
        14,
        "six pairs, the held stream's event and the gate's"
    );
    drop((grouped, store));
    pool.close().await;
}

/// One writer's work: group-committed appends, mixed with appends in transactions it holds open for a random
/// while and commits or rolls back at random. Returns the ids of the events it committed.
async fn random_writer(grouped: GroupCommitStore, seed: u64, appends: usize) -> Vec<EventId> {
    let store = grouped.store().clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut committed = Vec::new();
    for _ in 0..appends {
        let id = stream(&format!("random-{}", rng.random_range(0..6u32)));
        let batch: Vec<_> = (0..rng.random_range(1..4u64))
            .map(|n| event(seed * 1000 + n))
            .collect();
        let ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
        let delay = Duration::from_micros(rng.random_range(0..3000));
        if rng.random_bool(0.6) {
            grouped
                .append(&id, ExpectedVersion::Any, batch)
                .await
                .unwrap();
            committed.extend(ids);
            continue;
        }
        let mut tx = store.pool().begin().await.unwrap();
        store
            .append_in(&mut tx, &id, ExpectedVersion::Any, batch)
            .await
            .unwrap();
        tokio::time::sleep(delay).await;
        if rng.random_bool(0.25) {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
            committed.extend(ids);
        }
    }
    committed
}

#[sqlx::test(migrations = false)]
async fn a_live_subscriber_sees_every_group_committed_event_once_in_order(
    _options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    const WRITERS: u64 = 8;
    const APPENDS: usize = 30;
    let pool = big_pool(connect, 14).await;
    let store = store(pool.clone())
        .await
        .with_poll_interval(Duration::from_millis(50));
    let grouped = GroupCommitStore::new(store.clone(), GroupCommit::default().with_max_batch(4));
    let finished = Arc::new(AtomicBool::new(false));
    let subscriber = {
        let (store, finished) = (store.clone(), finished.clone());
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::START;
            loop {
                let page = store.read_all(after, 7).await.unwrap();
                if let Some(last) = page.last() {
                    after = last.position;
                    seen.extend(page);
                    continue;
                }
                if finished.load(Ordering::SeqCst) && store.head().await.unwrap() <= after {
                    return seen;
                }
                store
                    .wait_for_events(after, Duration::from_millis(200))
                    .await
                    .unwrap();
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(random_writer(grouped.clone(), 0xB22 + w, APPENDS)))
        .collect();
    let mut committed = HashSet::new();
    for writer in writers {
        committed.extend(writer.await.unwrap());
    }
    finished.store(true, Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(60), subscriber)
        .await
        .expect("the subscriber caught up")
        .unwrap();

    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "strictly increasing positions, no duplicates"
    );
    let seen_ids: HashSet<EventId> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "every event seen once");
    assert_eq!(seen_ids, committed, "exactly the committed events");
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for event in &seen {
        let version = versions.entry(event.stream_id.as_str()).or_default();
        *version += 1;
        assert_eq!(
            event.stream_version.get(),
            *version,
            "stream versions without holes"
        );
    }
    drop((grouped, store));
    pool.close().await;
}
