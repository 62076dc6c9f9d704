//! The store keeps the connection of a stream read or an append that succeeded for its next one, instead of
//! handing it back to the pool (whose release pings the server): it must hand it back once unused, and a held
//! connection that died must neither fail a command nor make it write twice.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, StreamVersion};
use annals_postgres::PostgresStore;
use sqlx::PgPool;

use crate::support::{event, eventually, stream};

/// A pool of `connections` on the pool options the store recommends, its connections named `name`.
async fn named_pool(admin: &PgPool, name: &str, connections: u32) -> PgPool {
    let options = admin.connect_options().as_ref().clone();
    PostgresStore::pool_options()
        .max_connections(connections)
        .connect_with(options.application_name(name))
        .await
        .unwrap()
}

/// How many of the pool's connections are checked out (by the store or anyone else).
fn checked_out(pool: &PgPool) -> u32 {
    let idle = u32::try_from(pool.num_idle()).unwrap();
    pool.size() - idle
}

#[sqlx::test(migrations = false)]
async fn an_append_keeps_its_connection_for_the_next_and_hands_it_back_once_unused(admin: PgPool) {
    let pool = named_pool(&admin, "held-kept", 3).await;
    let store = PostgresStore::from_pool(pool.clone()).with_notify(false);
    store.migrate().await.unwrap();
    eventually(
        "the migration's connections are back in the pool",
        Duration::from_secs(10),
        || async { checked_out(&pool) == 0 },
    )
    .await;

    let id = stream("held-kept");
    for n in 0..20u64 {
        let expected = match n {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(StreamVersion(n)),
        };
        store.append(&id, expected, vec![event(n)]).await.unwrap();
        // Kept by the store as the append returns: not on its way back to the pool in a task.
        assert_eq!(checked_out(&pool), 1, "after append {n}");
    }
    let backends: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'held-kept'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(
        backends <= 2,
        "twenty appends opened {backends} connections"
    );

    eventually(
        "the unused connection is back in the pool",
        Duration::from_secs(10),
        || async { checked_out(&pool) == 0 },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), pool.close())
        .await
        .expect("the pool closes while the store still exists");
    drop(store);
}

#[sqlx::test(migrations = false)]
async fn held_connections_killed_by_the_server_neither_fail_nor_repeat_a_command(admin: PgPool) {
    let pool = named_pool(&admin, "held-killed", 5).await;
    let store = PostgresStore::from_pool(pool.clone()).with_notify(false);
    store.migrate().await.unwrap();
    let ids: Vec<_> = (0..3)
        .map(|n| stream(&format!("held-killed-{n}")))
        .collect();
    for id in &ids {
        store
            .append(id, ExpectedVersion::NoStream, vec![event(0)])
            .await
            .unwrap();
    }
    // Three sessions read at once, each on a connection of its own; dropped, they leave three held.
    let mut sessions: Vec<_> = ids.iter().map(|_| store.command_session()).collect();
    for (session, id) in sessions.iter_mut().zip(&ids) {
        session.visit_stream(id, &mut |_| Ok(())).await.unwrap();
    }
    drop(sessions);
    assert_eq!(
        checked_out(&pool),
        3,
        "the store holds the three connections"
    );

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'held-killed') AS killed",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(killed >= 3, "killed {killed} backends");
    eventually(
        "the killed backends are gone",
        Duration::from_secs(10),
        || async {
            let alive: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'held-killed'",
            )
            .fetch_one(&admin)
            .await
            .unwrap();
            alive == 0
        },
    )
    .await;

    // More commands than connections held: none fails, each writes once.
    for round in 1..=2u64 {
        for id in &ids {
            let appended = store
                .append(
                    id,
                    ExpectedVersion::Exact(StreamVersion(round)),
                    vec![event(round)],
                )
                .await
                .expect("an append on a held connection the server killed is retried");
            assert_eq!(appended.stream_version, StreamVersion(round + 1));
        }
    }
    for id in &ids {
        let stored = store.load_stream(id).await.unwrap();
        let versions: Vec<_> = stored.iter().map(|e| e.stream_version.get()).collect();
        assert_eq!(versions, [1, 2, 3], "{id}: each event stored exactly once");
    }
    pool.close().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `outlive` with a store in a tenant schema of its own made on a runtime that is dropped right after the
/// store was made (`outlive` gets that runtime to use, and drops what it must after it), then drops the schema
/// on a fresh runtime.
fn with_a_store_outliving_its_runtime(
    prefix: &str,
    outlive: impl FnOnce(PostgresStore, tokio::runtime::Runtime),
) {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    let schema = format!("{prefix}_{}", std::process::id());
    let first = runtime();
    let store = first.block_on(async {
        let pool = PostgresStore::pool_options()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        crate::support::tenant(pool, &schema)
            .await
            .with_notify(false)
    });
    outlive(store, first);
    runtime().block_on(async {
        let admin = PgPool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    });
}

/// A store may outlive the runtime its connections were made on (a store in a static, or one dropped after
/// `Runtime::block_on` returned): dropping it then must not panic for the connections it still holds.
#[test]
fn a_store_dropped_after_its_runtime_closes_the_connections_it_holds() {
    with_a_store_outliving_its_runtime("held_outlived", |store, first| {
        first.block_on(async {
            store
                .append(
                    &stream("outlived"),
                    ExpectedVersion::NoStream,
                    vec![event(0)],
                )
                .await
                .unwrap();
        });
        drop(first);
        drop(store);
    });
}

/// A command session that read a stream holds its connection; dropped after its runtime ended, it hands the
/// connection to the store, which must close it rather than release it to the pool (sqlx's release spawns a
/// task, which panics without a runtime).
#[test]
fn a_session_dropped_after_its_runtime_releases_its_connection_without_panicking() {
    with_a_store_outliving_its_runtime("held_session_outlived", |store, first| {
        let session = first.block_on(async {
            let mut session = store.command_session();
            session
                .fold_stream(&stream("outlived"), &mut |_| Ok(()))
                .await
                .unwrap();
            session
        });
        drop(first);
        drop(session);
        drop(store);
    });
}
