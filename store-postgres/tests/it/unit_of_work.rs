//! A unit of work: a repository's appends and the caller's rows share one transaction.

use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, Position, StreamVersion};
use sqlx::{Executor, PgPool};

use crate::support::{event, store, stream, until_blocked_on_lock};

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

/// A deferred constraint trigger that makes `COMMIT` of a transaction that inserted into `public.gate` wait for
/// advisory lock 27 (advisory locks are per database, and each test has its own): held by the test, it keeps a
/// unit's commit in flight on the server for as long as the test needs.
async fn gate_commits_on_lock_27(pool: &PgPool) {
    pool.execute(
        r#"
        CREATE TABLE public.gate (n int NOT NULL);
        CREATE FUNCTION public.wait_at_gate() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_advisory_xact_lock(27); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER wait_at_gate AFTER INSERT ON public.gate
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.wait_at_gate();
        "#,
    )
    .await
    .unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_commit_dropped_in_flight_ends_the_unit_with_an_unknown_outcome(pool: PgPool) {
    let store = store(pool.clone()).await;
    gate_commits_on_lock_27(&pool).await;
    let mut gatekeeper = pool.acquire().await.unwrap();
    gatekeeper
        .execute("SELECT pg_advisory_lock(27)")
        .await
        .unwrap();
    let id = stream("order-5");
    let unit = Arc::new(store.unit_of_work());
    unit.append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let pid: i32 = {
        let mut transaction = unit.transaction().await.unwrap();
        transaction
            .execute("INSERT INTO public.gate VALUES (1)")
            .await
            .unwrap();
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **transaction)
            .await
            .unwrap()
    };

    // The commit waits at the gate, on the server; then its future is dropped (as a timeout or select! would).
    let committing = tokio::spawn({
        let unit = unit.clone();
        async move { unit.commit().await }
    });
    until_blocked_on_lock(&pool, pid).await;
    committing.abort();
    assert!(committing.await.unwrap_err().is_cancelled());

    // Whether the unit's work commits is now up to the server: every later call says so, none starts afresh.
    let again = unit.commit().await;
    assert!(
        matches!(&again, Err(annals::Error::UnitAborted { first, retryable: false }) if first.contains("unknown")),
        "{again:?}"
    );
    let later = stream("order-6");
    let appended = unit
        .append(&later, ExpectedVersion::NoStream, vec![event(2)])
        .await;
    assert!(
        matches!(appended, Err(annals::Error::UnitAborted { .. })),
        "{appended:?}"
    );
    let committed = unit.commit().await;
    assert!(committed.is_err(), "{committed:?}");
    gatekeeper
        .execute("SELECT pg_advisory_unlock(27)")
        .await
        .unwrap();
    assert!(
        store.load_stream(&later).await.unwrap().is_empty(),
        "nothing after the dropped commit is stored"
    );
}

#[sqlx::test(migrations = false)]
async fn an_append_dropped_in_flight_keeps_the_rest_of_the_unit_from_committing(pool: PgPool) {
    let store = store(pool.clone()).await;
    let (first, contended) = (stream("order-7"), stream("order-8"));
    let unit = Arc::new(store.unit_of_work());
    unit.append(&first, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **unit.transaction().await.unwrap())
        .await
        .unwrap();
    // Another unit holds the contended stream's lock: the unit's append to it waits on the server.
    let other = store.unit_of_work();
    other
        .append(&contended, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();
    let appending = tokio::spawn({
        let (unit, contended) = (unit.clone(), contended.clone());
        async move {
            unit.append(&contended, ExpectedVersion::NoStream, vec![event(3)])
                .await
        }
    });
    until_blocked_on_lock(&pool, pid).await;
    appending.abort();
    assert!(appending.await.unwrap_err().is_cancelled());
    // The other unit wins the stream: the dropped append could only have been refused, and nobody saw it.
    other.commit().await.unwrap();

    let committed = unit.commit().await;
    assert!(
        matches!(committed, Err(annals::Error::UnitAborted { .. })),
        "{committed:?}"
    );
    assert!(
        store.load_stream(&first).await.unwrap().is_empty(),
        "the unit's first append was not committed without its second"
    );
    assert_eq!(store.load_stream(&contended).await.unwrap().len(), 1);
}
