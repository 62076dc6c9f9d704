//! Several stores share one database, each in its own schema, with their own migrations and positions.

use annals::{EventStore, ExpectedVersion, Position};
use annals_postgres::{Error, PostgresStore};
use sqlx::PgPool;

use crate::support::{big_pool, event, stream, tenant};

#[sqlx::test(migrations = false)]
async fn tenants_in_one_database_never_see_each_other(pool: PgPool) {
    let a = PostgresStore::from_pool(pool.clone())
        .with_schema("tenant_a")
        .unwrap();
    let b = PostgresStore::from_pool(pool.clone())
        .with_schema("tenant_b")
        .unwrap();
    // Concurrent first migrations of both schemas, and of one schema twice, are safe.
    let (ra, rb, ra2) = tokio::join!(a.migrate(), b.migrate(), a.migrate());
    ra.unwrap();
    rb.unwrap();
    ra2.unwrap();
    a.migrate().await.unwrap();
    assert_eq!(a.schema(), "tenant_a");
    // Every embedded migration is applied, once, in each schema.
    for schema in ["tenant_a", "tenant_b"] {
        let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM {schema}._sqlx_migrations WHERE success ORDER BY version"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            versions,
            embedded_versions(),
            "migrations applied in {schema}"
        );
    }

    let id = stream("shared-name");
    let in_a = a
        .append(&id, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    let in_b = b
        .append(&id, ExpectedVersion::NoStream, vec![event(3)])
        .await
        .unwrap();
    assert_eq!(
        in_a.first_position,
        Position(1),
        "each schema has its own positions"
    );
    assert_eq!(in_b.first_position, Position(1));
    assert_eq!(a.load_stream(&id).await.unwrap().len(), 2);
    assert_eq!(b.load_stream(&id).await.unwrap().len(), 1);
    assert_eq!(
        b.read_all(Position::START, 10).await.unwrap()[0]
            .payload
            .to_value()
            .unwrap()["n"],
        3
    );

    // An append held open in one tenant does not hold back the other's readers.
    let mut open = a.pool().begin().await.unwrap();
    a.append_in(&mut open, &id, ExpectedVersion::Any, vec![event(4)])
        .await
        .unwrap();
    let later = b
        .append(&id, ExpectedVersion::Any, vec![event(5)])
        .await
        .unwrap();
    assert_eq!(b.head().await.unwrap(), later.last_position);
    open.rollback().await.unwrap();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["tenant_a", "tenant_b"],
        "migrations are recorded per schema"
    );
}

/// `append_events` pins no `search_path` of its own (migration 0009): every name in it is qualified. A session
/// whose `search_path` names another tenant's schema, and which has a decoy `events` table and sequence of its
/// own in `public`, still appends into the store's schema, lone and several events at once, in and out of a
/// caller's transaction, and positions come from the store's sequence.
#[sqlx::test(migrations = false)]
async fn appends_land_in_the_stores_schema_whatever_the_sessions_search_path(pool: PgPool) {
    let a = tenant(pool.clone(), "tenant_a").await;
    let b = tenant(pool.clone(), "tenant_b").await;
    let id = stream("pinned");
    b.append(
        &id,
        ExpectedVersion::NoStream,
        vec![event(1), event(2), event(3)],
    )
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.events (LIKE tenant_b.events); \
         CREATE SEQUENCE public.events_position_seq START 1000",
    )
    .execute(&pool)
    .await
    .unwrap();

    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("search_path", "tenant_b, public")]);
    let elsewhere = PostgresStore::from_pool(big_pool(options, 2).await)
        .with_schema("tenant_a")
        .unwrap();
    let one = elsewhere
        .append(&id, ExpectedVersion::NoStream, vec![event(10)])
        .await
        .unwrap();
    let two = elsewhere
        .append(
            &id,
            ExpectedVersion::Exact(annals::StreamVersion(1)),
            vec![event(11), event(12)],
        )
        .await
        .unwrap();
    let mut open = elsewhere.pool().begin().await.unwrap();
    let three = elsewhere
        .append_in(&mut open, &id, ExpectedVersion::Any, vec![event(13)])
        .await
        .unwrap();
    open.commit().await.unwrap();
    assert_eq!(
        (
            one.first_position,
            two.first_position,
            two.last_position,
            three.last_position
        ),
        (Position(1), Position(2), Position(3), Position(4)),
        "positions come from tenant_a's sequence"
    );
    let conflict = elsewhere
        .append(
            &id,
            ExpectedVersion::Exact(annals::StreamVersion(1)),
            vec![event(14)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, annals::Error::Conflict { .. }),
        "{conflict:?}"
    );

    let numbers = |events: Vec<annals::RecordedEvent>| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.payload.to_value().unwrap()["n"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(numbers(a.load_stream(&id).await.unwrap()), [10, 11, 12, 13]);
    assert_eq!(
        numbers(b.load_stream(&id).await.unwrap()),
        [1, 2, 3],
        "tenant_b untouched"
    );
    let decoys: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(decoys, 0, "nothing went to the decoy table in public");
    elsewhere.pool().close().await;
}

#[sqlx::test(migrations = false)]
async fn the_default_schema_is_annals(pool: PgPool) {
    let store = PostgresStore::from_pool(pool.clone());
    assert_eq!(store.schema(), annals_postgres::DEFAULT_SCHEMA);
    store.migrate().await.unwrap();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('annals.events') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(exists);
}

#[sqlx::test(migrations = false)]
async fn unusable_schema_names_are_rejected(pool: PgPool) {
    for bad in [
        "",
        "9lives",
        "a-b",
        "x\"; DROP SCHEMA public; --",
        "pg_temp",
    ] {
        let err = PostgresStore::from_pool(pool.clone())
            .with_schema(bad)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSchema { schema, .. } if schema == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains("invalid schema name"), "{err}");
    }
}

#[sqlx::test(migrations = false)]
async fn an_unmigrated_schema_is_a_clear_backend_error(pool: PgPool) {
    let store = PostgresStore::from_pool(pool)
        .with_schema("never_migrated")
        .unwrap();
    let err = store
        .append(&stream("s"), ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            annals::Error::Backend {
                operation: "append",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

/// The versions of the migration files embedded in the store, in order.
fn embedded_versions() -> Vec<i64> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.split('_').next()?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}
