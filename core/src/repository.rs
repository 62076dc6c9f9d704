//! Command handling: load a stream, decide, append with optimistic concurrency, retry on conflicts and on an
//! unavailable store, and run commands under a [`CommandId`] at most once.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::Aggregate;
use crate::command_id::CommandId;
use crate::command_record::{CommandOutcome, CommandRecord};
use crate::error::Error;
use crate::event::{Event, Metadata, NewEvent, RecordedEvent};
use crate::expected::ExpectedVersion;
use crate::ids::{Position, StreamId, StreamVersion};
use crate::retry::RetryPolicy;
use crate::session::{CommandSession, StoreSession};
use crate::store::EventStore;
use crate::stream_locks::StreamLocks;

/// The default number of times [`Repository::execute`] reloads and decides again after a conflict.
pub const DEFAULT_MAX_RETRIES: u32 = 8;

/// The default number of times [`Repository::execute`] appends again, with the same event ids, after the store
/// was unavailable during an append.
pub const DEFAULT_UNAVAILABLE_RETRIES: u32 = 5;

/// The default pause before the first retry of an append after the store was unavailable; it doubles with each
/// retry (with jitter), up to two seconds.
pub const DEFAULT_UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(50);

/// An aggregate's state as loaded from its stream.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The folded state ([`Default`] when the stream has no events).
    pub state: A,
    /// The stream's version (0 when it has no events).
    pub version: StreamVersion,
    /// Position of the stream's last event ([`Position::START`] when it has none).
    pub position: Position,
}

/// The outcome of a command that was accepted.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The state after the new events.
    pub state: A,
    /// The stream's version after the append.
    pub version: StreamVersion,
    /// Position of the last event appended (or of the stream's last event when the command produced none).
    pub position: Position,
    /// The events the command produced.
    pub events: Vec<A::Event>,
    /// How many times the command was decided again after a conflict.
    pub retries: u32,
    /// Whether this is the remembered outcome of an earlier execution under the same [`CommandId`] (nothing
    /// was appended this time).
    pub replayed: bool,
}

/// Why a command was not carried out. The three kinds stay apart: the domain said no, other writers kept
/// winning, or the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command. The caller's fault: report it (HTTP 4xx), never retry.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// Every attempt lost the race to a concurrent writer. Retry later or report a conflict (HTTP 409).
    #[error("stream {stream:?} kept changing: gave up after {attempts} attempts ({last})")]
    Conflict {
        /// The contended stream.
        stream: StreamId,
        /// Attempts made, the first included.
        attempts: u32,
        /// The last conflict seen.
        #[source]
        last: Error,
    },
    /// The store stayed unavailable while the new events were being appended, through every retry: the events
    /// may or may not be stored. Retrying under the same [`CommandId`] ([`Repository::execute_once`]) is safe:
    /// it never doubles the effect. A command without one may have taken effect: look at the stream before
    /// running it again (HTTP 503).
    #[error(
        "the outcome of the command on stream {stream:?} is unknown: the store stayed unavailable through \
         {attempts} attempts to append ({last}); the events may or may not be stored; retrying under the same \
         command id (or with the same event ids) is safe"
    )]
    OutcomeUnknown {
        /// The stream appended to.
        stream: StreamId,
        /// The command id, when the command ran under one.
        command_id: Option<CommandId>,
        /// Append attempts made, the first included.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Error,
    },
    /// The command id was used before for a different command (another stream, or another command whose
    /// outcome differs on the same state). The caller's mistake: use a fresh id for a new command (HTTP 422).
    #[error(
        "command id {command_id:?} was used before for a different command (stream {stream:?})"
    )]
    CommandIdReused {
        /// The reused id.
        command_id: CommandId,
        /// The stream the earlier command ran against.
        stream: StreamId,
    },
    /// The store failed (unavailable, undecodable data, invalid stream id). See [`enum@Error`].
    #[error(transparent)]
    Store(Error),
}

impl<E> From<Error> for CommandError<E> {
    fn from(value: Error) -> Self {
        Self::Store(value)
    }
}

