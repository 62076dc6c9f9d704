//! Following live while 8 writers append concurrently counts every event exactly once (end to end over the
//! store's gap safety).

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_projections::{ProjectionOptions, Projections};
use serde_json::json;
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

async fn eight_writers(projections: Projections, store: impl EventStore + Clone + 'static) {
    let (stop, handle) = spawn_run(&projections);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = store.clone();
        writers.spawn(async move {
            for i in 0..40u64 {
                let id = StreamId::new(format!("w{w}-{}", i % 4)).unwrap();
                // Mix single and multi-event appends.
                let events = (0..(1 + i % 3))
                    .map(|_| NewEvent::new("Deposited", json!({"amount": 1})))
                    .collect();
                store
                    .append(&id, ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    eventually(
        "the projection to catch up",
        Duration::from_secs(60),
        || caught_up(&projections, &store),
    )
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();

    let reader = projections.documents("tallies").unwrap();
    let tallies = reader.list::<Tally>("tally", "").await.unwrap();
    assert_eq!(tallies.len(), 32);
    let total: u64 = tallies.iter().map(|(_, t)| t.count).sum();
    // Each writer appends 40 times 1, 2 or 3 events: 14*1 + 13*2 + 13*3 = 79 events.
    assert_eq!(total, 8 * 79);
    assert_eq!(
        reader
            .list::<serde_json::Value>("seen", "")
            .await
            .unwrap()
            .len(),
        8 * 79
    );
    assert_eq!(
        untagged(snapshot(&projections).await),
        untagged(from_scratch(store).await)
    );
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_live_follow_under_8_writers_counts_every_event_once(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool)
        .with_options(Tallies::new(), ProjectionOptions::new().batch_size(16));
    eight_writers(projections, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_live_follow_under_8_writers_counts_every_event_once() {
    let store = memory_store();
    let projections = Projections::memory(store.clone())
        .with_options(Tallies::new(), ProjectionOptions::new().batch_size(16));
    eight_writers(projections, store).await;
}
