//! The relay under faults between it and NATS or PostgreSQL (`annals-test-support`'s `FaultProxy`): no database
//! transaction waits on the broker, and two relays never publish at the same time when a lease expires under the
//! one publishing.

use std::time::{Duration, Instant};

use annals::EventStore;
use annals_nats::{Relay, RelayOptions, async_nats};
use annals_test_support::FaultProxy;
use sqlx::PgPool;

use crate::support::{
    TestStream, Wire, assert_feed_complete, eventually, pg_store, pool_via, shared_nats,
    spawn_relay, write_events,
};

/// Whether a connection of `application` has a transaction open for longer than `limit`.
async fn long_transactions(pool: &PgPool, application: &str, limit: Duration) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1 AND xact_start < clock_timestamp() - make_interval(secs => $2)",
    )
    .bind(application)
    .bind(limit.as_secs_f64())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn acks_held_past_the_lease_keep_no_transaction_open_and_lose_nothing(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let nats = FaultProxy::start(shared_nats().parse::<std::net::SocketAddr>().unwrap())
        .await
        .unwrap();
    let ttl = Duration::from_secs(3);
    let relay_pool = pool_via(&pool, None, "relay_t").await;
    let client = async_nats::connect(nats.addr().to_string()).await.unwrap();
    let options = RelayOptions::new(&feed.prefix, &feed.name)
        .unwrap()
        .lease_ttl(ttl)
        .ack_timeout(Duration::from_millis(500))
        .attempts(3);
    let relay = Relay::new(store.clone(), relay_pool, client, options).unwrap();
    let (stop, running) = spawn_relay(&relay);
    let mut total = write_events(&store, "account", 4, 5).await;
    eventually(
        "the first events to arrive",
        Duration::from_secs(60),
        || async { feed.count().await >= total as u64 },
    )
    .await;

    // The broker's answers stop coming for twice the lease while events keep arriving.
    nats.black_hole();
    total += write_events(&store, "account", 4, 50).await;
    let held = Instant::now();
    while held.elapsed() < ttl * 2 {
        assert_eq!(
            long_transactions(&pool, "relay_t", ttl / 2).await,
            0,
            "a relay transaction stayed open while the broker did not answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nats.restore();
    let head = store.head().await.unwrap();
    eventually(
        "the relay to publish everything",
        Duration::from_secs(60),
        || async { relay.status().await.is_ok_and(|s| s.checkpoint == head) },
    )
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_feed_complete(&feed, total).await;
}

#[sqlx::test(migrations = false)]
async fn a_lease_expiring_under_the_publisher_never_lets_two_relays_publish_at_once(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let wire = Wire::watch(&feed).await;
    let ttl = Duration::from_secs(2);
    let options = |instance: &str| {
        RelayOptions::new(&feed.prefix, &feed.name)
            .unwrap()
            .lease_ttl(ttl)
            .instance(instance)
    };
    // The first relay reaches PostgreSQL through a proxy that will stop answering, and NATS through one that
    // adds latency (so a hot stream takes a while to publish).
    let database = FaultProxy::start("127.0.0.1:5432".parse::<std::net::SocketAddr>().unwrap())
        .await
        .unwrap();
    let nats = FaultProxy::start(shared_nats().parse::<std::net::SocketAddr>().unwrap())
        .await
        .unwrap();
    nats.delay(Duration::from_millis(10));
    let first_pool = pool_via(&pool, Some(database.port()), "relay_a").await;
    let first_client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX_A")
        .connect(nats.addr().to_string())
        .await
        .unwrap();
    let first_store = pg_store(&first_pool).await;
    let first = Relay::new(first_store, first_pool, first_client, options("first")).unwrap();
    let (_stop_first, first_running) = spawn_relay(&first);
    let total = write_events(&store, "hot", 1, 400).await;
    eventually(
        "the first relay to publish",
        Duration::from_secs(60),
        || async { wire.sent_by("_INBOX_A") > 0 },
    )
    .await;

    let second_pool = pool_via(&pool, None, "relay_b").await;
    let second_client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX_B")
        .connect(shared_nats())
        .await
        .unwrap();
    let second = Relay::new(store.clone(), second_pool, second_client, options("second")).unwrap();
    let (stop_second, second_running) = spawn_relay(&second);
    // The first relay's database stops answering: its lease expires while it may still be publishing.
    database.black_hole();
    let head = store.head().await.unwrap();
    eventually(
        "the second relay to publish everything",
        Duration::from_secs(60),
        || async { second.status().await.is_ok_and(|s| s.checkpoint == head) },
    )
    .await;
    let senders = wire.senders();
    let handover = senders
        .iter()
        .position(|s| s == "_INBOX_B")
        .expect("the second relay published");
    let late = senders[handover..]
        .iter()
        .filter(|s| *s == "_INBOX_A")
        .count();
    assert_eq!(
        late, 0,
        "the first relay published {late} messages after the second one had started"
    );
    stop_second.send(()).unwrap();
    second_running.await.unwrap().unwrap();
    first_running.abort();
    database.restore();
    assert_feed_complete(&feed, total).await;
}
