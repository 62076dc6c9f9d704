//! The write-side aggregate cache: commands on a cached stream skip the load, appends stay version-checked, a
//! stale entry (another writer appended) is evicted and the command decided again on the stream's real state,
//! and the cache stays within its bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use annals::{
    AppendResult, CachedRepository, CommandError, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, Repository, StreamId, StreamVersion, async_trait,
};
use annals_memory::MemoryStore;

use crate::domain::{Item, ItemCommand, ItemError};

/// A memory store that counts stream reads.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryStore,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl EventStore for Counting {
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
        self.reads.fetch_add(1, Ordering::SeqCst);
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

fn stream(id: &str) -> StreamId {
    StreamId::new(id).unwrap()
}

fn register() -> ItemCommand {
    ItemCommand::Register { sku: "sku".into() }
}

#[tokio::test]
async fn a_cached_aggregate_is_not_read_again() {
    let store = Counting::default();
    let items = CachedRepository::new(Repository::<Item, _>::new(store.clone()), 100);
    let id = stream("item-1");
    items.execute(&id, &register()).await.unwrap();
    let reads = store.reads.load(Ordering::SeqCst);
    for _ in 0..3 {
        items
            .execute(&id, &ItemCommand::Restock { quantity: 5 })
            .await
            .unwrap();
    }
    let done = items
        .execute(&id, &ItemCommand::Ship { quantity: 15 })
        .await
        .unwrap();
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        reads,
        "no reads once cached"
    );
    assert_eq!(done.version, StreamVersion(5));
    assert_eq!(
        done.state,
        Item::Stocked {
            sku: "sku".into(),
            quantity: 0
        }
    );
    // What the store holds is what the cache decided on.
    let loaded = items.repository().load(&id).await.unwrap();
    assert_eq!(loaded.state, done.state);
    assert_eq!(loaded.version, StreamVersion(5));
}

#[tokio::test]
async fn a_stale_entry_conflicts_is_evicted_and_the_command_is_decided_on_the_real_state() {
    let store = Counting::default();
    let items = CachedRepository::new(Repository::<Item, _>::new(store.clone()), 100);
    let other_writer = Repository::<Item, _>::new(store.clone());
    let id = stream("item-2");
    items.execute(&id, &register()).await.unwrap();
    items
        .execute(&id, &ItemCommand::Restock { quantity: 10 })
        .await
        .unwrap();
    // Behind the cache's back: 8 of the 10 are shipped.
    other_writer
        .execute(&id, &ItemCommand::Ship { quantity: 8 })
        .await
        .unwrap();
    // The cache still believes 10 are in stock; the store says 2. Shipping 5 must be refused.
    let refused = items
        .execute(&id, &ItemCommand::Ship { quantity: 5 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CommandError::Rejected(ItemError::OutOfStock {
                available: 2,
                requested: 5
            })
        ),
        "{refused:?}"
    );
    // The refusal left nothing cached: the next command loads once, and is cached again after it.
    let shipped = items
        .execute(&id, &ItemCommand::Ship { quantity: 2 })
        .await
        .unwrap();
    assert_eq!(shipped.version, StreamVersion(4));
    let reads = store.reads.load(Ordering::SeqCst);
    let restocked = items
        .execute(&id, &ItemCommand::Restock { quantity: 1 })
        .await
        .unwrap();
    assert_eq!(restocked.version, StreamVersion(5));
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        reads,
        "after the reload the entry is current again"
    );
    let stored = store
        .inner
        .read_stream(&id, StreamVersion::FIRST, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 5, "the conflicting append wrote nothing");
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let items = CachedRepository::new(Repository::<Item, _>::new(MemoryStore::new()), 2);
    for n in 0..5 {
        items
            .execute(&stream(&format!("item-{n}")), &register())
            .await
            .unwrap();
        assert!(items.cached() <= 2, "{} cached", items.cached());
    }
    assert_eq!(items.cached(), 2);
    // An evicted stream is loaded again, and its state is still right.
    let again = items
        .execute(&stream("item-0"), &ItemCommand::Restock { quantity: 1 })
        .await
        .unwrap();
    assert_eq!(again.version, StreamVersion(2));
}

/// Two processes on one store: P1 decides on its cache, P2 (a plain repository) appends behind its back.
async fn restocked_behind_the_cache(
    id: &StreamId,
) -> (CachedRepository<Item, MemoryStore>, MemoryStore) {
    let store = MemoryStore::new();
    let p1 = CachedRepository::new(Repository::<Item, _>::new(store.clone()), 100);
    let p2 = Repository::<Item, _>::new(store.clone());
    p1.execute(id, &register()).await.unwrap();
    p1.execute(id, &ItemCommand::Restock { quantity: 2 })
        .await
        .unwrap();
    p2.execute(id, &ItemCommand::Restock { quantity: 10 })
        .await
        .unwrap();
    (p1, store)
}

