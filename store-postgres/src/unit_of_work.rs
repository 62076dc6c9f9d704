//! [`UnitOfWork`]: an [`EventStore`] whose appends and stream reads go through one open transaction, so that
//! commands on several streams, and rows of the caller's own (an idempotency key, an outbox message), commit
//! together or not at all.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    AppendResult, CommandId, CommandRecord, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamId, StreamVersion, async_trait,
};
use sqlx::{Executor, Postgres, Transaction};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::failure::store_error;
use crate::store::PostgresStore;

/// One transaction's worth of work behind the [`EventStore`] trait: hand it to [`Repository`](annals::Repository)s
/// and every append they make joins the same transaction, which begins at the unit's first operation.
///
/// The contract:
/// - **Reads of a stream** ([`read_stream`](EventStore::read_stream), [`visit_stream`](EventStore::visit_stream),
///   so [`Repository::load`](annals::Repository::load)) run inside the transaction and see the unit's own
///   uncommitted events: two commands on one stream in one unit work. The global order
///   ([`read_all`](EventStore::read_all), [`head`](EventStore::head),
///   [`wait_for_events`](EventStore::wait_for_events)) is read through the store's pool: committed events only.
/// - **A refused append** (a conflict, a malformed batch, an id reused) writes nothing and leaves the transaction
///   as it was, so a repository can reload inside the unit (seeing the concurrent writer's events) and decide
///   again. But the unit remembers it: [`commit`](UnitOfWork::commit) fails unless the last append attempted on
///   every stream succeeded. A unit never commits half of what was asked of it.
/// - **Any other failure** (a lost connection, a deadlock, a statement error) aborts the transaction: from then
///   on every operation and `commit` return [`annals::Error::UnitAborted`] naming the first failure, until
///   [`rollback`](UnitOfWork::rollback).
/// - **A dropped future** (an operation or `commit` inside a `timeout` or `select!` that gave up on it while its
///   statement was in flight) ends the unit as a failure does: every later operation and `commit` return
///   [`annals::Error::UnitAborted`], and no later append opens a fresh transaction. After an append or a read
///   nothing will be committed (`retryable`); after a `commit` dropped while `COMMIT` was in flight the outcome
///   is unknown (not `retryable`), as when `commit` returns [`annals::Error::Unavailable`].
/// - Nothing is visible to others until `commit`; dropping the unit or `rollback` discards everything.
///
/// [`PostgresStore::transaction`] runs a closure in a fresh unit and runs it again from the start when the unit
/// lost a race (conflict, deadlock, serialization failure) — the easy way to write a multi-stream command.
///
/// ```no_run
/// # use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
/// # async fn demo(store: annals_postgres::PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
/// let unit = store.unit_of_work();
/// let stream = StreamId::new("order-7")?;
/// unit.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("OrderPlaced", serde_json::json!({}))])
///     .await?;
/// sqlx::query("INSERT INTO outbox (topic) VALUES ('orders')")
///     .execute(&mut **unit.transaction().await?)
///     .await?;
/// unit.commit().await?;
/// # Ok(())
/// # }
/// ```
pub struct UnitOfWork {
    store: PostgresStore,
    state: Arc<Mutex<UnitState>>,
}

/// What a [`UnitOfWork`] holds between operations: its transaction and what went wrong in it. Only reachable
/// through [`UnitTransaction`].
#[derive(Default)]
pub struct UnitState {
    transaction: Option<Transaction<'static, Postgres>>,
    /// Whether an append succeeded (local waiters are woken after the commit).
    appended: bool,
    /// Whether the caller was handed the transaction (its statements may have failed unseen).
    lent: bool,
    /// The failure that ended the unit, sticky until `rollback`; while a statement is in flight, the failure
    /// that ends the unit should its future be dropped there ([`UnitState::in_flight`]).
    aborted: Option<Failure>,
    /// Streams whose last append through the unit was refused.
    refused: Vec<(StreamId, Failure)>,
}

#[derive(Debug, Clone)]
struct Failure {
    message: String,
    retryable: bool,
}

