//! Appending inside the caller's transaction: events and the caller's own rows commit or roll back together.

use annals::{EventStore, ExpectedVersion, Position, StreamVersion};
use sqlx::{Executor, PgPool};

use crate::support::{event, store, stream};

async fn outbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM public.outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn events_and_the_callers_rows_commit_or_roll_back_together(pool: PgPool) {
    let store = store(pool.clone()).await;
    pool.execute("CREATE TABLE public.outbox (body text NOT NULL)")
        .await
        .unwrap();
    let id = stream("order-1");

    let mut tx = pool.begin().await.unwrap();
    store
        .append_in(&mut tx, &id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    tx.execute("INSERT INTO public.outbox VALUES ('placed')")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.load_stream(&id).await.unwrap().is_empty());
    assert_eq!(outbox_rows(&pool).await, 0);

    let mut tx = pool.begin().await.unwrap();
    let done = store
        .append_in(
            &mut tx,
            &id,
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    tx.execute("INSERT INTO public.outbox VALUES ('placed')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(done.stream_version, StreamVersion(2));
    assert_eq!(store.load_stream(&id).await.unwrap().len(), 2);
    assert_eq!(outbox_rows(&pool).await, 1);
    assert_eq!(store.head().await.unwrap(), done.last_position);
}

#[sqlx::test(migrations = false)]
async fn a_conflict_or_a_replay_leaves_the_transaction_usable(pool: PgPool) {
    let store = store(pool.clone()).await;
    pool.execute("CREATE TABLE public.outbox (body text NOT NULL)")
        .await
        .unwrap();
    let id = stream("order-2");
    let first = vec![event(1)];
    let original = store
        .append(&id, ExpectedVersion::NoStream, first.clone())
        .await
        .unwrap();

    let mut tx = pool.begin().await.unwrap();
    let conflict = store
        .append_in(&mut tx, &id, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap_err();
    assert!(conflict.is_conflict(), "{conflict:?}");
    // A retried append with Any finds the stored events before inserting anything.
    let replay = store
        .append_in(&mut tx, &id, ExpectedVersion::Any, first)
        .await
        .unwrap();
    assert_eq!(replay, original);
    tx.execute("INSERT INTO public.outbox VALUES ('still fine')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outbox_rows(&pool).await, 1);
    assert_eq!(store.load_stream(&id).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn several_appends_in_one_transaction_are_read_in_order_after_commit(pool: PgPool) {
    let store = store(pool.clone()).await;
    let mut tx = pool.begin().await.unwrap();
    for (n, name) in ["first", "second", "first"].iter().enumerate() {
        store
            .append_in(
                &mut tx,
                &stream(name),
                ExpectedVersion::Any,
                vec![event(n as u64)],
            )
            .await
            .unwrap();
    }
    assert!(
        store
            .read_all(Position::START, 10)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();
    let all = store.read_all(Position::START, 10).await.unwrap();
    let ns: Vec<_> = all
        .iter()
        .map(|e| e.payload.to_value().unwrap()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [0, 1, 2]);
}
