//! A 60 s outage between the relay and NATS (longer than any retry budget of a page), then the network comes
//! back: the relay never stops for good, shows the retry in its status, and resumes by itself; every event
//! arrives once, each stream in order. The suite's one long test (about 80 s).

use std::time::{Duration, Instant};

use annals::EventStore;
use annals_nats::{Relay, RelayOptions, async_nats};
use annals_test_support::FaultProxy;
use sqlx::PgPool;

use crate::support::{
    TestStream, assert_feed_complete, eventually, pg_store, shared_nats, spawn_relay, write_events,
};

#[sqlx::test(migrations = false)]
async fn a_sixty_second_broker_outage_pauses_the_feed_and_it_resumes_by_itself(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let nats = FaultProxy::start(shared_nats().parse::<std::net::SocketAddr>().unwrap())
        .await
        .unwrap();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.addr().to_string())
        .await
        .unwrap();
    let options = RelayOptions::new(&feed.prefix, &feed.name)
        .unwrap()
        .lease_ttl(Duration::from_secs(3))
        .ack_timeout(Duration::from_millis(500))
        .attempts(3);
    let relay = Relay::new(store.clone(), pool.clone(), client, options).unwrap();
    let (stop, running) = spawn_relay(&relay);
    let mut total = write_events(&store, "account", 5, 4).await;
    let head = store.head().await.unwrap();
    eventually("the feed to be live", Duration::from_secs(60), || async {
        relay.status().await.is_ok_and(|s| s.checkpoint == head)
    })
    .await;

    nats.outage();
    let outage = Instant::now();
    total += write_events(&store, "account", 5, 20).await;
    eventually(
        "the relay to report its retry",
        Duration::from_secs(60),
        || async { relay.status().await.is_ok_and(|s| s.retrying.is_some()) },
    )
    .await;
    let during = relay.status().await.unwrap();
    assert!(
        during.checkpoint < store.head().await.unwrap(),
        "{during:?}"
    );
    eprintln!("during the outage: {during:?}");
    // The outage lasts 60 s, however the relay retries meanwhile; it must still be running at the end.
    while outage.elapsed() < Duration::from_secs(60) {
        assert!(
            !running.is_finished(),
            "the relay stopped during the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    nats.restore();
    total += write_events(&store, "account", 5, 2).await;
    let head = store.head().await.unwrap();
    eventually("the feed to resume", Duration::from_secs(90), || async {
        relay.status().await.is_ok_and(|s| s.checkpoint == head)
    })
    .await;
    eventually("the retry to clear", Duration::from_secs(30), || async {
        relay.status().await.is_ok_and(|s| s.retrying.is_none())
    })
    .await;
    eprintln!("resumed {:?} after the outage began", outage.elapsed());
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_feed_complete(&feed, total).await;
}