impl Failure {
    fn of(operation: &str, error: &annals::Error) -> Self {
        Self {
            message: format!("{operation} failed: {error}"),
            // A lost race or a transient fault ended a transaction that never committed: running the whole unit
            // again is safe and may succeed.
            retryable: matches!(
                error,
                annals::Error::Conflict { .. } | annals::Error::Unavailable { .. }
            ) || matches!(
                error,
                annals::Error::UnitAborted {
                    retryable: true,
                    ..
                }
            ),
        }
    }

    /// What ends the unit when `operation`'s future is dropped while its statement is in flight: the
    /// transaction's state is then unknown (the statement may have run, failed or be still running), so nothing
    /// done through the unit may commit on top of it.
    fn interrupted(operation: &str) -> Self {
        Self {
            message: format!(
                "{operation} was interrupted (its future was dropped while its statement was in flight); \
                 nothing done through the unit will be committed"
            ),
            // Nothing commits: running the whole unit again is safe and may succeed.
            retryable: true,
        }
    }

    /// What ends the unit when `commit`'s future is dropped while `COMMIT` is in flight: the server may have
    /// committed the work or not.
    fn commit_interrupted() -> Self {
        Self {
            message: "commit was interrupted (its future was dropped while COMMIT was in flight): its outcome \
                      is unknown, the work may or may not be committed; check what was stored before running \
                      it again"
                .to_owned(),
            retryable: false,
        }
    }

    fn error(&self) -> annals::Error {
        annals::Error::UnitAborted {
            first: self.message.clone(),
            retryable: self.retryable,
        }
    }
}

impl UnitState {
    /// The error every operation returns once the unit has ended.
    fn check(&self) -> annals::Result<()> {
        match &self.aborted {
            Some(failure) => Err(failure.error()),
            None => Ok(()),
        }
    }

    /// Marks the unit ended by `failure` for as long as the await that follows is in flight: should the caller
    /// drop the future there, every later call fails with it. [`UnitState::landed`] takes the mark back.
    fn in_flight(&mut self, failure: Failure) {
        self.aborted = Some(failure);
    }

    /// The await marked by [`UnitState::in_flight`] completed: the operation's own outcome decides from here.
    fn landed(&mut self) {
        self.aborted = None;
    }

    fn abort(&mut self, failure: Failure) {
        // Dropping the transaction rolls it back (on the connection's next use, or when it closes).
        self.transaction = None;
        if self.aborted.is_none() {
            self.aborted = Some(failure);
        }
    }

    async fn begun(
        &mut self,
        store: &PostgresStore,
        operation: &'static str,
    ) -> annals::Result<&mut Transaction<'static, Postgres>> {
        self.check()?;
        if self.transaction.is_none() {
            match store.pool().begin().await {
                Ok(begun) => self.transaction = Some(begun),
                Err(error) => {
                    let error = store_error(operation, error);
                    self.abort(Failure::of(operation, &error));
                    return Err(error);
                }
            }
        }
        self.transaction
            .as_mut()
            .ok_or_else(|| lost_transaction(operation))
    }
}

