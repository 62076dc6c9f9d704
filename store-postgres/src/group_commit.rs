//! [`GroupCommitStore`]: a [`PostgresStore`] whose concurrent appends share one statement, one transaction and
//! one commit (ADR 0006). The batching itself is in `group_batch.rs`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use annals::{
    AppendResult, CommandId, CommandRecord, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamId, StreamVersion, async_trait, check_append,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::group_batch::{Request, run_batches};
use crate::store::PostgresStore;

/// How a [`GroupCommitStore`] batches appends. Build it with [`GroupCommit::default`] and the `with_` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommit {
    /// The most appends committed together (default 64). A batch is cut at this size even when more are queued.
    pub max_batch: usize,
    /// The most appends waiting for a batch (default 1,024). An append that finds the queue full waits for room,
    /// so a slow database slows writers down instead of growing memory without bound.
    pub max_queue: usize,
    /// The most batches being committed at once (default 4), each on its own connection. More than one lets the
    /// server work on several batches in parallel (its cores) and overlaps their round trips; the next batch
    /// still forms from whatever queued meanwhile.
    pub max_in_flight: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_queue: 1024,
            max_in_flight: 4,
        }
    }
}

impl GroupCommit {
    /// Sets the most appends committed together (raised to 1).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Sets the most batches committed at once (raised to 1).
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// Sets the most appends waiting for a batch (raised to 1).
    pub fn with_max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue.max(1);
        self
    }
}

/// A [`PostgresStore`] with group commit: appends that arrive while a batch is being committed wait in a bounded
/// queue and are committed together, in one call of the schema's `append_batch` function (one round trip, one
/// transaction, one commit), each getting its own result. Reads, waits and the command record go straight to the
/// store. Cheap to clone: clones share the queue.
///
/// Nothing waits on purpose: an append that finds no batch in flight is sent at once, alone. Batches form only
/// when appends overlap, so a single writer sees the latency of a plain store and many concurrent writers share
/// commits (see [the guide](crate::guide) for when to enable it).
///
/// **Experimental: measure before enabling it.** On the 2-core benchmark machine, whose disk acknowledges an
/// fsync quickly, it cut commits to two thirds per command but made 8 writers several times slower than the
/// plain store (`command-8-group` in `docs/benchmarks.md`): the batch function spends more server CPU per append
/// than a lone append. It can only pay where commits are expensive.
///
/// The guarantees are those of [`PostgresStore`]: every append of a batch checks its expected version and its
/// event ids as a lone append would, two appends to one stream in one batch behave as if made one after the
/// other, a conflict or refusal fails only its own append, and the global order stays gap-safe (ADR 0001). When
/// the batch statement itself fails (its connection dies, the server refuses it) nothing of it was committed or
/// its outcome is unknown; each of its appends is then sent again on its own through the store, which is safe
/// because appends are idempotent by event id: an append that did commit is found as a replay and reports its
/// original result.
///
/// ```no_run
/// # async fn demo(store: annals_postgres::PostgresStore) -> anyhow::Result<()> {
/// use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
/// use annals_postgres::{GroupCommit, GroupCommitStore};
///
/// let grouped = GroupCommitStore::new(store, GroupCommit::default().with_max_batch(32));
/// let stream = StreamId::new("order-7")?;
/// let placed = NewEvent::new("OrderPlaced", serde_json::json!({"total": 1250}));
/// grouped.append(&stream, ExpectedVersion::NoStream, vec![placed]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct GroupCommitStore {
    store: PostgresStore,
    shared: Arc<Shared>,
}

/// What clones share: the settings and the queue's sending side. The batching tasks end when the last clone is
/// dropped (its queue closes), after committing what is queued.
struct Shared {
    config: GroupCommit,
    queue: OnceLock<mpsc::Sender<Request>>,
}

impl std::fmt::Debug for GroupCommitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitStore")
            .field("store", &self.store)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl GroupCommitStore {
    /// Group commit on `store`, batching as `config` says. The store must be migrated (the batch function comes
    /// with migration 0008). The batching tasks start with the first append, on the Tokio runtime running it.
    pub fn new(store: PostgresStore, config: GroupCommit) -> Self {
        Self {
            store,
            shared: Arc::new(Shared {
                config: GroupCommit {
                    max_batch: config.max_batch.max(1),
                    max_queue: config.max_queue.max(1),
                    max_in_flight: config.max_in_flight.max(1),
                },
                queue: OnceLock::new(),
            }),
        }
    }

    /// The store underneath, for what only it offers (transactions, units of work, migrations).
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }

    /// The batching settings.
    pub fn config(&self) -> GroupCommit {
        self.shared.config
    }

    /// How many appends are waiting for a batch now (not counting the batch being committed).
    pub fn queued(&self) -> usize {
        self.shared
            .queue
            .get()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }

    fn queue(&self) -> &mpsc::Sender<Request> {
        self.shared.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(self.shared.config.max_queue);
            let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
            for task in 0..self.shared.config.max_in_flight {
                let span = tracing::debug_span!(
                    "annals_postgres.group_commit",
                    schema = %self.store.schema(),
                    task
                );
                tokio::spawn(
                    run_batches(
                        self.store.clone(),
                        receiver.clone(),
                        self.shared.config.max_batch,
                    )
                    .instrument(span),
                );
            }
            sender
        })
    }
}

/// The error of an append whose batch ended without answering it (the batching task is gone): the append may or
/// may not be stored.
fn unanswered() -> annals::Error {
    annals::Error::Unavailable {
        operation: "append",
        source:
            "the group commit task stopped before answering; the append may or may not be stored \
                 (sending it again with the same event ids is safe)"
                .into(),
    }
}

#[async_trait]
impl EventStore for GroupCommitStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        // Malformed input is refused here, so that it never reaches a batch.
        check_append(stream, &events)?;
        let (reply, answer) = oneshot::channel();
        let request = Request {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        // Dropping this future (cancellation) drops `answer` only: a queued append that nobody waits for any more
        // is skipped if its batch has not started, and committed with its batch otherwise; the others' appends
        // are untouched either way.
        self.queue().send(request).await.map_err(|_| unanswered())?;
        answer.await.unwrap_or_else(|_| Err(unanswered()))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_all(after, limit).await
    }

    async fn load_stream(&self, stream: &StreamId) -> annals::Result<Vec<RecordedEvent>> {
        self.store.load_stream(stream).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.store.visit_stream(stream, visit).await
    }

    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.store.visit_all(after, visit).await
    }

    async fn fold_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.store.fold_all(after, visit).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.store.head().await
    }

    async fn allocated_head(&self) -> annals::Result<Position> {
        self.store.allocated_head().await
    }

    async fn find_command(&self, command_id: &CommandId) -> annals::Result<Option<CommandRecord>> {
        self.store.find_command(command_id).await
    }

    async fn record_command(&self, record: CommandRecord) -> annals::Result<CommandRecord> {
        self.store.record_command(record).await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.store.wait_for_events(after, timeout).await
    }
}
