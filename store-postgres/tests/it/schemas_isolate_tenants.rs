//! Several stores share one database, each in its own schema, with their own migrations and positions.

use annals::{EventStore, ExpectedVersion, Position};
use annals_postgres::{Error, PostgresStore};
use sqlx::PgPool;

use crate::support::{event, stream};

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
        let embedded: Vec<i64> = sqlx::migrate!("./migrations")
            .iter()
            .map(|m| m.version)
            .collect();
        assert!(
            embedded.contains(&6),
            "the process timers' migration is embedded"
        );
        assert_eq!(versions, embedded, "migrations applied in {schema}");
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
