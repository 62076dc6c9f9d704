//! Every committed event arrives once per event id, each stream in version order, with every header and the
//! stored payload byte for byte; rolled-back appends never arrive.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
use annals_nats::{FeedHeaders, Relay, RelayOptions, async_nats};
use sqlx::PgPool;

use crate::support::{TestStream, eventually, pg_store, shared_nats, write_events};

#[sqlx::test(migrations = false)]
async fn every_committed_event_arrives_once_in_stream_order_with_its_headers(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let mut committed = write_events(&store, "account", 12, 15).await;
    // Stream ids that would change a subject's meaning unescaped, and metadata that needs encoding.
    for id in ["account-a.b", "odd *>", "spaced out-x y"] {
        let stream = StreamId::new(id).unwrap();
        let meta = Metadata::correlated("corr 1\u{e9}%").with_causation_id("cause-7");
        for n in 0..3 {
            let event = NewEvent::new(
                "Deposited",
                serde_json::json!({"amount": n, "text": "ünï \"q\""}),
            )
            .with_metadata(meta.clone());
            store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
            committed += 1;
        }
    }
    // A rolled-back append: its events must never arrive.
    let unit = store.unit_of_work();
    let ghost = NewEvent::new("Deposited", serde_json::json!({"amount": 999}));
    let ghost_id = ghost.event_id;
    unit.append(
        &StreamId::new("account-0").unwrap(),
        ExpectedVersion::Any,
        vec![ghost],
    )
    .await
    .unwrap();
    unit.rollback().await;
    committed += write_events(&store, "account", 2, 5).await; // after the rollback: positions past its gap

    let client = async_nats::connect(shared_nats()).await.unwrap();
    let options = RelayOptions::new(&feed.prefix, &feed.name)
        .unwrap()
        .batch_size(40)
        .max_in_flight(16);
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
        "every event to be published",
        Duration::from_secs(60),
        || async { feed.count().await >= committed as u64 },
    )
    .await;
    // The last batch's checkpoint commits just after the broker acknowledged it: wait for that commit too.
    let head = store.head().await.unwrap();
    eventually(
        "the checkpoint to reach the head",
        Duration::from_secs(30),
        || async { relay.status().await.unwrap().checkpoint == head },
    )
    .await;
    let status = relay.status().await.unwrap();
    assert_eq!(status.checkpoint, head);
    assert_eq!((status.lag, status.seconds_behind), (0, 0.0));
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let stored: HashMap<_, _> = store
        .read_all(Position::START, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_id, e))
        .collect();
    assert_eq!(stored.len(), committed);
    let messages = feed.messages().await;
    assert_eq!(messages.len(), committed, "once per event id");
    let mut seen = HashSet::new();
    let mut last_version: HashMap<String, u64> = HashMap::new();
    for m in &messages {
        let h = FeedHeaders::parse(Some(&m.headers)).unwrap();
        assert!(
            seen.insert(h.event_id),
            "event {} arrived twice",
            h.event_id
        );
        assert_ne!(h.event_id, ghost_id, "a rolled-back event arrived");
        let e = &stored[&h.event_id];
        assert_eq!(
            m.headers.get("Nats-Msg-Id").unwrap().as_str(),
            e.event_id.to_string()
        );
        assert_eq!(
            (
                &h.event_type,
                h.schema_version,
                &h.stream_id,
                h.stream_version,
                h.position
            ),
            (
                &e.event_type,
                e.schema_version,
                &e.stream_id,
                e.stream_version,
                e.position
            )
        );
        assert_eq!(
            h.recorded_at.timestamp_micros(),
            e.recorded_at.timestamp_micros()
        );
        assert_eq!(h.correlation_id, e.metadata.correlation_id);
        assert_eq!(h.causation_id, e.metadata.causation_id);
        assert_eq!(
            &m.payload[..],
            e.payload.as_str().as_bytes(),
            "payload byte for byte"
        );
        assert_eq!(
            m.subject.as_str(),
            annals_nats::Subjects::new(&feed.prefix)
                .unwrap()
                .subject(&e.stream_id)
        );
        let last = last_version.entry(e.stream_id.to_string()).or_insert(0);
        assert_eq!(
            h.stream_version.0,
            *last + 1,
            "stream {} out of order",
            e.stream_id
        );
        *last = h.stream_version.0;
    }
    // Each odd stream id stayed one subject token.
    let subjects: HashSet<_> = messages.iter().map(|m| m.subject.to_string()).collect();
    assert!(
        subjects
            .iter()
            .all(|s| s.split('.').count() == feed.prefix.split('.').count() + 2)
    );
}