/// Loads aggregates of type `A` from a store and executes commands against them.
///
/// Cheap to clone when the store is (`Arc<dyn EventStore>`, the memory store, a connection pool).
///
/// ```
/// # use annals::{Aggregate, Event};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] enum Ev { E }
/// # impl Event for Ev {}
/// # #[derive(Default)] struct Counter;
/// # impl Aggregate for Counter {
/// #     type Command = (); type Event = Ev; type Error = std::convert::Infallible;
/// #     fn decide(&self, _: &()) -> Result<Vec<Ev>, Self::Error> { Ok(vec![]) }
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// use annals::Repository;
/// use annals_memory::MemoryStore;
///
/// let counters = Repository::<Counter>::new(MemoryStore::new());
/// # let _ = counters;
/// ```
pub struct Repository<A, S = Arc<dyn EventStore>> {
    store: S,
    max_retries: u32,
    /// How appends and command records are tried again while the store is unavailable.
    unavailable: RetryPolicy,
    stream_locks: Option<StreamLocks>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            unavailable: self.unavailable,
            stream_locks: self.stream_locks.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository of `A` on `store` (any [`EventStore`]: `Repository::<Counter>::new(MemoryStore::new())`),
    /// retrying conflicts up to [`DEFAULT_MAX_RETRIES`] times and an unavailable store up to
    /// [`DEFAULT_UNAVAILABLE_RETRIES`] times.
    pub fn new<S: EventStore>(store: S) -> Repository<A, S> {
        Repository {
            store,
            max_retries: DEFAULT_MAX_RETRIES,
            unavailable: RetryPolicy::new(
                DEFAULT_UNAVAILABLE_BACKOFF,
                UNAVAILABLE_CAP,
                DEFAULT_UNAVAILABLE_RETRIES,
            ),
            stream_locks: None,
            _aggregate: PhantomData,
        }
    }
}

/// How one attempt of a command ended.
enum Attempt<A: Aggregate> {
    /// The command is done.
    Done(Executed<A>),
    /// The append conflicted: decide again on a fresh read, if retries are left.
    Conflicted(Error),
    /// A racing execution under the same command id appended meanwhile: read again (no pause).
    Again,
}

/// What a command's read of its stream found.
enum Found<A: Aggregate> {
    /// The stream's current state, to decide on.
    Current(Loaded<A>),
    /// The command ran before under its command id: its original outcome.
    Answered(Executed<A>),
}

/// What loading a stream for a command under a command id found.
enum Scan<A: Aggregate> {
    /// The id has no events in the stream: the current state.
    Current(Loaded<A>),
    /// The id's events are in the stream and the command decides the same on the state before them.
    Replayed(Executed<A>),
    /// The id's events are in the stream, but this command decides otherwise: a different command.
    Reused,
}

/// The events of a command id met while scanning a stream.
struct Seen<A: Aggregate> {
    /// What this command decides on the state before the first of them (encoded), `None` when it decides
    /// no events or a refusal.
    decided: Option<Vec<(String, serde_json::Value)>>,
    events: Vec<A::Event>,
    faithful: bool,
    complete: bool,
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// Queues commands per stream within this process: a command waits until the previous command on the same
    /// stream (through any repository sharing `locks`) has finished, instead of racing it and retrying. Use
    /// it in services where many requests hit the same aggregate; conflicts with other processes are still
    /// detected and retried.
    pub fn with_stream_locks(mut self, locks: StreamLocks) -> Self {
        self.stream_locks = Some(locks);
        self
    }