/// The unit's transaction, lent to the caller for statements of its own: dereferences to sqlx's
/// [`Transaction`] (use `&mut **guard` as an executor). The unit is locked while the guard lives.
pub struct UnitTransaction(OwnedMappedMutexGuard<UnitState, Transaction<'static, Postgres>>);

impl Deref for UnitTransaction {
    type Target = Transaction<'static, Postgres>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for UnitTransaction {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl PostgresStore {
    /// A new [`UnitOfWork`] on this store.
    pub fn unit_of_work(&self) -> UnitOfWork {
        UnitOfWork {
            store: self.clone(),
            state: Arc::new(Mutex::new(UnitState::default())),
        }
    }
}

impl UnitOfWork {
    /// The unit's transaction, begun now if nothing began it yet, for statements of the caller's own. A
    /// statement that fails there aborts the transaction; [`commit`](UnitOfWork::commit) then reports it instead
    /// of committing.
    ///
    /// # Errors
    /// [`annals::Error::UnitAborted`] when an earlier failure ended the unit; [`annals::Error::Unavailable`] when
    /// no connection could be had or `BEGIN` failed.
    pub async fn transaction(&self) -> annals::Result<UnitTransaction> {
        let mut held = self.state.clone().lock_owned().await;
        held.begun(&self.store, "begin").await?;
        held.lent = true;
        OwnedMutexGuard::try_map(held, |state| state.transaction.as_mut())
            .map(UnitTransaction)
            .map_err(|_| lost_transaction("begin"))
    }

    /// Commits everything appended and written through the unit, then wakes this process's waiters at once
    /// (other processes learn of it through the notification sent inside the transaction). Does nothing when
    /// nothing began a transaction.
    ///
    /// # Errors
    /// - [`annals::Error::UnitAborted`], after rolling back, when the unit cannot commit everything asked of it:
    ///   an earlier failure ended it, the last append to some stream was refused, or a statement of the caller's
    ///   own failed. Nothing was committed; `retryable` says whether running the whole unit again may succeed.
    /// - [`annals::Error::Unavailable`] when the commit could not be confirmed: the work may or may not be
    ///   stored. Do not run the unit again blindly (its events would get new ids); check what was stored, or
    ///   retry commands with the same event ids, which is safe.
    ///
    /// # Cancellation
    /// Dropped while `COMMIT` is in flight, the commit leaves the unit ended with an unknown outcome: every later
    /// call returns [`annals::Error::UnitAborted`] saying so (not `retryable`). Dropped before `COMMIT` was sent
    /// (while checking the caller's statements), nothing is committed and the unit is ended (`retryable`).
    pub async fn commit(&self) -> annals::Result<()> {
        let mut state = self.state.lock().await;
        state.check()?;
        if let Some((_, failure)) = state.refused.first() {
            let failure = failure.clone();
            state.abort(failure);
            return state.check();
        }
        let Some(mut transaction) = state.transaction.take() else {
            return Ok(());
        };
        // From here the transaction lives only in this future. Dropped at one of its awaits, it leaves the unit
        // ended, never looking as if nothing had begun (a later `commit` answering `Ok`, a later append opening a
        // fresh transaction that commits without the rest).
        if state.lent {
            // PostgreSQL answers COMMIT in an aborted transaction with a silent ROLLBACK: ask first. Dropped
            // here, the transaction rolls back: nothing is committed.
            state.in_flight(Failure::interrupted(
                "commit (its check of the caller's statements)",
            ));
            let checked = transaction.execute("SELECT 1").await;
            state.landed();
            if let Err(error) = checked {
                let error = store_error("commit", error);
                state.abort(Failure {
                    message: format!("a statement run in the unit's transaction failed: {error}"),
                    retryable: error.is_retryable(),
                });
                return state.check();
            }
        }
        state.in_flight(Failure::commit_interrupted());
        let committed = transaction.commit().await;
        state.landed();
        if let Err(error) = committed {
            // A database error is the server's definite answer (nothing committed); anything else leaves the
            // outcome unknown, which must not be mistaken for a failure that is safe to run again.
            let definite = matches!(error, sqlx::Error::Database(_));
            let error = store_error("commit", error);
            state.abort(Failure {
                message: format!("commit failed: {error}"),
                retryable: definite && error.is_retryable(),
            });
            return Err(error);
        }
        let appended = std::mem::take(&mut state.appended);
        *state = UnitState::default();
        drop(state);
        if appended {
            // `appended(false)` wakes local waiters without another NOTIFY: the transaction sent one.
            self.store.appended(false);
        }
        Ok(())
    }

    /// Discards everything appended and written through the unit, and forgets its failures: the unit can be used
    /// again from scratch.
    pub async fn rollback(&self) {
        let mut state = self.state.lock().await;
        let appended = state.appended;
        // Dropping a transaction rolls it back.
        *state = UnitState::default();
        drop(state);
        if appended {
            // An append held open may have held back local waiters; let them look again.
            self.store.appended(false);
        }
    }

    /// Whether running the whole unit again from the start may succeed: a refused append or the failure that
    /// ended the unit was a lost race or a transient fault. `false` when nothing failed.
    pub async fn may_succeed_if_run_again(&self) -> bool {
        let state = self.state.lock().await;
        let failures = state
            .aborted
            .iter()
            .chain(state.refused.iter().map(|(_, f)| f));
        let mut any = false;
        for failure in failures {
            if !failure.retryable {
                return false;
            }
            any = true;
        }
        any
    }
}

#[async_trait]
impl EventStore for UnitOfWork {
    // The command record is read and written through the store's pool, outside the unit's transaction: a
    // refusal or a no-change outcome is an answer whether or not the unit commits, and the record of a command
    // that took effect is its derived events, which commit with the unit.
    async fn find_command(&self, command_id: &CommandId) -> annals::Result<Option<CommandRecord>> {
        self.store.find_command(command_id).await
    }

    async fn record_command(&self, record: CommandRecord) -> annals::Result<CommandRecord> {
        self.store.record_command(record).await
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        let mut state = self.state.lock().await;
        state.begun(&self.store, "append").await?;
        // Dropped while the append is in flight, the unit cannot know what it did: the unit ends.
        state.in_flight(Failure::interrupted(&format!(
            "the append to stream {stream:?}"
        )));
        let (result, refused) = match state.transaction.as_mut() {
            Some(transaction) => {
                self.store
                    .append_in_unit(transaction, stream, expected, events)
                    .await
            }
            None => (Err(lost_transaction("append")), false),
        };
        state.landed();
        state.refused.retain(|(refused, _)| refused != stream);
        match &result {
            Ok(_) => state.appended = true,
            Err(error) if refused => {
                let failure = Failure::of(&format!("the append to stream {stream:?}"), error);
                state.refused.push((stream.clone(), failure));
            }
            Err(error) => {
                let failure = Failure::of(&format!("the append to stream {stream:?}"), error);
                state.abort(failure);
            }
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        let mut events = Vec::new();
        self.visit_from(stream, from, limit, &mut |event| {
            events.push(event);
            Ok(())
        })
        .await?;
        Ok(events)
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.visit_from(stream, StreamVersion::FIRST, usize::MAX, &mut |event| {
            visit(&event)
        })
        .await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_all(after, limit).await
    }

    // Through the store's pool, like `read_all`: the global order holds committed events only.
    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.store.visit_all(after, visit).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.store.head().await
    }

    async fn allocated_head(&self) -> annals::Result<Position> {
        self.store.allocated_head().await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.store.wait_for_events(after, timeout).await
    }
}

impl UnitOfWork {
    /// Reads `stream` inside the unit's transaction. A failed statement ends the unit; an error of `visit`'s
    /// own (an event that does not decode) does not.
    async fn visit_from(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
        visit: &mut (dyn FnMut(RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        let mut state = self.state.lock().await;
        state.begun(&self.store, "read_stream").await?;
        // Dropped mid-read, the connection is left with a statement in flight: the unit ends.
        state.in_flight(Failure::interrupted(&format!(
            "reading stream {stream:?} in the unit"
        )));
        let mut visitor_failed = false;
        let result = match state.transaction.as_mut() {
            Some(transaction) => {
                self.store
                    .visit_stream_on(&mut **transaction, stream, from, limit, &mut |event| {
                        let visited = visit(event);
                        visitor_failed = visited.is_err();
                        visited
                    })
                    .await
            }
            None => Err(lost_transaction("read_stream")),
        };
        state.landed();
        if let Err(error) = &result
            && !visitor_failed
        {
            state.abort(Failure::of(
                &format!("reading stream {stream:?} in the unit"),
                error,
            ));
        }
        result
    }
}

/// The error of an operation that found no transaction where [`UnitState::begun`] had just put one.
fn lost_transaction(operation: &'static str) -> annals::Error {
    annals::Error::Backend {
        operation,
        source: "the unit of work lost its transaction".into(),
    }
}
