//! The relay on the memory projections backend (its lease and checkpoint in process memory) over a memory
//! store: the relay needs nothing of PostgreSQL.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_memory::MemoryStore;
use annals_nats::{Relay, RelayOptions, async_nats};
use annals_projections::Projections;

use crate::support::{TestStream, assert_feed_complete, eventually, shared_nats, spawn_relay};

#[tokio::test]
async fn the_relay_runs_on_the_memory_backend() {
    let store = MemoryStore::new();
    let feed = TestStream::new(shared_nats());
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let options = RelayOptions::new(&feed.prefix, &feed.name)
        .unwrap()
        .lease_ttl(Duration::from_secs(2));
    let relay = Relay::on(
        store.clone(),
        Projections::memory(store.clone()),
        client,
        options,
    );
    let (stop, running) = spawn_relay(&relay);
    let mut total = 0;
    for n in 0..10 {
        for s in 0..3 {
            let stream = StreamId::new(format!("account-{s}")).unwrap();
            let event = NewEvent::new("Deposited", serde_json::json!({"amount": n + 1, "n": n}));
            store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
            total += 1;
        }
    }
    let head = store.head().await.unwrap();
    eventually(
        "the relay to publish everything",
        Duration::from_secs(60),
        || async { relay.status().await.is_ok_and(|s| s.checkpoint == head) },
    )
    .await;
    let status = relay.status().await.unwrap();
    assert_eq!(status.published, total as u64, "{status:?}");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_feed_complete(&feed, total).await;
}
