//! The inbox's batches and its per-stream order fence: a message whose handler fails permanently does not take
//! its batch down, a message held by a dead instance keeps its stream's later events back, and several
//! instances sharing one durable consumer apply each stream in order.

use std::time::Duration;

use annals_nats::async_nats::jetstream::consumer::pull::Config as PullConfig;
use annals_nats::async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use annals_nats::async_nats::{self, jetstream};
use annals_nats::{Inbox, InboxOptions};
use futures::StreamExt as _;
use sqlx::PgPool;

use crate::support::{
    Effects, TestStream, effect_counts, eventually, parked_reasons, pg_store, publish_all,
    shared_nats, spawn_inbox, write_events,
};

/// Each stream's applied versions in the order they were applied, by stream.
async fn applied_orders(pool: &PgPool, schema: &str) -> Vec<(String, Vec<i64>)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT stream, array_agg(version ORDER BY seq) FROM {schema}.effects GROUP BY stream ORDER BY stream"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

fn assert_in_stream_order(orders: &[(String, Vec<i64>)]) {
    for (stream, versions) in orders {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "stream {stream} applied out of order: {versions:?}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn a_message_whose_handler_fails_does_not_take_its_batch_down(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    // Amount 3 is each stream's third event: four of the twenty fail every time.
    let events = write_events(&store, "account", 4, 5).await as i64;
    let relay = publish_all(&pool, &store, &feed).await;
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let mut effects = Effects::new(&pool, "svc").await;
    effects.fail_amount = Some(3);
    effects.failures = u32::MAX;
    let calls = effects.calls.clone();
    let options = InboxOptions::default()
        .schema("inbox_t")
        .batch_size(64)
        .attempts(2)
        .backoff(Duration::from_millis(5));
    let inbox = Inbox::new(pool.clone(), client, &feed.name, "svc", effects, options).unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually(
        "the others applied and the failing ones parked",
        Duration::from_secs(30),
        || async {
            effect_counts(&pool, "svc").await.0 >= events - 4
                && parked_reasons(&pool, "svc").await.len() >= 4
        },
    )
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(effect_counts(&pool, "svc").await, (events - 4, events - 4));
    let reasons = parked_reasons(&pool, "svc").await;
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("failed 2 time(s)")),
        "{reasons:?}"
    );
    let orders = applied_orders(&pool, "svc").await;
    assert_in_stream_order(&orders);
    assert!(orders.iter().all(|(_, v)| v == &[1, 2, 4, 5]), "{orders:?}");
    // Twenty handler calls that succeeded once each, plus two per failing event.
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 16 + 4 * 2);
    drop(relay);
}

/// The consumer configuration the inbox creates with `ack_wait` 1 s and `max_ack_pending` 8.
fn consumer_config(name: &str) -> PullConfig {
    PullConfig {
        durable_name: Some(name.to_owned()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: Duration::from_secs(1),
        max_ack_pending: 8,
        ..PullConfig::default()
    }
}

#[sqlx::test(migrations = false)]
async fn a_message_held_by_a_dead_instance_holds_back_its_stream(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let events = write_events(&store, "account", 1, 4).await as i64;
    let relay = publish_all(&pool, &store, &feed).await;
    let client = async_nats::connect(shared_nats()).await.unwrap();
    // A dead instance: it pulled the stream's first event and never acknowledged it.
    let js = jetstream::new(client.clone());
    let consumer = js
        .get_stream(&feed.name)
        .await
        .unwrap()
        .get_or_create_consumer("svc", consumer_config("svc"))
        .await
        .unwrap();
    let mut taken = consumer.fetch().max_messages(1).messages().await.unwrap();
    let first = taken.next().await.unwrap().unwrap();
    assert_eq!(first.info().unwrap().stream_sequence, 1);
    drop(taken);

    let effects = Effects::new(&pool, "svc").await;
    let options = InboxOptions::default()
        .schema("inbox_t")
        .ack_wait(Duration::from_secs(1))
        .max_ack_pending(8);
    let inbox = Inbox::new(pool.clone(), client, &feed.name, "svc", effects, options).unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually("every event applied", Duration::from_secs(30), || async {
        effect_counts(&pool, "svc").await.0 >= events
    })
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(effect_counts(&pool, "svc").await, (events, events));
    let orders = applied_orders(&pool, "svc").await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].1, vec![1, 2, 3, 4], "applied in stream order");
    drop(relay);
}

#[sqlx::test(migrations = false)]
async fn instances_sharing_a_durable_consumer_apply_each_stream_in_order(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let events = write_events(&store, "account", 6, 20).await as i64;
    let relay = publish_all(&pool, &store, &feed).await;
    let mut running = Vec::new();
    let effects_schema = Effects::new(&pool, "svc").await;
    drop(effects_schema);
    for _ in 0..3 {
        let client = async_nats::connect(shared_nats()).await.unwrap();
        let effects = Effects::new(&pool, "svc").await;
        let options = InboxOptions::default()
            .schema("inbox_t")
            .batch_size(4)
            .max_ack_pending(16);
        let inbox = Inbox::new(pool.clone(), client, &feed.name, "svc", effects, options).unwrap();
        running.push(spawn_inbox(inbox));
    }
    eventually("every event applied", Duration::from_secs(60), || async {
        effect_counts(&pool, "svc").await.0 >= events
    })
    .await;
    for (stop, done) in running {
        stop.send(()).unwrap();
        done.await.unwrap().unwrap();
    }
    assert_eq!(effect_counts(&pool, "svc").await, (events, events));
    assert_in_stream_order(&applied_orders(&pool, "svc").await);
    drop(relay);
}
