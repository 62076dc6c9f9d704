//! The global order stays gap-safe when the database changes under a running store (a restore, a sequence reset),
//! the store refuses to start on a database that breaks ADR 0001's rules, and tenants never share a gap-marker tag.

use annals::{EventStore, ExpectedVersion, Position};
use annals_postgres::{Error, PostgresStore};
use sqlx::{Executor, PgPool};

use crate::support::{event, store, stream, tenant};

#[sqlx::test(migrations = false)]
async fn a_remembered_safe_bound_is_not_trusted_after_the_sequence_went_back(pool: PgPool) {
    let store = store(pool.clone()).await;
    for n in 0..10 {
        store
            .append(&stream("before"), ExpectedVersion::Any, vec![event(n)])
            .await
            .unwrap();
    }
    assert_eq!(
        store.read_all(Position::START, 100).await.unwrap().len(),
        10
    );
    // The store now remembers that everything up to 10 is safe. A restore from an older backup (or a sequence
    // reset) puts the log and the sequence back at the start.
    pool.execute("TRUNCATE annals.events; ALTER SEQUENCE annals.events_position_seq RESTART")
        .await
        .unwrap();
    let mut open = pool.begin().await.unwrap();
    let slow = store
        .append_in(
            &mut open,
            &stream("slow"),
            ExpectedVersion::Any,
            vec![event(100)],
        )
        .await
        .unwrap();
    let fast = store
        .append(&stream("fast"), ExpectedVersion::Any, vec![event(101)])
        .await
        .unwrap();
    assert!(slow.last_position < fast.last_position);
    // Trusting the old bound would hand out `fast` while `slow`, below it, is still in flight.
    assert_eq!(store.read_all(Position::START, 100).await.unwrap(), vec![]);
    let mut visited = 0;
    let last = store
        .visit_all(Position::START, &mut |_| {
            visited += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((visited, last), (0, Position::START));
    open.commit().await.unwrap();
    let positions: Vec<_> = store
        .read_all(Position::START, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, [slow.last_position, fast.last_position]);
}

#[sqlx::test(migrations = false)]
async fn migrate_refuses_a_database_that_breaks_the_ordering_rules(pool: PgPool) {
    let store = store(pool.clone()).await;
    let cases = [
        (
            "ALTER SEQUENCE annals.events_position_seq CACHE 20",
            "ALTER SEQUENCE annals.events_position_seq CACHE 1",
            "CACHE",
        ),
        (
            "ALTER SEQUENCE annals.events_position_seq MAXVALUE 9223372036854775807",
            "ALTER SEQUENCE annals.events_position_seq MAXVALUE 281474976710655",
            "MAXVALUE",
        ),
        (
            "ALTER SEQUENCE annals.events_position_seq CYCLE",
            "ALTER SEQUENCE annals.events_position_seq NO CYCLE",
            "CYCLE",
        ),
        (
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = serializable', \
             current_database()); END $$",
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_isolation', \
             current_database()); END $$",
            "default_transaction_isolation",
        ),
        (
            // A function put back with the old hashed tag, as a stale migration would.
            "CREATE OR REPLACE FUNCTION annals.safe_position() RETURNS bigint LANGUAGE sql \
             AS 'SELECT hashtext(current_schema())::bigint & 32767'",
            "SELECT 1",
            "schema_tag()",
        ),
    ];
    for (breaks, repairs, needle) in cases {
        pool.execute(breaks).await.unwrap();
        // A fresh pool, so that database-level settings apply to its sessions.
        let fresh = PostgresStore::from_pool(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect_with(pool.connect_options().as_ref().clone())
                .await
                .unwrap(),
        );
        match fresh.verify().await {
            Err(error @ Error::Misconfigured { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(needle),
                    "{message:?} should name {needle:?}"
                );
            }
            other => panic!("{breaks}: expected Misconfigured, got {other:?}"),
        }
        fresh.pool().close().await;
        pool.execute(repairs).await.unwrap();
    }
    store.verify().await.unwrap_err();
}

#[sqlx::test(migrations = false)]
async fn schemas_whose_names_hash_alike_do_not_hold_each_other_back(pool: PgPool) {
    // `hashtext(name) & 32767` is the same for these two: before tags were allocated, they shared one.
    let a = tenant(pool.clone(), "tenant_21").await;
    let b = tenant(pool.clone(), "tenant_957").await;
    let mut open = pool.begin().await.unwrap();
    a.append_in(
        &mut open,
        &stream("held"),
        ExpectedVersion::Any,
        vec![event(1)],
    )
    .await
    .unwrap();
    let done = b
        .append(&stream("free"), ExpectedVersion::Any, vec![event(2)])
        .await
        .unwrap();
    assert_eq!(
        b.head().await.unwrap(),
        done.last_position,
        "an open append in another schema holds nothing back"
    );
    assert_eq!(b.read_all(Position::START, 10).await.unwrap().len(), 1);
    open.rollback().await.unwrap();
}

/// 500 schemas in one database: the allocator hands out 500 distinct tags, and a migrated schema's functions use the
/// tag it was given. (Two schemas are migrated in full; the other 498 get their tag from the same allocator
/// `migrate` calls, which keeps the test fast.)
#[sqlx::test(migrations = false)]
async fn five_hundred_schemas_in_one_database_get_distinct_tags(pool: PgPool) {
    const SCHEMAS: usize = 500;
    for name in ["tenant_21", "tenant_957"] {
        PostgresStore::from_pool(pool.clone())
            .with_schema(name)
            .unwrap()
            .migrate()
            .await
            .unwrap();
    }
    let mut tx = pool.begin().await.unwrap();
    for n in 0..SCHEMAS {
        let name = format!("tenant_{n}");
        if name == "tenant_21" {
            continue;
        }
        tx.execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {name}"
        )))
        .await
        .unwrap();
        sqlx::query("SELECT annals_registry.allocate_tag($1)")
            .bind(&name)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let (schemas, tags): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT tag) FROM annals_registry.schema_tags WHERE schema_name LIKE 'tenant_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // tenant_0 .. tenant_499 plus tenant_957.
    assert_eq!((schemas, tags), (SCHEMAS as i64 + 1, SCHEMAS as i64 + 1));
    // Among them are names whose hashes collide; each still got a tag of its own, and the migrated schemas'
    // functions use the tag the registry holds for them.
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM annals_registry.schema_tags t \
          WHERE t.schema_name IN ('tenant_21', 'tenant_957') \
            AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                             WHERE n.nspname = t.schema_name AND p.proname = 'schema_tag' \
                               AND p.prosrc = format('SELECT %s::bigint', t.tag))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
}

#[sqlx::test(migrations = false)]
async fn a_binary_and_a_database_of_different_lock_protocols_refuse_each_other(pool: PgPool) {
    let store = store(pool.clone()).await;
    store.verify().await.unwrap();
    let cases = [
        // A schema migrated before the protocol had a number: protocol 1.
        (
            "DROP FUNCTION annals.lock_protocol()",
            "version 1 in the database",
            "migrate()",
        ),
        (
            "CREATE FUNCTION annals.lock_protocol() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 3 $$",
            "version 3 in the database",
            "newer version",
        ),
    ];
    for (changes, found, fix) in cases {
        pool.execute(changes).await.unwrap();
        match store.verify().await {
            Err(error @ Error::Misconfigured { .. }) => {
                let message = error.to_string();
                let speaks = format!(
                    "this binary speaks version {}",
                    annals_postgres::LOCK_PROTOCOL
                );
                for needle in ["lock protocol", found, &speaks, fix] {
                    assert!(
                        message.contains(needle),
                        "{message:?} should name {needle:?}"
                    );
                }
            }
            other => panic!("{changes}: expected Misconfigured, got {other:?}"),
        }
    }
}
