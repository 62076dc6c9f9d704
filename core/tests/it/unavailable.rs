//! An unavailable store during an append: retried with the same event ids, boundedly, with backoff; then an
//! error saying the outcome is unknown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use annals::{
    AppendResult, CommandError, CommandId, CommandRecord, Error, EventStore, ExpectedVersion,
    NewEvent, Position, RecordedEvent, Repository, StreamId, StreamVersion, async_trait,
};
use annals_memory::MemoryStore;

use crate::domain::{Item, ItemCommand};

/// Fails the next `failures` appends with `Unavailable`, after committing them when `commit` is set (a lost
/// acknowledgement), before reaching the store otherwise.
struct Failing {
    inner: MemoryStore,
    failures: AtomicU32,
    commit: bool,
    appends: AtomicU32,
}

impl Failing {
    fn new(failures: u32, commit: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            failures: AtomicU32::new(failures),
            commit,
            appends: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl EventStore for Failing {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            return self.inner.append(stream, expected, events).await;
        }
        if self.commit {
            self.inner.append(stream, expected, events).await?;
        }
        Err(Error::Unavailable {
            operation: "append",
            source: "connection reset by peer".into(),
        })
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
    async fn find_command(&self, id: &CommandId) -> annals::Result<Option<CommandRecord>> {
        self.inner.find_command(id).await
    }
    async fn record_command(&self, record: CommandRecord) -> annals::Result<CommandRecord> {
        self.inner.record_command(record).await
    }
}

fn register() -> ItemCommand {
    ItemCommand::Register { sku: "sku".into() }
}

#[tokio::test]
async fn an_unavailable_store_is_retried_with_backoff_until_it_answers() {
    let store = Failing::new(3, false);
    let repo = Repository::<Item>::new(store.clone())
        .with_unavailable_retries(5, Duration::from_millis(1));
    let id = StreamId::new("item-1").unwrap();
    let done = repo.execute(&id, &register()).await.unwrap();
    assert_eq!(done.version, StreamVersion(1));
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        4,
        "three failures, then success"
    );
    assert_eq!(store.inner.len(), 1);
}

#[tokio::test]
async fn lost_acknowledgements_are_retried_with_the_same_ids_and_written_once() {
    let store = Failing::new(2, true);
    let repo = Repository::<Item>::new(store.clone())
        .with_unavailable_retries(5, Duration::from_millis(1));
    let id = StreamId::new("item-1").unwrap();
    let done = repo.execute(&id, &register()).await.unwrap();
    assert_eq!(done.version, StreamVersion(1));
    assert_eq!(store.inner.len(), 1, "the retries found the first commit");
    assert_eq!(store.appends.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_store_that_stays_unavailable_reports_an_unknown_outcome() {
    let store = Failing::new(u32::MAX, true);
    let repo = Repository::<Item>::new(store.clone())
        .with_unavailable_retries(3, Duration::from_millis(1));
    let id = StreamId::new("item-1").unwrap();
    let err = repo.execute(&id, &register()).await.unwrap_err();
    let CommandError::OutcomeUnknown {
        ref stream,
        attempts,
        command_id: None,
        last: Error::Unavailable { .. },
    } = err
    else {
        panic!("expected OutcomeUnknown, got {err:?}")
    };
    assert_eq!(
        (stream, attempts),
        (&id, 4),
        "the first try and three retries"
    );
    let message = err.to_string();
    assert!(message.contains("unknown"), "{message}");
    assert!(
        message.contains("retrying under the same command id"),
        "{message}"
    );
    assert_eq!(
        store.inner.len(),
        1,
        "the store did take it: the outcome really was unknown"
    );
}

#[tokio::test]
async fn with_no_retries_the_first_unavailable_append_reports_an_unknown_outcome() {
    let store = Failing::new(1, false);
    let repo = Repository::<Item>::new(store.clone()).with_unavailable_retries(0, Duration::ZERO);
    let id = StreamId::new("item-1").unwrap();
    let command_id = CommandId::new("cmd-1").unwrap();
    let err = repo
        .execute_once(&id, &command_id, &register())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::OutcomeUnknown { attempts: 1, command_id: Some(c), .. } if *c == command_id),
        "{err:?}"
    );
    // The append never reached the store; the retry under the same id takes effect now, once.
    let done = repo
        .execute_once(&id, &command_id, &register())
        .await
        .unwrap();
    assert_eq!((done.version, done.replayed), (StreamVersion(1), false));
    let again = repo
        .execute_once(&id, &command_id, &register())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(store.inner.len(), 1);
}
