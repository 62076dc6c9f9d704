//! Commands whose futures are dropped mid-await (a `timeout` or `select!` around them) keep nothing that makes a
//! later command wrong: the stream's local turn is given back, and a cached state is still decided on only where
//! the store would check it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{
    AppendResult, CachedRepository, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    Repository, StreamId, StreamLocks, StreamVersion, async_trait,
};
use annals_memory::MemoryStore;

use crate::domain::{Item, ItemCommand};

/// A memory store whose next append, once `stall` is set, commits and then never answers: the caller is left
/// waiting with its append stored, and gives up on it.
#[derive(Clone, Default)]
struct Stalling {
    inner: MemoryStore,
    stall: Arc<AtomicBool>,
}

#[async_trait]
impl EventStore for Stalling {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        let appended = self.inner.append(stream, expected, events).await?;
        if self.stall.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(appended)
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

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.inner.wait_for_events(after, timeout).await
    }
}

/// Runs `command` until its first await that does not complete, then drops it there, as a `select!` against a
/// branch that is ready does.
async fn dropped_mid_await<F: std::future::Future>(command: F) {
    tokio::select! {
        biased;
        _ = command => panic!("the command was expected to stall"),
        () = std::future::ready(()) => {}
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).unwrap()
}

#[tokio::test]
async fn a_command_dropped_mid_append_gives_back_the_streams_turn() {
    let store = Stalling::default();
    let items = Repository::<Item, _>::new(store.clone()).with_stream_locks(StreamLocks::default());
    let id = stream("item-1");
    items
        .execute(&id, &ItemCommand::Register { sku: "sku".into() })
        .await
        .unwrap();
    store.stall.store(true, Ordering::SeqCst);
    dropped_mid_await(items.execute(&id, &ItemCommand::Restock { quantity: 4 })).await;
    // The next command on the stream is not held up by the dropped one, and decides on what was stored.
    let done = items
        .execute(&id, &ItemCommand::Ship { quantity: 4 })
        .await
        .unwrap();
    assert_eq!((done.version, done.state.quantity()), (StreamVersion(3), 0));
}

#[tokio::test]
async fn a_cached_command_dropped_after_its_append_committed_leaves_no_wrong_decision() {
    let store = Stalling::default();
    let items = CachedRepository::new(Repository::<Item, _>::new(store.clone()), 10);
    let id = stream("item-2");
    items
        .execute(&id, &ItemCommand::Register { sku: "sku".into() })
        .await
        .unwrap();
    // The restock is stored, but the cache never learns of it: its entry still says 0 in stock.
    store.stall.store(true, Ordering::SeqCst);
    dropped_mid_await(items.execute(&id, &ItemCommand::Restock { quantity: 4 })).await;
    let shipped = items
        .execute(&id, &ItemCommand::Ship { quantity: 3 })
        .await
        .unwrap();
    assert_eq!(
        (shipped.version, shipped.state.quantity()),
        (StreamVersion(3), 1)
    );
    let restocked = items
        .execute(&id, &ItemCommand::Restock { quantity: 1 })
        .await
        .unwrap();
    assert_eq!(
        (restocked.version, restocked.state.quantity()),
        (StreamVersion(4), 2)
    );
}
