//! Command handling: load a stream, decide, append with optimistic concurrency, retry on conflicts.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::event::{Metadata, NewEvent};
use crate::expected::ExpectedVersion;
use crate::ids::{Position, StreamId, StreamVersion};
use crate::store::EventStore;
use crate::stream_locks::StreamLocks;

/// The default number of times [`Repository::execute`] reloads and decides again after a conflict.
pub const DEFAULT_MAX_RETRIES: u32 = 8;

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
pub struct Repository<A, S = Arc<dyn EventStore>> {
    store: S,
    max_retries: u32,
    stream_locks: Option<StreamLocks>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            stream_locks: self.stream_locks.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// A repository on `store` retrying conflicts up to [`DEFAULT_MAX_RETRIES`] times.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_retries: DEFAULT_MAX_RETRIES,
            stream_locks: None,
            _aggregate: PhantomData,
        }
    }

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

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Loads and folds the stream.
    ///
    /// # Errors
    /// [`Error::Decode`] when a stored event does not decode into `A::Event`, or the store's error.
    #[tracing::instrument(level = "debug", skip(self), fields(stream = %stream))]
    pub async fn load(&self, stream: &StreamId) -> Result<Loaded<A>, Error> {
        let mut loaded = Loaded {
            state: A::default(),
            version: StreamVersion::NONE,
            position: Position::START,
        };
        self.store
            .visit_stream(stream, &mut |event| {
                let decoded: A::Event = event.decode()?;
                loaded.state.apply(&decoded);
                loaded.version = event.stream_version;
                loaded.position = event.position;
                Ok(())
            })
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
    /// A store that is unavailable during the append is retried once with the same event ids, which the store
    /// treats as idempotent, so a commit whose acknowledgement was lost is not written twice.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the aggregate refuses, [`CommandError::Conflict`] when retries run out,
    /// [`CommandError::Store`] when the store fails.
    #[tracing::instrument(level = "debug", skip(self, command, metadata), fields(stream = %stream))]
    pub async fn execute_with(
        &self,
        stream: &StreamId,
        command: &A::Command,
        mut metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        if metadata.correlation_id.is_none() {
            metadata.correlation_id = Some(uuid::Uuid::now_v7().to_string());
        }
        let _turn = match &self.stream_locks {
            Some(locks) => Some(locks.lock(stream).await),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Loaded {
                mut state,
                version,
                position,
            } = self.load(stream).await?;
            let events = state.decide(command).map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    position,
                    events,
                    retries: attempt - 1,
                });
            }
            let new_events = events
                .iter()
                .map(|e| NewEvent::from_event(e).map(|n| n.with_metadata(metadata.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = ExpectedVersion::Exact(version);
            let mut appended = self
                .store
                .append(stream, expected, new_events.clone())
                .await;
            if matches!(appended, Err(Error::Unavailable { .. })) {
                tracing::warn!(%stream, "store unavailable during append; retrying once with the same event ids");
                appended = self.store.append(stream, expected, new_events).await;
            }
            match appended {
                Ok(result) => {
                    for event in &events {
                        state.apply(event);
                    }
                    return Ok(Executed {
                        state,
                        version: result.stream_version,
                        position: result.last_position,
                        events,
                        retries: attempt - 1,
                    });
                }
                Err(conflict @ Error::Conflict { .. }) => {
                    if attempt > self.max_retries {
                        return Err(CommandError::Conflict {
                            stream: stream.clone(),
                            attempts: attempt,
                            last: conflict,
                        });
                    }
                    tracing::debug!(%stream, attempt, "conflict; reloading and deciding again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(other) => return Err(CommandError::Store(other)),
            }
        }
    }
}

/// A short, jittered pause before retrying a conflicted command, so that racing writers spread out.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let cap_micros = 200u64 << attempt.min(6);
    let jitter = RandomState::new().hash_one(attempt) % cap_micros.max(1);
    Duration::from_micros(jitter)
}
