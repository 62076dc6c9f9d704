//! Bad configuration and broken connections give errors that say what happened and whether to retry.

use annals::{EventStore, ExpectedVersion, Position, StreamVersion};
use annals_postgres::{Error, PostgresStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::support::{event, kill_blocked_appends_until_finished, store, stream};

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    // Port 1 on localhost refuses connections at once.
    let err = PostgresStore::connect("postgres://app:hunter2@127.0.0.1:1/orders")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Connect { port: 1, .. }), "{err:?}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("\"orders\""), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn refused_credentials_name_the_database_and_user() {
    let url = std::env::var("DATABASE_URL").unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let bad = format!(
        "postgres://no_such_role:hunter2@{}:{}/no_such_database",
        options.get_host(),
        options.get_port()
    );
    let err = PostgresStore::connect(&bad).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(message.contains("no_such_database"), "{message}");
    assert!(message.contains("no_such_role"), "{message}");
    assert!(message.contains(options.get_host()), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_malformed_url_is_rejected_without_the_password() {
    let err = PostgresStore::connect("postgres://app:hunter2@db:notaport/orders")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("postgres://app:***@db"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[sqlx::test(migrations = false)]
async fn a_connection_killed_mid_append_writes_nothing_and_may_be_retried(pool: PgPool) {
    let store = store(pool.clone()).await;
    let id = stream("killed-1");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let head = store.head().await.unwrap();

    // Block the append at its insert, then kill its connection.
    let mut blocker = pool.begin().await.unwrap();
    blocker
        .execute("LOCK TABLE annals.events IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let batch = vec![event(1), event(2), event(3)];
    let append = {
        let (store, id, batch) = (store.clone(), id.clone(), batch.clone());
        tokio::spawn(async move {
            store
                .append(&id, ExpectedVersion::Exact(StreamVersion(1)), batch)
                .await
        })
    };
    // The store sends an append whose connection died once more on a fresh connection: kill that try too.
    let kills = kill_blocked_appends_until_finished(&pool, &append).await;
    assert_eq!(
        kills, 2,
        "the first try and the store's one retry on a fresh connection"
    );
    let err = append.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            annals::Error::Unavailable {
                operation: "append",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("may be retried"), "{err}");
    blocker.rollback().await.unwrap();

    assert_eq!(
        store.load_stream(&id).await.unwrap().len(),
        1,
        "nothing of the batch was written"
    );
    assert_eq!(store.head().await.unwrap(), head);
    // Retrying the same batch succeeds, once.
    let retried = store
        .append(&id, ExpectedVersion::Exact(StreamVersion(1)), batch.clone())
        .await
        .unwrap();
    assert_eq!(retried.stream_version, StreamVersion(4));
    let again = store
        .append(&id, ExpectedVersion::Exact(StreamVersion(1)), batch)
        .await
        .unwrap();
    assert_eq!(again, retried, "a second retry is recognised as a replay");
}

#[sqlx::test(migrations = false)]
async fn a_nul_character_is_rejected_naming_the_event(pool: PgPool) {
    let store = store(pool).await;
    let id = stream("nul-1");
    let bad = annals::NewEvent::new("ThingHappened", serde_json::json!({"text": "a\u{0}b"}));
    let err = store
        .append(&id, ExpectedVersion::Any, vec![event(0), bad])
        .await
        .unwrap_err();
    match err {
        annals::Error::InvalidAppend { stream, reason } => {
            assert_eq!(stream, id);
            assert!(reason.contains("event #1"), "{reason}");
            assert!(reason.contains("NUL"), "{reason}");
        }
        other => panic!("expected InvalidAppend, got {other:?}"),
    }
    let huge = event(1).with_schema_version(u32::MAX);
    let err = store
        .append(&id, ExpectedVersion::Any, vec![huge])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, annals::Error::InvalidAppend { reason, .. } if reason.contains("event #0 has schema version")),
        "{err:?}"
    );
    assert_eq!(store.head().await.unwrap(), Position::START);
}

#[sqlx::test(migrations = false)]
async fn reading_the_global_order_above_read_committed_is_refused(
    _options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let plain = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect.clone())
        .await
        .unwrap();
    store(plain.clone()).await;
    plain.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect.options([("default_transaction_isolation", "repeatable read")]))
        .await
        .unwrap();
    let store = annals_postgres::PostgresStore::from_pool(pool.clone());
    // Start-up refuses it, naming the setting...
    let refused = store.migrate().await.unwrap_err();
    assert!(
        matches!(
            refused,
            annals_postgres::Error::Misconfigured {
                setting: "default_transaction_isolation",
                ..
            }
        ),
        "{refused:?}"
    );
    // ...and so does every global read of a store that skipped the check.
    let err = store.read_all(Position::START, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            annals::Error::Backend {
                operation: "read_all",
                ..
            }
        ),
        "{err:?}"
    );
    let chain = format!("{err} / {:?}", std::error::Error::source(&err));
    assert!(chain.contains("READ COMMITTED"), "{chain}");
    drop(store);
    pool.close().await;
}
