//! A unit of work: a repository's appends and the caller's rows share one transaction.

use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, Position, StreamVersion};
use sqlx::{Executor, PgPool};

use crate::support::{event, store, stream};

#[sqlx::test(migrations = false)]
async fn appends_and_the_callers_rows_commit_together_and_wake_local_waiters(pool: PgPool) {
    let store = store(pool.clone()).await;
    pool.execute("CREATE TABLE public.outbox (body text NOT NULL)")
        .await
        .unwrap();
    let id = stream("order-1");

    // Rolled back: nothing of it is kept.
    let unit = store.unit_of_work();
    unit.append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    unit.transaction()
        .await
        .unwrap()
        .execute("INSERT INTO public.outbox VALUES ('placed')")
        .await
        .unwrap();
    assert!(
        store.load_stream(&id).await.unwrap().is_empty(),
        "invisible before commit"
    );
    unit.rollback().await;
    assert!(store.load_stream(&id).await.unwrap().is_empty());

    // Committed: both are kept, and a waiter of this process wakes up (its poll interval is an hour away).
    let store = store.with_poll_interval(Duration::from_secs(3600));
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .wait_for_events(Position::START, Duration::from_secs(3600))
                .await
        }
    });
    let unit = Arc::new(store.unit_of_work());
    let done = unit
        .append(&id, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(done.stream_version, StreamVersion(2));
    unit.transaction()
        .await
        .unwrap()
        .execute("INSERT INTO public.outbox VALUES ('placed')")
        .await
        .unwrap();
    unit.commit().await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the commit wakes local waiters")
        .unwrap()
        .unwrap();
    assert_eq!(head, done.last_position);
    assert_eq!(store.load_stream(&id).await.unwrap().len(), 2);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM public.outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 1);
}

#[sqlx::test(migrations = false)]
async fn a_refused_append_keeps_the_whole_unit_from_committing(pool: PgPool) {
    let store = store(pool.clone()).await;
    let id = stream("order-2");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();

    let unit = store.unit_of_work();
    let other = stream("order-3");
    unit.append(&other, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();
    let conflict = unit
        .append(&id, ExpectedVersion::NoStream, vec![event(3)])
        .await;
    assert!(
        matches!(conflict, Err(annals::Error::Conflict { .. })),
        "{conflict:?}"
    );
    let refused = unit.commit().await;
    assert!(
        matches!(refused, Err(annals::Error::UnitAborted { .. })),
        "{refused:?}"
    );
    assert!(
        store.load_stream(&other).await.unwrap().is_empty(),
        "the earlier append was not committed on its own"
    );
    assert_eq!(store.load_stream(&id).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn a_failed_statement_of_the_callers_own_is_reported_by_commit(pool: PgPool) {
    let store = store(pool.clone()).await;
    let id = stream("order-4");
    let unit = store.unit_of_work();
    unit.append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let failed = unit
        .transaction()
        .await
        .unwrap()
        .execute("INSERT INTO public.no_such_table VALUES (1)")
        .await;
    assert!(failed.is_err());
    // PostgreSQL would answer COMMIT with a silent ROLLBACK here; the unit says so instead of reporting success.
    let refused = unit.commit().await;
    assert!(
        matches!(refused, Err(annals::Error::UnitAborted { ref first, .. }) if first.contains("statement")),
        "{refused:?}"
    );
    assert!(store.load_stream(&id).await.unwrap().is_empty());
}
