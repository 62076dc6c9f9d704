//! The inbox under database faults in the handler: transient errors are retried until they pass and never
//! parked; a transaction the handler left aborted is never acknowledged as applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use annals_nats::{Delivery, Handler, HandlerError, Inbox, InboxOptions, async_nats};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::support::{
    Effects, TestEvent, TestStream, effect_counts, eventually, inbox_rows, parked_reasons,
    pg_store, publish_all, shared_nats, spawn_inbox, write_events,
};

/// A handler whose update waits at most 50 ms for its row lock (`lock_timeout`: SQLSTATE 55P03), then writes
/// its effect; counts its tries.
struct Locking {
    effects: Effects,
    tries: Arc<AtomicU32>,
}

#[annals_nats::async_trait]
impl Handler for Locking {
    type Event = TestEvent;

    async fn handle(
        &self,
        delivery: &Delivery<TestEvent>,
        conn: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        sqlx::query("SET LOCAL lock_timeout = '50ms'")
            .execute(&mut *conn)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {}.hot SET n = n + 1 WHERE id = 1",
            self.effects.schema
        )))
        .execute(&mut *conn)
        .await?;
        self.effects.handle(delivery, conn).await
    }
}

#[sqlx::test(migrations = false)]
async fn a_lock_timeout_in_the_handler_is_retried_until_the_lock_is_released_and_never_parked(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    write_events(&store, "account", 1, 1).await;
    let relay = publish_all(&pool, &store, &feed).await;
    let effects = Effects::new(&pool, "locked").await;
    sqlx::raw_sql(
        "CREATE TABLE locked.hot (id int PRIMARY KEY, n int NOT NULL); INSERT INTO locked.hot VALUES (1, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The test holds the row the handler updates.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT n FROM locked.hot WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let tries = Arc::new(AtomicU32::new(0));
    let handler = Locking {
        effects,
        tries: Arc::clone(&tries),
    };
    let attempts = 3;
    let options = InboxOptions::default()
        .schema("inbox_t")
        .attempts(attempts)
        .backoff(Duration::from_millis(20));
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let inbox = Inbox::new(pool.clone(), client, &feed.name, "locked", handler, options).unwrap();
    let (stop, done) = spawn_inbox(inbox);
    // Held for twice the attempts' worth of tries (or until the inbox gives up on the message).
    eventually(
        "the handler to time out on the lock again and again",
        Duration::from_secs(60),
        || async {
            tries.load(Ordering::SeqCst) >= 2 * attempts
                || !parked_reasons(&pool, "locked").await.is_empty()
        },
    )
    .await;
    assert_eq!(
        parked_reasons(&pool, "locked").await,
        Vec::<String>::new(),
        "a lock timeout is transient: the message must never be parked"
    );
    holder.commit().await.unwrap();
    eventually(
        "the event applied once the lock is released",
        Duration::from_secs(60),
        || async { effect_counts(&pool, "locked").await.0 >= 1 },
    )
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(effect_counts(&pool, "locked").await, (1, 1));
    let n: i32 = sqlx::query_scalar("SELECT n FROM locked.hot WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "applied once");
    assert_eq!(inbox_rows(&pool).await, 1);
    assert_eq!(parked_reasons(&pool, "locked").await, Vec::<String>::new());
    drop(relay);
}

/// A handler that writes its effect, then swallows a failed statement (a division by zero) and returns `Ok`:
/// its transaction is aborted, and PostgreSQL answers the `COMMIT` that follows with a `ROLLBACK`.
struct Swallowing {
    effects: Effects,
}

#[annals_nats::async_trait]
impl Handler for Swallowing {
    type Event = TestEvent;

    async fn handle(
        &self,
        delivery: &Delivery<TestEvent>,
        conn: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        self.effects.handle(delivery, &mut *conn).await?;
        let _ignored = sqlx::query("SELECT 1 / 0").execute(&mut *conn).await;
        Ok(())
    }
}

#[sqlx::test(migrations = false)]
async fn a_handler_that_swallows_a_sql_error_is_never_acknowledged_as_applied(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    write_events(&store, "account", 1, 1).await;
    let relay = publish_all(&pool, &store, &feed).await;
    let effects = Effects::new(&pool, "swallow").await;
    let calls = Arc::clone(&effects.calls);
    let attempts = 3;
    let options = InboxOptions::default()
        .schema("inbox_t")
        .attempts(attempts)
        .backoff(Duration::from_millis(20));
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let handler = Swallowing { effects };
    let inbox = Inbox::new(
        pool.clone(),
        client,
        &feed.name,
        "swallow",
        handler,
        options,
    )
    .unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually(
        "the message parked, or acknowledged",
        Duration::from_secs(60),
        || async {
            if !parked_reasons(&pool, "swallow").await.is_empty() {
                return true;
            }
            let Ok(stream) = js.get_stream(&feed.name).await else {
                return false;
            };
            stream.consumer_info("swallow").await.is_ok_and(|i| {
                i.delivered.stream_sequence >= 1 && i.num_pending == 0 && i.num_ack_pending == 0
            })
        },
    )
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(
        effect_counts(&pool, "swallow").await,
        (0, 0),
        "nothing half-done"
    );
    assert_eq!(inbox_rows(&pool).await, 0, "nothing half-done");
    let parked = parked_reasons(&pool, "swallow").await;
    assert_eq!(
        parked.len(),
        1,
        "the message was acknowledged although its transaction rolled back: {parked:?}"
    );
    assert!(parked[0].contains("aborted"), "{}", parked[0]);
    assert_eq!(calls.load(Ordering::SeqCst), attempts);
    drop(relay);
}
