//! A relay SIGKILLed after the broker acknowledged a batch but before its checkpoint committed: the next relay
//! publishes the batch again, and the consumer's effects show no duplicate.

use std::time::Duration;

use annals::EventStore;
use annals_nats::{Inbox, InboxOptions, Relay, RelayOptions, async_nats};
use sqlx::PgPool;

use crate::support::{
    Effects, RelayProcess, TestStream, effect_counts, eventually, pg_store, shared_nats,
    spawn_inbox, write_events,
};

async fn checkpoint(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(checkpoint), 0) FROM annals_projections.slots WHERE name = 'nats_relay'")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[sqlx::test(migrations = false)]
async fn relay_killed_after_publishing_before_checkpointing_duplicates_no_effect(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let mut child = RelayProcess::spawn(&pool, &feed, "doomed", &["--batch-size", "500"]);
    eventually(
        "the relay to set up its tables",
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT to_regclass('rm_nats_relay.documents') IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(false)
        },
    )
    .await;
    // Hold writes to the relay's bookkeeping: its checkpoint transaction blocks on them after every
    // acknowledgement came in and before the checkpoint commits.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rm_nats_relay.documents IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let events = write_events(&store, "account", 10, 10).await;
    eventually("the relay to publish and wait to checkpoint", Duration::from_secs(60), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO %documents%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        waiting > 0 && feed.count().await > 0
    })
    .await;
    let published = feed.count().await;
    child.kill();
    blocker.rollback().await.unwrap();
    assert_eq!(
        checkpoint(&pool).await,
        0,
        "the killed relay checkpointed nothing"
    );

    // A new relay starts from the old checkpoint and publishes the batch again.
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let relay = Relay::new(
        store.clone(),
        pool.clone(),
        client.clone(),
        RelayOptions::new(&feed.prefix, &feed.name)
            .unwrap()
            .lease_ttl(Duration::from_secs(2)),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let head = store.head().await.unwrap();
    eventually(
        "the new relay to catch up",
        Duration::from_secs(60),
        || async { relay.status().await.is_ok_and(|s| s.checkpoint == head) },
    )
    .await;
    let status = relay.status().await.unwrap();
    assert!(
        status.duplicates >= published,
        "the broker saw the re-published batch again: {status:?}, {published} published before the kill"
    );

    let effects = Effects::new(&pool, "consumer").await;
    let inbox = Inbox::new(
        pool.clone(),
        client,
        &feed.name,
        "effects",
        effects,
        InboxOptions::default()
            .schema("consumer_inbox")
            .max_ack_pending(64),
    )
    .unwrap();
    let (stop_inbox, inbox_done) = spawn_inbox(inbox);
    eventually(
        "the consumer to apply every event",
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM consumer_inbox.inbox")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                >= events as i64
        },
    )
    .await;
    stop_inbox.send(()).unwrap();
    inbox_done.await.unwrap().unwrap();
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        effect_counts(&pool, "consumer").await,
        (events as i64, events as i64),
        "no duplicate effect"
    );
}