#[tokio::test]
async fn a_refusal_on_a_stale_cached_state_is_decided_again_on_the_stored_state() {
    let id = stream("item-4");
    // P1 has 2 cached; the store holds 12.
    let (p1, store) = restocked_behind_the_cache(&id).await;
    let shipped = p1.execute(&id, &ItemCommand::Ship { quantity: 5 }).await;
    assert!(
        matches!(&shipped, Ok(done) if done.version == StreamVersion(4) && done.state.quantity() == 7),
        "{shipped:?}"
    );
    // The confirmed state is cached: the next command decides on it, and agrees with the store.
    let again = p1
        .execute(&id, &ItemCommand::Ship { quantity: 7 })
        .await
        .unwrap();
    assert_eq!(
        (again.version, again.state.quantity()),
        (StreamVersion(5), 0)
    );
    let loaded = Repository::<Item, _>::new(store).load(&id).await.unwrap();
    assert_eq!((loaded.version, loaded.state), (again.version, again.state));
}

#[tokio::test]
async fn a_refusal_on_a_current_cached_state_stands() {
    let id = stream("item-5");
    let (p1, _store) = restocked_behind_the_cache(&id).await;
    let refused = p1
        .execute(&id, &ItemCommand::Ship { quantity: 13 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CommandError::Rejected(ItemError::OutOfStock {
                available: 12,
                requested: 13
            })
        ),
        "decided on the store's 12, not the cached 2: {refused:?}"
    );
}

#[tokio::test]
async fn a_command_that_changes_nothing_answers_with_the_stored_state() {
    let id = stream("item-6");
    let (p1, _store) = restocked_behind_the_cache(&id).await;
    let touched = p1.execute(&id, &ItemCommand::Touch).await.unwrap();
    assert_eq!(
        (touched.version, touched.state.quantity()),
        (StreamVersion(3), 12),
        "the stream's state, not the cached one"
    );
}

/// A lost acknowledgement on the cached path answers as the repository does: retried with the same event ids
/// (bounded, backed off), then `OutcomeUnknown`, never a bare `Unavailable`; nothing unconfirmed stays cached.
#[cfg(feature = "testkit")]
#[tokio::test]
async fn lost_acknowledgements_on_the_cached_path_answer_as_the_repository_does() {
    use annals::testkit::command_ids::FailingAppends;

    async fn cached_then_losing(
        id: &StreamId,
        retries: u32,
    ) -> (
        CachedRepository<Item, Arc<FailingAppends<MemoryStore>>>,
        MemoryStore,
    ) {
        let store = MemoryStore::new();
        Repository::<Item, _>::new(store.clone())
            .execute(id, &register())
            .await
            .unwrap();
        let flaky = Arc::new(FailingAppends::losing_acknowledgements(store.clone(), 2));
        let repository = Repository::<Item, _>::new(flaky)
            .with_unavailable_retries(retries, Duration::from_millis(1));
        let items = CachedRepository::new(repository, 100);
        // A command that appends nothing caches the stream without using up an injected failure.
        items.execute(id, &ItemCommand::Touch).await.unwrap();
        assert_eq!(items.cached(), 1);
        (items, store)
    }

    let id = stream("item-7");
    let restock = ItemCommand::Restock { quantity: 3 };

    // With retries to spare, both recover: the third try finds the first commit and writes nothing more.
    let (items, store) = cached_then_losing(&id, 5).await;
    let done = items.execute(&id, &restock).await;
    assert!(
        matches!(&done, Ok(done) if done.version == StreamVersion(2)),
        "{done:?}"
    );
    assert_eq!(store.len(), 2, "written once");

    // With one retry, the plain repository answers OutcomeUnknown after two attempts; so does the cache.
    let plain = Repository::<Item, _>::new(Arc::new(FailingAppends::losing_acknowledgements(
        MemoryStore::new(),
        2,
    )))
    .with_unavailable_retries(1, Duration::from_millis(1));
    let plain = plain.execute(&id, &register()).await;
    assert!(
        matches!(plain, Err(CommandError::OutcomeUnknown { attempts: 2, .. })),
        "{plain:?}"
    );
    let (items, store) = cached_then_losing(&id, 1).await;
    let unknown = items.execute(&id, &restock).await;
    assert!(
        matches!(
            unknown,
            Err(CommandError::OutcomeUnknown { attempts: 2, .. })
        ),
        "{unknown:?}"
    );
    assert_eq!(items.cached(), 0, "an unconfirmed state is never cached");
    assert_eq!(store.len(), 2, "the first try did commit");
    let next = items.execute(&id, &restock).await.unwrap();
    assert_eq!((next.version, next.state.quantity()), (StreamVersion(3), 6));
}
