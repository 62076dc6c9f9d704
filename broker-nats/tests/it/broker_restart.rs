//! The NATS server stops in the middle of publishing and starts again (a private server on a free port, with
//! its own store directory): every event arrives, each stream in version order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use annals::EventStore;
use annals_nats::{FeedHeaders, Relay, RelayOptions, async_nats};
use sqlx::PgPool;

use crate::support::{NatsServer, TestStream, eventually, pg_store, write_events};

#[sqlx::test(migrations = false)]
async fn broker_restarted_mid_publish_loses_and_reorders_nothing(pool: PgPool) {
    let mut server = NatsServer::start().await;
    let store = pg_store(&pool).await;
    let feed = TestStream::new(&server.url());
    let events = write_events(&store, "account", 40, 40).await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let options = RelayOptions::new(&feed.prefix, &feed.name)
        .unwrap()
        .batch_size(100)
        .max_in_flight(32)
        .ack_timeout(Duration::from_millis(500))
        .attempts(3);
    let relay = Relay::new(store.clone(), pool.clone(), client, options).unwrap();
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
    eventually(
        "publishing to be under way",
        Duration::from_secs(60),
        || async { feed.count().await >= 200 },
    )
    .await;
    server.stop();
    let at_stop = relay.status().await.unwrap();
    assert!(
        at_stop.checkpoint < store.head().await.unwrap(),
        "the relay finished before the broker stopped"
    );
    // The relay keeps trying while the broker is away; then the broker comes back on the same store.
    server.restart().await;
    let head = store.head().await.unwrap();
    eventually(
        "the relay to finish after the restart",
        Duration::from_secs(120),
        || async { relay.status().await.is_ok_and(|s| s.checkpoint == head) },
    )
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let messages = feed.messages().await;
    let mut ids = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for m in &messages {
        let h = FeedHeaders::parse(Some(&m.headers)).unwrap();
        assert!(ids.insert(h.event_id), "event {} stored twice", h.event_id);
        let v = last.entry(h.stream_id.to_string()).or_insert(0);
        assert_eq!(
            h.stream_version.0,
            *v + 1,
            "stream {} out of order at sequence {}",
            h.stream_id,
            m.sequence
        );
        *v = h.stream_version.0;
    }
    assert_eq!(ids.len(), events, "every event arrived");
}
