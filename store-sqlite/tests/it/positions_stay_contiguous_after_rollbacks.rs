//! Committed positions are contiguous: an append that is rolled back (a batch that fails half-way, a writer of
//! another connection that rolls back, an append whose future is dropped) gives its positions back, so the next
//! append continues right after the last committed event: no position skipped, none reused.

use annals::{EventStore, ExpectedVersion, NewEvent, Position};
use annals_sqlite::Settings;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::support::{TempDb, contiguous, event, open, stream};

/// Every position in the file, in order, read back through the store.
async fn positions(store: &impl EventStore) -> Vec<u64> {
    let all = store.read_all(Position::START, usize::MAX).await.unwrap();
    all.iter().map(|e| e.position.get()).collect()
}

async fn raw(db: &TempDb) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(db.path()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_gives_its_positions_back() {
    let db = TempDb::new();
    let store = open(&db, Settings::default()).await;
    let id = stream("rollback-1");
    store
        .append(&id, ExpectedVersion::NoStream, (0..3).map(event).collect())
        .await
        .unwrap();
    // A trigger refuses the last event of the next batch, after the store inserted the events before it in
    // earlier statements of the same transaction.
    sqlx::query(
        "CREATE TRIGGER fail_marked BEFORE INSERT ON events \
         WHEN json_extract(NEW.payload, '$.fail') IS NOT NULL \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&mut raw(&db).await)
    .await
    .unwrap();
    let mut batch: Vec<NewEvent> = (3..252).map(event).collect();
    batch.push(NewEvent::new("Failing", serde_json::json!({"fail": true})));
    let failed = store
        .append(&id, ExpectedVersion::Exact(annals::StreamVersion(3)), batch)
        .await;
    assert!(
        matches!(failed, Err(annals::Error::Backend { .. })),
        "{failed:?}"
    );
    assert_eq!(
        positions(&store).await,
        contiguous(3),
        "nothing of the failed batch is stored"
    );

    let next = store
        .append(
            &id,
            ExpectedVersion::Exact(annals::StreamVersion(3)),
            (3..5).map(event).collect(),
        )
        .await
        .unwrap();
    assert_eq!(
        next.first_position,
        Position(4),
        "the failed batch's positions are drawn again"
    );
    assert_eq!(next.last_position, Position(5));
    assert_eq!(positions(&store).await, contiguous(5));
    assert_eq!(store.head().await.unwrap(), Position(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writers_rollback_leaves_no_gap() {
    let db = TempDb::new();
    let store = open(&db, Settings::default()).await;
    let id = stream("rollback-2");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    // Another connection (as another process would) inserts rows, drawing positions 2 and 3, and rolls back.
    let mut other = raw(&db).await;
    let mut tx = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
    for (version, id) in [(2_i64, [1_u8; 16]), (3, [2; 16])] {
        sqlx::query(
            "INSERT INTO events (stream_id, stream_version, event_id, recorded_at, event_type, \
             schema_version, payload) VALUES ('rollback-2', ?1, ?2, 0, 'T', 1, '{}')",
        )
        .bind(version)
        .bind(id.as_slice())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let drawn: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(drawn, 3, "the other writer drew positions 2 and 3");
    tx.rollback().await.unwrap();

    let next = store
        .append(
            &id,
            ExpectedVersion::Exact(annals::StreamVersion(1)),
            vec![event(1)],
        )
        .await
        .unwrap();
    assert_eq!(next.first_position, Position(2));
    assert_eq!(positions(&store).await, contiguous(2));
}

/// Appends whose futures are dropped at some await: each is wholly stored or not at all, and the positions of
/// what is stored run from 1 without a hole whatever the interruption point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_appends_leave_no_gap() {
    let db = TempDb::new();
    let store = open(&db, Settings::default()).await;
    let id = stream("rollback-3");
    let mut batches = Vec::new();
    for yields in 0..40 {
        let batch: Vec<NewEvent> = (0..150).map(event).collect();
        batches.push(batch.iter().map(|e| e.event_id).collect::<Vec<_>>());
        tokio::select! {
            biased;
            _ = store.append(&id, ExpectedVersion::Any, batch) => {}
            () = async { for _ in 0..yields { tokio::task::yield_now().await } } => {}
        }
        // Whatever the writer is still doing, a reader sees a prefix of the positions.
        let seen = positions(&store).await;
        assert_eq!(
            seen,
            contiguous(seen.len() as u64),
            "after dropping at yield {yields}"
        );
    }
    // This append queues behind whatever the dropped ones left on the writer, so everything is settled after it.
    let last = store
        .append(&id, ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();
    let stored = store.load_stream(&id).await.unwrap();
    for ids in &batches {
        let kept = stored.iter().filter(|e| ids.contains(&e.event_id)).count();
        assert!(
            kept == 0 || kept == ids.len(),
            "a dropped append stored {kept} of {}",
            ids.len()
        );
    }
    assert_eq!(last.last_position, Position(stored.len() as u64));
    assert_eq!(positions(&store).await, contiguous(stored.len() as u64));
}
