//! The global order never skips an event: a reader stops below any append still in flight, passes rolled-back
//! gaps at once, and ignores transactions that append nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{EventId, EventStore, ExpectedVersion, Position, RecordedEvent};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::support::{big_pool, event, eventually, store, stream};

fn streams_of(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.stream_id.as_str()).collect()
}

#[sqlx::test(migrations = false)]
async fn a_reader_does_not_pass_a_lower_position_still_in_flight(pool: PgPool) {
    let store = store(pool).await;
    let mut writer_a = store.pool().begin().await.unwrap();
    let a = store
        .append_in(
            &mut writer_a,
            &stream("writer-a"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        )
        .await
        .unwrap();
    let b = store
        .append(
            &stream("writer-b"),
            ExpectedVersion::NoStream,
            vec![event(2)],
        )
        .await
        .unwrap();
    assert!(
        a.last_position < b.first_position,
        "A drew the lower position"
    );

    assert!(
        store
            .read_all(Position::START, 100)
            .await
            .unwrap()
            .is_empty(),
        "B's event must not be read while A, below it, may still commit"
    );
    assert_eq!(store.head().await.unwrap(), Position::START);
    assert_eq!(
        store
            .wait_for_events(Position::START, Duration::from_millis(50))
            .await
            .unwrap(),
        Position::START
    );

    writer_a.commit().await.unwrap();
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(streams_of(&all), ["writer-a", "writer-b"]);
    assert_eq!(all[0].position, a.last_position);
    assert_eq!(all[1].position, b.last_position);
    assert_eq!(store.head().await.unwrap(), b.last_position);
}

/// Every event `visit_all` hands over from `after`, and the position it returns, after checking that `fold_all`
/// (its own, narrower statement) hands over the same positions of the same streams and returns the same position.
async fn visit_all_from(
    store: &annals_postgres::PostgresStore,
    after: Position,
) -> (Vec<RecordedEvent>, Position) {
    let mut visited = Vec::new();
    let last = store
        .visit_all(after, &mut |e| {
            visited.push(e.clone());
            Ok(())
        })
        .await
        .unwrap();
    let mut folded = Vec::new();
    let folded_last = store
        .fold_all(after, &mut |e| {
            folded.push((e.position, e.stream_id.clone()));
            Ok(())
        })
        .await
        .unwrap();
    let expected: Vec<_> = visited
        .iter()
        .map(|e| (e.position, e.stream_id.clone()))
        .collect();
    assert_eq!(folded, expected, "fold_all stops where visit_all does");
    assert_eq!(folded_last, last);
    (visited, last)
}

#[sqlx::test(migrations = false)]
async fn a_visit_of_the_global_order_does_not_pass_a_lower_position_still_in_flight(pool: PgPool) {
    let store = store(pool).await;
    let early = store
        .append(
            &stream("writer-early"),
            ExpectedVersion::NoStream,
            vec![event(0)],
        )
        .await
        .unwrap();
    let mut writer_a = store.pool().begin().await.unwrap();
    let a = store
        .append_in(
            &mut writer_a,
            &stream("writer-a"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        )
        .await
        .unwrap();
    let b = store
        .append(
            &stream("writer-b"),
            ExpectedVersion::NoStream,
            vec![event(2), event(3)],
        )
        .await
        .unwrap();
    assert!(
        early.last_position < a.first_position && a.last_position < b.first_position,
        "A drew a position between the committed ones"
    );

    // Also after a read that remembered a bound: the visit asks for a fresh one, which A holds back.
    assert_eq!(
        streams_of(&store.read_all(Position::START, 100).await.unwrap()),
        ["writer-early"]
    );
    let (visited, last) = visit_all_from(&store, Position::START).await;
    assert_eq!(
        streams_of(&visited),
        ["writer-early"],
        "B's events must not be visited while A, below them, may still commit"
    );
    assert_eq!(last, early.last_position);
    let (visited, last) = visit_all_from(&store, early.last_position).await;
    assert!(visited.is_empty());
    assert_eq!(
        last, early.last_position,
        "nothing visited: `after` comes back"
    );

    writer_a.commit().await.unwrap();
    let (visited, last) = visit_all_from(&store, early.last_position).await;
    assert_eq!(streams_of(&visited), ["writer-a", "writer-b", "writer-b"]);
    assert_eq!(visited[0].position, a.last_position);
    assert_eq!(last, b.last_position);
    let (all, _) = visit_all_from(&store, Position::START).await;
    assert_eq!(all, store.read_all(Position::START, 100).await.unwrap());
}

/// A visit runs statements of at most 100,000 rows: one longer than that goes on where the first statement ended.
#[sqlx::test(migrations = false)]
async fn a_visit_longer_than_one_statement_hands_over_every_event_once(pool: PgPool) {
    const EVENTS: u64 = 100_000 + 1_500;
    let store = store(pool).await;
    let mut appended = 0;
    while appended < EVENTS {
        let batch = (appended..EVENTS.min(appended + 1_000))
            .map(event)
            .collect::<Vec<_>>();
        appended += batch.len() as u64;
        store
            .append(
                &stream(&format!("long-{}", appended % 7)),
                ExpectedVersion::Any,
                batch,
            )
            .await
            .unwrap();
    }
    for lean in [false, true] {
        let mut count = 0u64;
        let mut previous = Position::START;
        let mut visit = |e: &RecordedEvent| {
            assert!(e.position > previous, "strictly increasing positions");
            previous = e.position;
            count += 1;
            Ok(())
        };
        let last = if lean {
            store.fold_all(Position::START, &mut visit).await
        } else {
            store.visit_all(Position::START, &mut visit).await
        }
        .unwrap();
        assert_eq!(
            count, EVENTS,
            "every event visited exactly once (lean: {lean})"
        );
        assert_eq!(last, previous);
        assert_eq!(last, store.head().await.unwrap());
    }
}

#[sqlx::test(migrations = false)]
async fn a_rolled_back_append_leaves_a_gap_readers_pass_at_once(pool: PgPool) {
    // Polling cannot wake the waiter within the test: only the store noticing the rollback can.
    let store = store(pool)
        .await
        .with_poll_interval(Duration::from_secs(3600));
    let mut writer_a = store.pool().begin().await.unwrap();
    let a = store
        .append_in(
            &mut writer_a,
            &stream("writer-a"),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    let b = store
        .append(
            &stream("writer-b"),
            ExpectedVersion::NoStream,
            vec![event(3)],
        )
        .await
        .unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_events(Position::START, Duration::from_secs(60))
                .await
                .unwrap()
        })
    };
    assert!(
        store
            .read_all(Position::START, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The waiter is parked: its store is waiting for A, the open append holding it back, to end.
    eventually("the waiter waits for the open append", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE query LIKE '%await_oldest_append%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    })
    .await;

    writer_a.rollback().await.unwrap();
    // No timeout is involved: the very next read passes the gap.
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(streams_of(&all), ["writer-b"]);
    assert!(all[0].position > a.last_position, "the gap stays a gap");
    assert_eq!(store.head().await.unwrap(), b.last_position);
    let woken_with = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("a waiter parked behind the rolled-back append must be woken by its end")
        .unwrap();
    assert_eq!(woken_with, b.last_position);
}

#[sqlx::test(migrations = false)]
async fn unrelated_transactions_and_idle_sessions_do_not_stall_readers(pool: PgPool) {
    let store = store(pool).await;
    store
        .pool()
        .execute("CREATE TABLE public.unrelated (n int)")
        .await
        .unwrap();
    // A long transaction writing another table (it has a transaction id and holds an advisory lock of its own).
    let mut unrelated = store.pool().begin().await.unwrap();
    unrelated
        .execute("INSERT INTO public.unrelated VALUES (1); SELECT pg_advisory_xact_lock(42)")
        .await
        .unwrap();
    // An idle session in a transaction with an old snapshot.
    let mut idle = store.pool().begin().await.unwrap();
    idle.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();

    let mut last = Position::START;
    for n in 0..3 {
        let appended = store
            .append(&stream("busy"), ExpectedVersion::Any, vec![event(n)])
            .await
            .unwrap();
        let head = store
            .wait_for_events(last, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(head, appended.last_position, "the reader advances at once");
        let page = store.read_all(last, 100).await.unwrap();
        assert_eq!(page.len(), 1);
        last = page[0].position;
    }
    unrelated.rollback().await.unwrap();
    idle.rollback().await.unwrap();
}

/// One writer's work: appends in transactions it holds open for a random while, committing or rolling back at
/// random. Returns the ids of the events it committed.
async fn random_writer(
    store: annals_postgres::PostgresStore,
    seed: u64,
    appends: usize,
) -> Vec<EventId> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut committed = Vec::new();
    for i in 0..appends {
        let id = stream(&format!("random-{}", rng.random_range(0..6u32)));
        let batch: Vec<_> = (0..rng.random_range(1..4u64))
            .map(|n| event(seed * 1000 + n))
            .collect();
        let ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
        let delay = Duration::from_micros(rng.random_range(0..3000));
        if i % 4 == 3 {
            // Some plain appends in the store's own transaction.
            tokio::time::sleep(delay).await;
            store
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
        // The random delay inside the transaction lets later appends commit first.
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
async fn a_live_subscriber_sees_every_committed_event_once_in_order(
    _options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    const WRITERS: u64 = 8;
    const APPENDS: usize = 30;
    let pool = big_pool(connect, 14).await;
    let store = store(pool.clone())
        .await
        .with_poll_interval(Duration::from_millis(50));
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
        .map(|w| tokio::spawn(random_writer(store.clone(), 0xA11 + w, APPENDS)))
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
    let stored = store.read_all(Position::START, usize::MAX).await.unwrap();
    assert_eq!(
        stored, seen,
        "the subscriber saw what a full read returns now"
    );
    drop(store);
    pool.close().await;
}
