//! The store-level error type shared by every [`EventStore`](crate::EventStore) implementation.

use crate::command_id::CommandId;
use crate::expected::ExpectedVersion;
use crate::ids::{EventId, InvalidStreamId, Position, StreamId, StreamVersion};

/// A boxed error from a store's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a store operation. Each variant says what the caller should do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream id breaks a rule of [`StreamId::new`]. The caller's input is wrong (HTTP 400).
    #[error(transparent)]
    InvalidStreamId(#[from] InvalidStreamId),

    /// The stream is not at the expected version: someone else appended first. Reload and decide again, or
    /// report a conflict (HTTP 409).
    #[error(
        "wrong expected version for stream {stream:?}: expected {expected}, but the stream is at version {actual}"
    )]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 when it has no events).
        actual: StreamVersion,
    },

    /// An event id is already stored for a different event (another stream, type or payload), or an append
    /// repeats only part of an earlier one. Ids must be fresh for new events; fix the caller.
    #[error(
        "event id {event_id} (event #{index} of the append to stream {stream:?}) is already used by the event at \
         stream {existing_stream:?} version {existing_version}"
    )]
    EventIdReused {
        /// The reused id.
        event_id: EventId,
        /// Index of the offending event in the batch.
        index: usize,
        /// The stream the caller appended to.
        stream: StreamId,
        /// The stream holding the stored event with this id.
        existing_stream: StreamId,
        /// The stored event's version in that stream.
        existing_version: StreamVersion,
    },

    /// An event in an append is malformed (empty batch, empty event type, an id repeated within the batch).
    /// Fix the caller.
    #[error("invalid append to stream {stream:?}: {reason}")]
    InvalidAppend {
        /// The stream appended to.
        stream: StreamId,
        /// What is wrong, naming the event's index.
        reason: String,
    },

    /// A domain event could not be turned into a stored payload. A programming error in the event type.
    #[error("cannot encode event: {reason}")]
    Encode {
        /// What failed.
        reason: String,
    },

    /// A stored event could not be decoded: its type is unknown to the reader or its payload does not fit.
    /// Fix the data or add an upcaster; never silently skipped.
    #[error(
        "cannot decode event {event_type:?} (schema version {schema_version}) at stream {stream:?} version {version}, \
         position {position}: {source}"
    )]
    Decode {
        /// The event's stream.
        stream: StreamId,
        /// The event's stream version.
        version: StreamVersion,
        /// The event's global position.
        position: Position,
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// Why it failed.
        #[source]
        source: BoxError,
    },

    /// The backend could not be reached or the connection broke. The operation may be retried: an append is
    /// all-or-nothing, and retrying it with the same event ids never duplicates events.
    #[error(
        "{operation} failed because the store is unavailable; the operation may be retried: {source}"
    )]
    Unavailable {
        /// The store operation, for example `"append"`.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },

    /// An earlier failure in the same unit of work (one transaction spanning several appends) ended the unit:
    /// every later operation on it is refused with this error, and nothing more will be committed through it.
    /// Whether what it did was committed is what `first` says: nothing, unless the failure was a commit whose
    /// outcome is unknown (the connection was lost, or the commit was dropped, while `COMMIT` was in flight;
    /// then `retryable` is false: find out from the store before running the unit again). Start the whole unit
    /// again from the beginning when `retryable` says that may succeed (the first failure was a lost race or a
    /// transient fault), otherwise report `first`.
    #[error(
        "the unit of work was ended by an earlier failure and commits nothing more; run the whole unit again{}: {first}",
        if *retryable { "" } else { " only after fixing the cause" }
    )]
    UnitAborted {
        /// The first failure, as its message.
        first: String,
        /// Whether running the whole unit again may succeed.
        retryable: bool,
    },

    /// The store has no such capability (for example no record of command outcomes). Use a store that has it;
    /// retrying will not help.
    #[error("{operation} is not supported by this store")]
    Unsupported {
        /// The operation asked for, for example `"record_command"`.
        operation: &'static str,
    },

    /// The command id already took effect: events derived from it are stored (in `stream`), so no other
    /// outcome can be recorded under it. Executing a different command under a used id is the caller's
    /// mistake: use a fresh id.
    #[error("command id {command_id:?} already took effect in stream {stream:?}")]
    CommandIdUsed {
        /// The command id.
        command_id: CommandId,
        /// The stream holding its events.
        stream: StreamId,
    },

    /// The backend failed in a way retrying will not fix (bad configuration, corrupt data, a bug).
    #[error("{operation} failed: {source}")]
    Backend {
        /// The store operation, for example `"read_all"`.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the same operation may succeed if retried (a conflict after reloading, an unavailable store).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::Unavailable { .. })
    }

    /// Whether this is an expected-version conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
