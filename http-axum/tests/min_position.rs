//! `?min_position`: a position the store never handed out is refused at once (no wait), one it handed out is
//! waited for; on the memory store and on PostgreSQL (the position sequence's last value).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use annals::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, async_trait,
};
use annals_axum::MinPosition;

/// A store that counts how often it is waited on, forwarding everything (the allocated head included).
struct Counted<S> {
    inner: S,
    waits: AtomicUsize,
}

#[async_trait]
impl<S: EventStore> EventStore for Counted<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.inner.head().await
    }

    async fn allocated_head(&self) -> annals::Result<Position> {
        self.inner.allocated_head().await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.waits.fetch_add(1, Ordering::SeqCst);
        self.inner.wait_for_events(after, timeout).await
    }
}

fn counted<S>(inner: S) -> Counted<S> {
    Counted {
        inner,
        waits: AtomicUsize::new(0),
    }
}

fn event() -> Vec<NewEvent> {
    vec![NewEvent::new("ThingHappened", serde_json::json!({}))]
}

/// Asserts `wanted` is refused with `422 position_beyond_head` without waiting on the store.
async fn refused_at_once<S: EventStore>(store: &Counted<S>, wanted: Position) {
    let refused = MinPosition(Some(wanted))
        .reachable_within(store, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.status.as_u16(), refused.code),
        (422, "position_beyond_head")
    );
    assert_eq!(
        store.waits.load(Ordering::SeqCst),
        0,
        "a position never handed out was waited for"
    );
}

#[tokio::test]
async fn memory_refuses_a_position_never_handed_out_without_waiting() {
    let store = counted(annals_memory::MemoryStore::new());
    let stream = StreamId::new("account-1").unwrap();
    let last = store
        .append(&stream, ExpectedVersion::NoStream, event())
        .await
        .unwrap()
        .last_position;
    assert_eq!(store.allocated_head().await.unwrap(), last);
    MinPosition(Some(last)).reachable(&store).await.unwrap();
    refused_at_once(&store, Position(last.get() + 1)).await;
}

#[sqlx::test(migrations = false)]
async fn postgres_refuses_a_position_never_handed_out_and_waits_for_one_in_flight(
    pool: sqlx::PgPool,
) {
    let pg = annals_postgres::PostgresStore::from_pool(pool.clone());
    pg.migrate().await.unwrap();
    let store = std::sync::Arc::new(counted(pg.clone()));
    // An append that took its position and has not committed: the head stays below it and what follows.
    let mut open = pool.begin().await.unwrap();
    let in_flight = pg
        .append_in(
            &mut open,
            &StreamId::new("account-1").unwrap(),
            ExpectedVersion::NoStream,
            event(),
        )
        .await
        .unwrap()
        .last_position;
    let written = store
        .append(
            &StreamId::new("account-2").unwrap(),
            ExpectedVersion::NoStream,
            event(),
        )
        .await
        .unwrap()
        .last_position;
    assert!(in_flight < written);
    assert!(store.head().await.unwrap() < in_flight);
    assert_eq!(store.allocated_head().await.unwrap(), written);
    refused_at_once(&store, Position(written.get() + 1)).await;

    let reader = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move {
            MinPosition(Some(written))
                .reachable_within(&*store, Duration::from_secs(60))
                .await
        }
    });
    open.commit().await.unwrap();
    assert_eq!(
        reader.await.unwrap().unwrap(),
        MinPosition(Some(written)),
        "a position a write answered with is waited for"
    );
}
