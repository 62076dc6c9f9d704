//! Command handling: load, decide, append, retry on conflicts, metadata propagation, error kinds.

use std::sync::Arc;

use annals::{
    CommandError, Error, EventStore, ExpectedVersion, Metadata, NewEvent, Position, Repository,
    StreamId, StreamVersion,
};
use annals_memory::MemoryStore;

use crate::domain::{Item, ItemCommand, ItemError};

fn stream(id: &str) -> StreamId {
    StreamId::new(id).unwrap()
}

async fn registered(repo: &Repository<Item, MemoryStore>, id: &StreamId, quantity: u64) {
    repo.execute(id, &ItemCommand::Register { sku: "sku".into() })
        .await
        .unwrap();
    if quantity > 0 {
        repo.execute(id, &ItemCommand::Restock { quantity })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn execute_appends_and_returns_the_new_state() {
    let repo = Repository::<Item, _>::new(MemoryStore::new());
    let id = stream("item-1");
    let done = repo
        .execute(
            &id,
            &ItemCommand::Register {
                sku: "sku-1".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.version, StreamVersion(1));
    assert_eq!(done.position, Position(1));
    assert_eq!(done.retries, 0);
    let done = repo
        .execute(&id, &ItemCommand::Restock { quantity: 5 })
        .await
        .unwrap();
    assert_eq!(done.state.quantity(), 5);
    assert_eq!(done.version, StreamVersion(2));
    let loaded = repo.load(&id).await.unwrap();
    assert_eq!(loaded.state, done.state);
    assert_eq!(loaded.version, StreamVersion(2));
    assert_eq!(loaded.position, Position(2));
}

#[tokio::test]
async fn a_command_without_events_writes_nothing() {
    let store = MemoryStore::new();
    let repo = Repository::<Item, _>::new(store.clone());
    let id = stream("item-1");
    registered(&repo, &id, 0).await;
    let done = repo.execute(&id, &ItemCommand::Touch).await.unwrap();
    assert!(done.events.is_empty());
    assert_eq!(done.version, StreamVersion(1));
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn domain_rejections_are_kept_apart() {
    let store = MemoryStore::new();
    let repo = Repository::<Item, _>::new(store.clone());
    let id = stream("item-1");
    registered(&repo, &id, 2).await;
    let err = repo
        .execute(&id, &ItemCommand::Ship { quantity: 3 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Rejected(ItemError::OutOfStock {
                available: 2,
                requested: 3
            })
        ),
        "{err:?}"
    );
    assert_eq!(store.len(), 2, "a rejected command writes nothing");
}

#[tokio::test]
async fn metadata_is_propagated_into_every_new_event() {
    let store = MemoryStore::new();
    let repo = Repository::<Item, _>::new(store.clone());
    let id = stream("item-1");
    let metadata = Metadata::correlated("request-42")
        .with_causation_id("command-7")
        .with("user", "alice");
    repo.execute_with(
        &id,
        &ItemCommand::Register { sku: "s".into() },
        metadata.clone(),
    )
    .await
    .unwrap();
    let events = store.load_stream(&id).await.unwrap();
    assert_eq!(events[0].metadata, metadata);

    // Without a correlation id, one is generated per command and shared by its events.
    repo.execute(&id, &ItemCommand::Restock { quantity: 1 })
        .await
        .unwrap();
    let events = store.load_stream(&id).await.unwrap();
    let generated = events[1].metadata.correlation_id.clone().unwrap();
    assert!(!generated.is_empty() && generated != "request-42");

    // Metadata::caused_by chains a follow-up to an event.
    let follow_up = Metadata::caused_by(&events[1]);
    assert_eq!(
        follow_up.correlation_id.as_deref(),
        Some(generated.as_str())
    );
    assert_eq!(follow_up.causation_id, Some(events[1].event_id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_retry_and_never_lose_an_update() {
    let store = MemoryStore::new();
    let repo = Repository::<Item, _>::new(store.clone()).with_max_retries(100);
    let id = stream("item-hot");
    registered(&repo, &id, 0).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (repo, id) = (repo.clone(), id.clone());
            tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..10 {
                    retries += repo
                        .execute(&id, &ItemCommand::Restock { quantity: 1 })
                        .await
                        .unwrap()
                        .retries;
                }
                retries
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let loaded = repo.load(&id).await.unwrap();
    assert_eq!(loaded.state.quantity(), 160, "every restock counted once");
    assert_eq!(loaded.version, StreamVersion(161));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_locks_queue_commands_instead_of_racing() {
    let store = MemoryStore::new();
    let locks = annals::StreamLocks::new();
    let id = stream("item-hot");
    registered(&Repository::new(store.clone()), &id, 0).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            // Separate repositories sharing one set of locks, as per-request repositories in a service would.
            let repo = Repository::<Item, _>::new(store.clone()).with_stream_locks(locks.clone());
            let id = id.clone();
            tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..10 {
                    retries += repo
                        .execute(&id, &ItemCommand::Restock { quantity: 1 })
                        .await
                        .unwrap()
                        .retries;
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    assert_eq!(
        retries, 0,
        "queued commands never lose a race within the process"
    );
    let loaded = Repository::<Item, _>::new(store).load(&id).await.unwrap();
    assert_eq!(loaded.state.quantity(), 160);
    assert!(locks.is_empty(), "no stream stays locked");
}

/// A store wrapper whose appends misbehave in one chosen way, delegating everything else.
struct Faulty {
    inner: MemoryStore,
    fault: Fault,
    appends: std::sync::atomic::AtomicU32,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Someone else always appends first.
    AlwaysBehind,
    /// The first append is written but its acknowledgement is lost.
    LostAck,
}

#[annals::async_trait]
impl EventStore for Faulty {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<annals::AppendResult> {
        let n = self
            .appends
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.fault {
            Fault::AlwaysBehind => {
                let other = vec![NewEvent::new(
                    "ItemRestocked",
                    serde_json::json!({"quantity": 1}),
                )];
                let won = self
                    .inner
                    .append(stream, ExpectedVersion::Any, other)
                    .await?;
                Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: won.stream_version,
                })
            }
            Fault::LostAck if n == 0 => {
                self.inner.append(stream, expected, events).await?;
                Err(Error::Unavailable {
                    operation: "append",
                    source: "connection reset by peer".into(),
                })
            }
            Fault::LostAck => self.inner.append(stream, expected, events).await,
        }
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<annals::RecordedEvent>> {
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> annals::Result<Vec<annals::RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn head(&self) -> annals::Result<Position> {
        self.inner.head().await
    }
    async fn wait_for_events(
        &self,
        after: Position,
        timeout: std::time::Duration,
    ) -> annals::Result<Position> {
        self.inner.wait_for_events(after, timeout).await
    }
}

async fn faulty_repo(fault: Fault, id: &StreamId) -> (MemoryStore, Repository<Item>) {
    let inner = MemoryStore::new();
    registered(&Repository::new(inner.clone()), id, 0).await;
    let store: Arc<dyn EventStore> = Arc::new(Faulty {
        inner: inner.clone(),
        fault,
        appends: Default::default(),
    });
    (inner, Repository::<Item>::new(store).with_max_retries(3))
}

#[tokio::test]
async fn exhausted_retries_are_a_conflict_not_a_store_failure() {
    let id = stream("item-1");
    let (_, repo) = faulty_repo(Fault::AlwaysBehind, &id).await;
    match repo
        .execute(&id, &ItemCommand::Restock { quantity: 1 })
        .await
    {
        Err(CommandError::Conflict {
            stream,
            attempts,
            last,
        }) => {
            assert_eq!(stream, id);
            assert_eq!(attempts, 4, "the first attempt and three retries");
            assert!(last.is_conflict());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lost_acknowledgement_is_not_written_twice() {
    let id = stream("item-1");
    let (inner, repo) = faulty_repo(Fault::LostAck, &id).await;
    let done = repo
        .execute(&id, &ItemCommand::Restock { quantity: 4 })
        .await
        .unwrap();
    assert_eq!(done.version, StreamVersion(2));
    assert_eq!(done.state.quantity(), 4);
    assert_eq!(
        inner.len(),
        2,
        "the retried append was recognised as the same one"
    );
}

#[tokio::test]
async fn an_undecodable_event_is_a_store_error_naming_where_it_is() {
    let store = MemoryStore::new();
    let id = stream("item-1");
    store
        .append(
            &id,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("ItemRegistered", serde_json::json!({"sku": "s"})),
                NewEvent::new("ItemRestocked", serde_json::json!({"quantity": "many"})),
            ],
        )
        .await
        .unwrap();
    store
        .append(
            &stream("item-2"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("ItemVanished", serde_json::json!({}))],
        )
        .await
        .unwrap();
    let repo = Repository::<Item, _>::new(store);
    let err = repo.load(&id).await.unwrap_err();
    match &err {
        Error::Decode {
            stream,
            version,
            position,
            event_type,
            ..
        } => {
            assert_eq!(stream, &id);
            assert_eq!(*version, StreamVersion(2));
            assert_eq!(*position, Position(2));
            assert_eq!(event_type, "ItemRestocked");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("\"item-1\"")
            && message.contains("version 2")
            && message.contains("position 2"),
        "{message}"
    );

    let err = repo
        .execute(&stream("item-2"), &ItemCommand::Touch)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::Store(Error::Decode { event_type, .. }) if event_type == "ItemVanished"),
        "{err:?}"
    );
    assert!(err.to_string().contains("unknown variant"), "{err}");
}