    /// Sets how many times a command is decided again after a conflict (0: never).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets how many times an append is tried again, with the same event ids, after the store was unavailable
    /// (0: never), and the pause before the first retry (doubling after each, with jitter, up to two seconds).
    pub fn with_unavailable_retries(mut self, retries: u32, first_backoff: Duration) -> Self {
        self.unavailable = RetryPolicy::new(first_backoff, UNAVAILABLE_CAP, retries);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Loads and folds the stream. It reads through a [`CommandSession`](crate::CommandSession)'s
    /// [`fold_stream`](crate::CommandSession::fold_stream), as a command does, so a store reads only what a fold
    /// needs (PostgreSQL leaves out each event's id, metadata and recording time).
    ///
    /// # Errors
    /// [`Error::Decode`] when a stored event does not decode into `A::Event`, or the store's error.
    #[tracing::instrument(level = "debug", skip(self), fields(stream = %stream))]
    pub async fn load(&self, stream: &StreamId) -> Result<Loaded<A>, Error> {
        Self::load_in(&mut *self.store.command_session(), stream).await
    }

    /// [`load`](Repository::load) through a command's session.
    async fn load_in(
        session: &mut dyn CommandSession,
        stream: &StreamId,
    ) -> Result<Loaded<A>, Error> {
        let mut loaded = empty();
        session
            .fold_stream(stream, &mut |event| fold(&mut loaded, event))
            .await?;
        Ok(loaded)
    }

    /// Executes `command` against the aggregate in `stream`, with fresh metadata (a new correlation id).
    ///
    /// # Errors
    /// See [`Repository::execute_with`].
    pub async fn execute(
        &self,
        stream: &StreamId,
        command: &A::Command,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.execute_with(stream, command, Metadata::default())
            .await
    }

    /// Executes `command`: loads the stream, decides, and appends the new events expecting the version it loaded.
    /// On a conflict it reloads and decides again, up to the configured number of retries. Every new event
    /// carries `metadata`; when it has no correlation id, one is generated for the whole command.
    ///
    /// A store that is unavailable during the append is retried with the same event ids, which the store treats
    /// as idempotent (a commit whose acknowledgement was lost is not written twice), a bounded number of times
    /// with backoff ([`Repository::with_unavailable_retries`]).
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the aggregate refuses, [`CommandError::Conflict`] when retries run out,
    /// [`CommandError::OutcomeUnknown`] when the store stayed unavailable during the append,
    /// [`CommandError::Store`] when the store fails otherwise.
    pub async fn execute_with(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.run(stream, None, command, metadata).await
    }

    /// Executes `command` under `command_id`, at most once: the first execution decides and appends as
    /// [`execute`](Repository::execute) does, with event ids derived from the command id
    /// ([`CommandId::event_id`]) and the id in the events' metadata. Every later execution under the same id, at
    /// any later time and whatever happened to the stream since, appends nothing and returns the original
    /// outcome: the same versions, position and state as of that outcome (with [`Executed::replayed`] set), or
    /// the same refusal. Racing executions under one id have one effect.
    ///
    /// Outcomes with events are recognised through their derived event ids, which the store keeps forever;
    /// refusals and outcomes without events are kept in the store's command record
    /// ([`EventStore::record_command`]), which a store may expire (see `docs/command-ids.md`). The aggregate's
    /// `decide` must be deterministic (it is pure): a repeat is recognised by deciding again on the state the
    /// original saw and comparing.
    ///
    /// # Errors
    /// As [`execute_with`](Repository::execute_with), and [`CommandError::CommandIdReused`] when the id was used
    /// for a different command (another stream, or a command that decides otherwise on the same state).
    pub async fn execute_once(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
        command: &A::Command,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.execute_once_with(stream, command_id, command, Metadata::default())
            .await
    }

    /// [`execute_once`](Repository::execute_once) with the events' metadata (the command id is added to it).
    ///
    /// # Errors
    /// See [`Repository::execute_once`].
    pub async fn execute_once_with(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.run(stream, Some(command_id), command, metadata).await
    }

    /// [`execute_once_with`](Repository::execute_once_with) when `command_id` is given,
    /// [`execute_with`](Repository::execute_with) otherwise: for callers whose command id is optional (an HTTP
    /// request with or without an `Idempotency-Key`).
    ///
    /// # Errors
    /// See [`Repository::execute_once`].
    pub async fn execute_under(
        &self,
        stream: &StreamId,
        command_id: Option<&CommandId>,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.run(stream, command_id, command, metadata).await
    }

    /// Runs `command` under the stream's local lock (if any): attempts until one is final, deciding again after
    /// each conflict (bounded, backed off).
    #[tracing::instrument(level = "debug", skip(self, command, metadata), fields(stream = %stream))]
    async fn run(
        &self,
        stream: &StreamId,
        once: Option<&CommandId>,
        command: &A::Command,
        mut metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        if metadata.correlation_id.is_none() {
            metadata.correlation_id = Some(uuid::Uuid::now_v7().to_string());
        }
        if let Some(id) = once {
            metadata.command_id = Some(id.as_str().to_owned());
        }
        let _turn = match &self.stream_locks {
            Some(locks) => Some(locks.lock(stream).await),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Each attempt opens its own session, and its connection goes back before the pause.
            match self
                .attempt(stream, once, command, &metadata, attempt)
                .await?
            {
                Attempt::Done(executed) => return Ok(executed),
                // A racing execution under the id appended to this stream: scan again.
                Attempt::Again => {}
                Attempt::Conflicted(conflict) => {
                    if attempt > self.max_retries {
                        return Err(CommandError::Conflict {
                            stream: stream.clone(),
                            attempts: attempt,
                            last: conflict,
                        });
                    }
                    tracing::debug!(%stream, attempt, "conflict; reloading and deciding again");
                    tokio::time::sleep(CONFLICT_PAUSES.pause(attempt - 1)).await;
                }
            }
        }
    }

    /// One attempt (the `attempt`-th): reads the stream, decides, and appends the new events expecting the
    /// version read, the read and the append through one [`CommandSession`] (one connection for both where the
    /// store checks connections out of a pool).
    async fn attempt(
        &self,
        stream: &StreamId,
        once: Option<&CommandId>,
        command: &A::Command,
        metadata: &Metadata,
        attempt: u32,
    ) -> Result<Attempt<A>, CommandError<A::Error>> {
        let retries = attempt - 1;
        let mut session = self.store.command_session();
        let loaded = match self.read_for(&mut *session, stream, once, command).await? {
            Found::Current(loaded) => loaded,
            Found::Answered(executed) => return Ok(Attempt::Done(executed)),
        };
        let events = match (loaded.state.decide(command), once) {
            (Ok(events), _) if !events.is_empty() => events,
            (Ok(events), None) => return Ok(Attempt::Done(decided(loaded, events, retries))),
            (Err(rejection), None) => return Err(CommandError::Rejected(rejection)),
            (decision, Some(id)) => {
                return self
                    .record_outcome(stream, id, command, decision, loaded, attempt)
                    .await;
            }
        };
        let new_events = encode(&events, metadata, once)?;
        let expected = ExpectedVersion::Exact(loaded.version);
        let appended = self
            .append(&mut *session, stream, once, expected, new_events)
            .await;
        match appended {
            Ok(result) => {
                let mut state = loaded.state;
                for event in &events {
                    state.apply(event);
                }
                let after = Loaded {
                    state,
                    version: result.stream_version,
                    position: result.last_position,
                };
                Ok(Attempt::Done(decided(after, events, retries)))
            }
            Err(CommandError::Store(conflict @ Error::Conflict { .. })) => {
                Ok(Attempt::Conflicted(conflict))
            }
            Err(CommandError::Store(Error::EventIdReused {
                existing_stream, ..
            })) if once.is_some() => {
                let id = once
                    .cloned()
                    .ok_or_else(|| CommandError::Store(internal()))?;
                Err(CommandError::CommandIdReused {
                    command_id: id,
                    stream: existing_stream,
                })
            }
            Err(other) => Err(other),
        }
    }

    /// Reads the stream for a command: folded through `session`; under a command id, scanned for the id's
    /// events beside a look at the command record, and answered from either when the id was used before.
    async fn read_for(
        &self,
        session: &mut dyn CommandSession,
        stream: &StreamId,
        once: Option<&CommandId>,
        command: &A::Command,
    ) -> Result<Found<A>, CommandError<A::Error>> {
        let Some(id) = once else {
            return Ok(Found::Current(Self::load_in(session, stream).await?));
        };
        // The record is asked beside the load, so a command id costs no extra round trip in time. The scan goes
        // to the store, not the session: the session would keep its connection while `find_command` (and
        // `record_command` after it) need one of their own, which on a pool of one connection would wait for
        // each other.
        let mut direct = StoreSession(&self.store);
        let (scan, record) = tokio::join!(
            Self::scan(&mut direct, stream, id, command),
            self.store.find_command(id)
        );
        match scan? {
            Scan::Replayed(done) => Ok(Found::Answered(done)),
            Scan::Reused => Err(reused(id, stream)),
            Scan::Current(loaded) => match record? {
                Some(record) => Ok(Found::Answered(
                    self.replay_record(stream, command, record).await?,
                )),
                None => Ok(Found::Current(loaded)),
            },
        }
    }

    /// Settles a command under `id` whose `decision` on `loaded` appends nothing (a refusal, or no change):
    /// records the outcome so that a repeat answers the same, then answers it; or answers as the outcome already
    /// recorded under the id; or asks for another attempt when a racing execution under the id appended.
    async fn record_outcome(
        &self,
        stream: &StreamId,
        id: &CommandId,
        command: &A::Command,
        decision: Result<Vec<A::Event>, A::Error>,
        loaded: Loaded<A>,
        attempt: u32,
    ) -> Result<Attempt<A>, CommandError<A::Error>> {
        let outcome = match &decision {
            Err(rejection) => CommandOutcome::Refused {
                reason: rejection.to_string(),
            },
            Ok(_) => CommandOutcome::Unchanged,
        };
        let record = CommandRecord {
            command_id: id.clone(),
            stream: stream.clone(),
            version: loaded.version,
            position: loaded.position,
            outcome,
            recorded_at: chrono::Utc::now(),
        };
        match self.record(stream, id, record.clone()).await? {
            Some(held) if same_record(&held, &record) => match decision {
                Err(rejection) => Err(CommandError::Rejected(rejection)),
                Ok(events) => Ok(Attempt::Done(decided(loaded, events, attempt - 1))),
            },
            Some(held) => Ok(Attempt::Done(
                self.replay_record(stream, command, held).await?,
            )),
            None if attempt <= self.max_retries => Ok(Attempt::Again),
            None => Err(reused(id, stream)),
        }
    }

    /// Appends, trying again with the same events (same ids) while the store is unavailable, boundedly.
    pub(crate) async fn append(
        &self,
        session: &mut dyn CommandSession,
        stream: &StreamId,
        once: Option<&CommandId>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<crate::store::AppendResult, CommandError<A::Error>> {
        let mut pauses = self.unavailable.pauses();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match session.append(stream, expected, events.clone()).await {
                Err(unavailable @ Error::Unavailable { .. }) => unavailable,
                other => return other.map_err(CommandError::Store),
            };
            let Some(pause) = pauses.next() else {
                return Err(CommandError::OutcomeUnknown {
                    stream: stream.clone(),
                    command_id: once.cloned(),
                    attempts,
                    last,
                });
            };
            tracing::warn!(%stream, attempts, error = %last, "store unavailable during append; retrying with the same event ids");
            tokio::time::sleep(pause).await;
        }
    }

    /// Records a command id's outcome without events, trying again while the store is unavailable (recording is
    /// idempotent). `None` when the id took effect in this stream meanwhile.
    async fn record(
        &self,
        stream: &StreamId,
        id: &CommandId,
        record: CommandRecord,
    ) -> Result<Option<CommandRecord>, CommandError<A::Error>> {
        let mut pauses = self.unavailable.pauses();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.store.record_command(record.clone()).await {
                Ok(held) => return Ok(Some(held)),
                Err(Error::CommandIdUsed {
                    stream: used_in, ..
                }) => {
                    if used_in == *stream {
                        return Ok(None);
                    }
                    return Err(reused(id, &used_in));
                }
                Err(last @ Error::Unavailable { .. }) => {
                    let Some(pause) = pauses.next() else {
                        return Err(CommandError::OutcomeUnknown {
                            stream: stream.clone(),
                            command_id: Some(id.clone()),
                            attempts,
                            last,
                        });
                    };
                    tracing::warn!(%stream, attempts, error = %last, "store unavailable while recording a command outcome; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(other) => return Err(CommandError::Store(other)),
            }
        }
    }

    /// Folds the stream like [`load`](Repository::load), watching for events derived from `id`. When it meets
    /// them, it decides `command` on the state just before them, compares, and stops folding after them, so the
    /// state is the one as of the original outcome.
    async fn scan(
        session: &mut dyn CommandSession,
        stream: &StreamId,
        id: &CommandId,
        command: &A::Command,
    ) -> Result<Scan<A>, Error> {
        let first = id.event_id(0);
        let mut loaded: Loaded<A> = empty();
        let mut seen: Option<Seen<A>> = None;
        session
            .visit_stream(stream, &mut |event: &RecordedEvent| {
                if seen.is_none() && event.event_id == first {
                    let decided = match loaded.state.decide(command) {
                        Ok(events) if !events.is_empty() => Some(
                            events
                                .iter()
                                .map(Event::encode)
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                        _ => None,
                    };
                    seen = Some(Seen {
                        faithful: decided.is_some(),
                        decided,
                        events: Vec::new(),
                        complete: false,
                    });
                }
                let decoded: A::Event = event.decode()?;
                if let Some(seen) = &mut seen {
                    if seen.complete {
                        return Ok(());
                    }
                    let index = seen.events.len();
                    let expected = seen.decided.as_ref().and_then(|d| d.get(index));
                    if expected.is_none() || event.event_id != id.event_id(index) {
                        seen.complete = true;
                        return Ok(());
                    }
                    let again = decoded.encode()?;
                    seen.faithful &= expected == Some(&again);
                    seen.events.push(event.decode()?);
                }
                loaded.state.apply(&decoded);
                loaded.version = event.stream_version;
                loaded.position = event.position;
                Ok(())
            })
            .await?;
        Ok(match seen {
            None => Scan::Current(loaded),
            Some(seen)
                if seen.faithful
                    && seen.decided.as_ref().map(Vec::len) == Some(seen.events.len()) =>
            {
                Scan::Replayed(Executed {
                    state: loaded.state,
                    version: loaded.version,
                    position: loaded.position,
                    events: seen.events,
                    retries: 0,
                    replayed: true,
                })
            }
            Some(_) => Scan::Reused,
        })
    }

    /// Answers a repeat of a command id whose outcome appended nothing: decides again on the state as of the
    /// record's version, which reproduces the original answer when the command is the same.
    async fn replay_record(
        &self,
        stream: &StreamId,
        command: &A::Command,
        record: CommandRecord,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        if record.stream != *stream {
            return Err(reused(&record.command_id, &record.stream));
        }
        let limit = usize::try_from(record.version.get()).unwrap_or(usize::MAX);
        let mut state = A::default();
        for event in self
            .store
            .read_stream(stream, StreamVersion::FIRST, limit)
            .await?
        {
            state.apply(&event.decode()?);
        }
        match (state.decide(command), &record.outcome) {
            (Err(rejection), CommandOutcome::Refused { reason })
                if rejection.to_string() == *reason =>
            {
                Err(CommandError::Rejected(rejection))
            }
            (Ok(events), CommandOutcome::Unchanged) if events.is_empty() => Ok(Executed {
                state,
                version: record.version,
                position: record.position,
                events,
                retries: 0,
                replayed: true,
            }),
            _ => Err(reused(&record.command_id, &record.stream)),
        }
    }
}

/// The outcome of a command decided (and appended) this time: `events` and the state after them, `loaded`.
pub(crate) fn decided<A: Aggregate>(
    loaded: Loaded<A>,
    events: Vec<A::Event>,
    retries: u32,
) -> Executed<A> {
    Executed {
        state: loaded.state,
        version: loaded.version,
        position: loaded.position,
        events,
        retries,
        replayed: false,
    }
}

/// The new events of a command, with its metadata and, under a command id, the ids derived from it.
pub(crate) fn encode<E: Event>(
    events: &[E],
    metadata: &Metadata,
    once: Option<&CommandId>,
) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .enumerate()
        .map(|(index, e)| {
            NewEvent::from_event(e).map(|n| {
                let n = n.with_metadata(metadata.clone());
                match once {
                    Some(id) => n.with_id(id.event_id(index)),
                    None => n,
                }
            })
        })
        .collect()
}

/// The state of a stream with no events.
fn empty<A: Aggregate>() -> Loaded<A> {
    Loaded {
        state: A::default(),
        version: StreamVersion::NONE,
        position: Position::START,
    }
}

/// Folds one stored event into `loaded`.
fn fold<A: Aggregate>(loaded: &mut Loaded<A>, event: &RecordedEvent) -> Result<(), Error> {
    let decoded: A::Event = event.decode()?;
    loaded.state.apply(&decoded);
    loaded.version = event.stream_version;
    loaded.position = event.position;
    Ok(())
}

fn reused<E>(id: &CommandId, stream: &StreamId) -> CommandError<E> {
    CommandError::CommandIdReused {
        command_id: id.clone(),
        stream: stream.clone(),
    }
}

fn same_record(held: &CommandRecord, ours: &CommandRecord) -> bool {
    held.command_id == ours.command_id
        && held.stream == ours.stream
        && held.version == ours.version
        && held.outcome == ours.outcome
}

fn internal() -> Error {
    Error::Backend {
        operation: "execute",
        source: "internal: a command id was expected".into(),
    }
}

/// The pauses between decisions after conflicts: short (200 µs, then up to 400 µs, doubling to at most
/// 12.8 ms), so that writers that keep colliding spread out; the number of decisions is `max_retries`'.
const CONFLICT_PAUSES: RetryPolicy =
    RetryPolicy::new(Duration::from_micros(400), Duration::from_micros(12_800), 0);

/// The longest pause between retries while the store is unavailable.
const UNAVAILABLE_CAP: Duration = Duration::from_secs(2);
