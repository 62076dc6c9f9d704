//! The write paths checked against each other, not one by one: an append after a command session's read
//! stalled after its insert, while `Any` and `StreamExists` appends arrive through every other path (the store's
//! own transaction, a caller's transaction, a unit of work, group commit); and an append after a read that the
//! server it lands on no longer backs (a promoted standby lacking the last commits, staged by deleting them).

use std::time::Duration;

use annals::{CommandSession, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamVersion};
use annals_postgres::{GroupCommit, GroupCommitStore, PostgresStore};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::support::{event, eventually, single_event_append_blocked, store, stream};

/// The advisory lock key the stalling trigger waits on.
const STALL_KEY: i64 = 4242;

/// Makes every insert of an event of type `Stalled` wait, after its row is written and before its statement
/// ends, until the returned connection lets go of the advisory lock `STALL_KEY`.
async fn stall_inserts_of_stalled_events(pool: &PgPool) -> PoolConnection<Postgres> {
    sqlx::raw_sql(
        "CREATE FUNCTION annals.stall_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_advisory_lock_shared(4242); PERFORM pg_advisory_unlock_shared(4242); RETURN NULL; END $$; \
         CREATE TRIGGER stall_after_insert AFTER INSERT ON annals.events FOR EACH ROW \
         WHEN (NEW.event_type = 'Stalled') EXECUTE FUNCTION annals.stall_after_insert();",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(STALL_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

fn stalled() -> NewEvent {
    NewEvent::new("Stalled", serde_json::json!({"stalled": true}))
}

/// How the second append arrives.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `EventStore::append` of two events (`append_events` in the store's own transaction).
    Own,
    /// `PostgresStore::append_in` of one event in a caller's transaction, which then commits.
    Callers,
    /// A `UnitOfWork` appending one event, then committing.
    Unit,
    /// A `GroupCommitStore` appending one event.
    Group,
}

async fn append_through(
    store: &PostgresStore,
    path: Path,
    name: &str,
    expected: ExpectedVersion,
) -> annals::Result<StreamVersion> {
    let id = stream(name);
    match path {
        Path::Own => {
            let done = store
                .append(&id, expected, vec![event(10), event(11)])
                .await?;
            Ok(done.stream_version)
        }
        Path::Callers => {
            let mut tx = store.pool().begin().await.unwrap();
            let done = store
                .append_in(&mut tx, &id, expected, vec![event(10)])
                .await?;
            tx.commit().await.expect("the caller's transaction commits");
            Ok(done.stream_version)
        }
        Path::Unit => {
            let unit = store.unit_of_work();
            let done = unit.append(&id, expected, vec![event(10)]).await?;
            unit.commit().await?;
            Ok(done.stream_version)
        }
        Path::Group => {
            let group = GroupCommitStore::new(store.clone(), GroupCommit::default());
            let done = group.append(&id, expected, vec![event(10)]).await?;
            Ok(done.stream_version)
        }
    }
}

/// A command session reads `name` (two events), appends a `Stalled` event after its read, and stalls after the
/// insert; meanwhile `expected` arrives through `path`. Both must succeed, one after the other.
async fn an_append_beside_a_stalled_append_after_a_read(
    pool: PgPool,
    path: Path,
    expected: ExpectedVersion,
) {
    let store = store(pool.clone()).await;
    let name = "stock-1";
    store
        .append(
            &stream(name),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    let mut holder = stall_inserts_of_stalled_events(&pool).await;
    let after_read = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut session = store.command_session();
            let mut read = 0;
            session
                .fold_stream(&stream(name), &mut |e: &RecordedEvent| {
                    read = e.stream_version.get();
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(read, 2);
            session
                .append(
                    &stream(name),
                    ExpectedVersion::Exact(StreamVersion(2)),
                    vec![stalled()],
                )
                .await
        })
    };
    let (stalled_pid, waits_for) = single_event_append_blocked(&pool).await;
    assert_eq!(
        waits_for,
        ["advisory"],
        "stalled in the trigger, after its insert"
    );
    let other = {
        let store = store.clone();
        tokio::spawn(async move { append_through(&store, path, name, expected).await })
    };
    // The other append reaches the database and waits on a lock: the stream lock (or, without one held by
    // the stalled append, the version's unique key).
    eventually(
        "the other append waits on a lock",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> $1 AND state = 'active' AND wait_event_type = 'Lock'",
            )
            .bind(stalled_pid)
            .fetch_one(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(STALL_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    let first = after_read.await.unwrap().unwrap();
    assert_eq!(first.stream_version, StreamVersion(3));
    let version = other.await.unwrap().unwrap_or_else(|error| {
        panic!("{expected} through {path:?} beside an append after a read: {error}")
    });
    let events = store.load_stream(&stream(name)).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version.get()).collect();
    assert_eq!(version.get(), *versions.last().unwrap());
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
}

#[sqlx::test(migrations = false)]
async fn any_beside_an_append_after_a_read_never_conflicts(pool: PgPool) {
    an_append_beside_a_stalled_append_after_a_read(pool, Path::Own, ExpectedVersion::Any).await;
}

#[sqlx::test(migrations = false)]
async fn stream_exists_beside_an_append_after_a_read_never_conflicts(pool: PgPool) {
    an_append_beside_a_stalled_append_after_a_read(pool, Path::Own, ExpectedVersion::StreamExists)
        .await;
}

#[sqlx::test(migrations = false)]
async fn any_in_a_callers_transaction_beside_an_append_after_a_read_commits(pool: PgPool) {
    an_append_beside_a_stalled_append_after_a_read(pool, Path::Callers, ExpectedVersion::Any).await;
}

#[sqlx::test(migrations = false)]
async fn any_in_a_unit_of_work_beside_an_append_after_a_read_commits(pool: PgPool) {
    an_append_beside_a_stalled_append_after_a_read(pool, Path::Unit, ExpectedVersion::Any).await;
}

#[sqlx::test(migrations = false)]
async fn any_through_group_commit_beside_an_append_after_a_read_never_conflicts(pool: PgPool) {
    an_append_beside_a_stalled_append_after_a_read(pool, Path::Group, ExpectedVersion::Any).await;
}

/// Reads `name` through a command session and returns the session and the version it found.
async fn read<'s>(store: &'s PostgresStore, name: &str) -> (Box<dyn CommandSession + 's>, u64) {
    let mut session = store.command_session();
    let mut found = 0;
    session
        .fold_stream(&stream(name), &mut |e: &RecordedEvent| {
            found = e.stream_version.get();
            Ok(())
        })
        .await
        .unwrap();
    (session, found)
}

#[sqlx::test(migrations = false)]
async fn an_append_after_a_read_the_server_no_longer_backs_leaves_no_hole(pool: PgPool) {
    let store = store(pool.clone()).await;
    let name = "ledger-1";
    let events: Vec<NewEvent> = (1..=7).map(event).collect();
    store
        .append(&stream(name), ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    let (mut session, found) = read(&store, name).await;
    assert_eq!(found, 7);
    // The server the append reaches holds the stream only up to version 5 (a promoted standby lacking the
    // last commits, or a pooler that re-routed the connection), staged by deleting versions 6 and 7.
    sqlx::query("DELETE FROM annals.events WHERE stream_id = $1 AND stream_version > 5")
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
    let appended = session
        .append(
            &stream(name),
            ExpectedVersion::Exact(StreamVersion(7)),
            vec![event(8)],
        )
        .await;
    drop(session);
    let stored: Vec<u64> = store
        .load_stream(&stream(name))
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version.get())
        .collect();
    assert_eq!(stored, [1, 2, 3, 4, 5], "no hole: {appended:?}");
    match appended {
        Err(annals::Error::Conflict { actual, .. }) => assert_eq!(actual, StreamVersion(5)),
        other => panic!("expected a conflict naming version 5, got {other:?}"),
    }
}
