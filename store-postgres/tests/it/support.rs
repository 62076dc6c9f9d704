//! Helpers shared by the integration tests.

use std::future::Future;
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use annals_postgres::PostgresStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres};
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

/// A migrated store in `schema`.
pub async fn tenant(pool: PgPool, schema: &str) -> PostgresStore {
    let store = PostgresStore::from_pool(pool).with_schema(schema).unwrap();
    store.migrate().await.unwrap();
    store
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

/// A `pg_stat_activity` condition true of a backend running an append of the store in schema `annals`: a single
/// event in the store's own transaction (one `INSERT`) or a call of `append_events`.
pub const APPENDING: &str =
    "(query LIKE 'SELECT o_outcome%' OR query LIKE 'INSERT INTO \"annals\".events%')";

/// Kills every append blocked behind a test's table lock, each backend once, until `task` has finished (the
/// store retries an append whose connection died once on a fresh connection, and the repository retries on top
/// of that, so how many tries there are is the code's business, not the test's). Returns how many it killed.
pub async fn kill_blocked_appends_until_finished<T>(
    pool: &PgPool,
    task: &tokio::task::JoinHandle<T>,
) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut killed: Vec<i32> = Vec::new();
    while !task.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the append never gave up while every try of it was killed"
        );
        let blocked = sqlx::query_scalar::<Postgres, i32>(
            AssertSqlSafe(format!(
                "SELECT pid FROM pg_stat_activity WHERE {APPENDING} AND state = 'active' \
                 AND wait_event_type = 'Lock' AND datname = current_database() AND pid <> ALL ($1) LIMIT 1"
            )),
        )
        .bind(killed.clone())
        .fetch_optional(pool)
        .await
        .unwrap();
        match blocked {
            Some(pid) => {
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(pool)
                    .await
                    .unwrap();
                killed.push(pid);
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    killed.len()
}

/// Waits until a pooled append is blocked on a lock while running a single-event fast path's `INSERT`, and
/// returns its backend's pid and the types of the locks it waits for.
pub async fn single_event_append_blocked(pool: &PgPool) -> (i32, Vec<String>) {
    // One condition, checked at once: a backend found running the `INSERT` may still be preparing it (then it
    // goes idle before it executes), so only one that waits on a lock while running it is the append stalled.
    let find = || async {
        sqlx::query_scalar::<_, i32>(AssertSqlSafe(format!(
            "SELECT pid FROM pg_stat_activity WHERE {APPENDING} AND query LIKE 'INSERT%' \
             AND state = 'active' AND wait_event_type = 'Lock' AND datname = current_database() LIMIT 1"
        )))
        .fetch_optional(pool)
        .await
        .unwrap()
    };
    eventually(
        "a single-event append waits on a lock",
        Duration::from_secs(30),
        || async { find().await.is_some() },
    )
    .await;
    // It waits until the test lets it through, so it is still there.
    let pid = find().await.unwrap();
    let waits_for =
        sqlx::query_scalar("SELECT locktype FROM pg_locks WHERE pid = $1 AND NOT granted")
            .bind(pid)
            .fetch_all(pool)
            .await
            .unwrap();
    (pid, waits_for)
}

/// Stalls a single-event append to stream `stalled` after it drew its position, on the unique key of an event id
/// that another transaction holds uncommitted (a row inserted without any gap marker, so that only the append's
/// own marker can hold readers back), commits a later append meanwhile, and checks that `read_all` and `head()`
/// stay below the stalled append until it is let through. `start` spawns the append of the event it is given.
pub async fn readers_stop_below_a_stalled_append<F>(pool: &PgPool, store: &PostgresStore, start: F)
where
    F: FnOnce(NewEvent) -> tokio::task::JoinHandle<annals::Result<annals::AppendResult>>,
{
    let id = annals::EventId::new();
    let mut rogue = pool.begin().await.unwrap();
    let rogue_position: i64 = sqlx::query_scalar(
        "INSERT INTO annals.events (position, stream_id, stream_version, event_id, schema_version, event_type, payload) \
         VALUES (nextval('annals.events_position_seq'), 'rogue', 1, $1, 1, 'Rogue', '{}') RETURNING position",
    )
    .bind(id.0)
    .fetch_one(&mut *rogue)
    .await
    .unwrap();
    let stalled = start(event(1).with_id(id));
    let (_, waits_for) = single_event_append_blocked(pool).await;
    assert_eq!(
        waits_for,
        ["transactionid"],
        "stalled on the event id's unique key"
    );
    let later = store
        .append(&stream("later"), ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();
    assert!(later.first_position.get() > u64::try_from(rogue_position).unwrap() + 1);
    assert!(
        store
            .read_all(Position::START, 100)
            .await
            .unwrap()
            .is_empty(),
        "the later append must not be read while the stalled one, below it, may still commit"
    );
    assert_eq!(store.head().await.unwrap(), Position::START);
    for lean in [false, true] {
        let mut visited = 0;
        let mut visit = |_: &annals::RecordedEvent| {
            visited += 1;
            Ok(())
        };
        let last = if lean {
            store.fold_all(Position::START, &mut visit).await
        } else {
            store.visit_all(Position::START, &mut visit).await
        };
        assert_eq!(
            (visited, last.unwrap()),
            (0, Position::START),
            "no visit (lean: {lean}) passes the stalled append"
        );
    }

    rogue.rollback().await.unwrap();
    let stalled = stalled.await.unwrap().unwrap();
    assert!(stalled.first_position < later.first_position);
    let all = store.read_all(Position::START, 100).await.unwrap();
    let streams: Vec<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["stalled", "later"]);
    assert_eq!(all[0].position, stalled.first_position);
}
