//! The store's pool does not ping before every acquire; a pooled connection the server killed while it was idle
//! must neither fail an operation nor make an append write twice.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, StreamVersion};
use annals_postgres::PostgresStore;
use sqlx::PgPool;

use crate::support::{event, eventually, stream};

/// A migrated store (without NOTIFY) whose pool holds one connection, on the test's database, and that pool.
async fn one_connection_store(admin: &PgPool) -> (PgPool, PostgresStore) {
    let options = admin.connect_options().as_ref().clone();
    let pool = PostgresStore::pool_options()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool.clone()).with_notify(false);
    store.migrate().await.unwrap();
    (pool, store)
}

/// Terminates the server backend behind the store's only connection and waits until it is gone.
async fn kill_the_pooled_connection(store_pool: &PgPool, admin: &PgPool) {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(store_pool)
        .await
        .unwrap();
    terminate(admin, pid).await;
}

/// Terminates the server backend `pid` and waits until it is gone.
async fn terminate(admin: &PgPool, pid: i32) {
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(admin)
        .await
        .unwrap();
    assert!(killed, "backend {pid} was not terminated");
    eventually(
        "the killed backend is gone",
        Duration::from_secs(10),
        || async {
            let alive: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_one(admin)
                    .await
                    .unwrap();
            alive == 0
        },
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_dead_pooled_connection_neither_fails_nor_repeats_an_append_or_a_read(admin: PgPool) {
    // One connection, no pings: the next operation gets exactly the connection that was killed.
    let (pool, store) = one_connection_store(&admin).await;
    assert!(!pool.options().get_test_before_acquire());
    let id = stream("dead-connection-1");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();

    kill_the_pooled_connection(&pool, &admin).await;
    let appended = store
        .append(
            &id,
            ExpectedVersion::Exact(StreamVersion(1)),
            vec![event(1)],
        )
        .await
        .expect("an append on a dead pooled connection is retried on a fresh one");
    assert_eq!(appended.stream_version, StreamVersion(2));

    kill_the_pooled_connection(&pool, &admin).await;
    let mut versions = Vec::new();
    store
        .visit_stream(&id, &mut |e| {
            versions.push(e.stream_version.get());
            Ok(())
        })
        .await
        .expect("a stream read on a dead pooled connection is retried on a fresh one");
    assert_eq!(versions, [1, 2], "each event stored exactly once");

    kill_the_pooled_connection(&pool, &admin).await;
    let read = store
        .read_stream(&id, StreamVersion::FIRST, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    pool.close().await;
}

/// The versions a session's stream read hands out.
async fn versions(
    session: &mut dyn annals::CommandSession,
    id: &annals::StreamId,
) -> annals::Result<Vec<u64>> {
    let mut versions = Vec::new();
    session
        .visit_stream(id, &mut |e| {
            versions.push(e.stream_version.get());
            Ok(())
        })
        .await?;
    Ok(versions)
}

#[sqlx::test(migrations = false)]
async fn a_command_session_replaces_a_connection_found_dead_at_its_read_or_at_its_append(
    admin: PgPool,
) {
    // One connection: the session's read and append run on the one connection the pool holds.
    let (pool, store) = one_connection_store(&admin).await;
    let id = stream("dead-connection-session");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    // Dead when the read checks it out.
    kill_the_pooled_connection(&pool, &admin).await;
    let mut session = store.command_session();
    let read = versions(&mut *session, &id)
        .await
        .expect("a read on a dead pooled connection is retried on a fresh one");
    assert_eq!(read, [1]);
    let appended = session
        .append(
            &id,
            ExpectedVersion::Exact(StreamVersion(1)),
            vec![event(1)],
        )
        .await
        .unwrap();
    assert_eq!(appended.stream_version, StreamVersion(2));
    drop(session);

    // Killed between the read and the append, while the session holds it.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut session = store.command_session();
    assert_eq!(versions(&mut *session, &id).await.unwrap(), [1, 2]);
    terminate(&admin, pid).await;
    let appended = session
        .append(
            &id,
            ExpectedVersion::Exact(StreamVersion(2)),
            vec![event(2)],
        )
        .await
        .expect("an append on a connection that died after the read is retried on a fresh one");
    assert_eq!(appended.stream_version, StreamVersion(3));
    drop(session);

    let stored = store.load_stream(&id).await.unwrap();
    let versions: Vec<_> = stored.iter().map(|e| e.stream_version.get()).collect();
    assert_eq!(versions, [1, 2, 3], "each event stored exactly once");
    pool.close().await;
}

#[sqlx::test(migrations = false)]
async fn an_append_after_a_read_on_a_lost_connection_reads_the_version_again(admin: PgPool) {
    // The session's read found version 3; then its connection dies, and the fresh one reaches a server that lacks
    // version 3 (as a standby promoted after an asynchronous fail-over may: here it is deleted by hand). Appending
    // at the version after the read would leave a hole at 3; the retry must read the version where it appends.
    let (pool, store) = one_connection_store(&admin).await;
    let id = stream("lost-after-read");
    store
        .append(
            &id,
            ExpectedVersion::NoStream,
            vec![event(1), event(2), event(3)],
        )
        .await
        .unwrap();
    // The pool's one connection: the session's read takes it and keeps it.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut session = store.command_session();
    assert_eq!(versions(&mut *session, &id).await.unwrap(), [1, 2, 3]);
    terminate(&admin, pid).await;
    sqlx::query("DELETE FROM annals.events WHERE stream_id = $1 AND stream_version = 3")
        .bind(id.as_str())
        .execute(&admin)
        .await
        .unwrap();

    let expected = ExpectedVersion::Exact(StreamVersion(3));
    match session.append(&id, expected, vec![event(4)]).await {
        Err(annals::Error::Conflict { actual, .. }) => assert_eq!(actual, StreamVersion(2)),
        other => panic!("expected a conflict naming version 2, got {other:?}"),
    }
    drop(session);
    let stored = store.load_stream(&id).await.unwrap();
    let versions: Vec<_> = stored.iter().map(|e| e.stream_version.get()).collect();
    assert_eq!(versions, [1, 2], "no hole");
    pool.close().await;
}
