//! What a fast-path append did (`append_one.rs`, `append_next.rs`): appended, or nothing written and the append
//! handed to `append_events`, whose answer is authoritative.

use annals::{AppendResult, Position, StreamId, StreamVersion};

use crate::failure::{EVENT_ID_KEY, STREAM_VERSION_KEY, non_negative_named, violated_unique};

/// What a fast path did.
pub(crate) enum FastAppend {
    /// The event is appended and committed.
    Appended(AppendResult),
    /// Nothing was written; `append_events` decides (a conflict, a replay, or a version taken meanwhile).
    Undecided,
    /// The statement failed for another reason; nothing was written.
    Failed(sqlx::Error),
}

impl FastAppend {
    /// A fast path's statement failed: a unique key refusing the event (its id is stored, or its version is
    /// taken) leaves the decision to `append_events`; anything else is a failure.
    pub(crate) fn refused(error: sqlx::Error) -> Self {
        match violated_unique(&error) {
            Some(EVENT_ID_KEY | STREAM_VERSION_KEY) => Self::Undecided,
            _ => Self::Failed(error),
        }
    }

    /// The one event of an append to `stream` went in at `position`, making the stream's version `version`
    /// (both as the statement returned them).
    pub(crate) fn appended(stream: &StreamId, position: i64, version: i64) -> annals::Result<Self> {
        let position = Position(non_negative_named("append", position, || {
            format!("the position appended to stream {stream:?}")
        })?);
        let version = StreamVersion(non_negative_named("append", version, || {
            format!("the version of stream {stream:?}")
        })?);
        Ok(Self::Appended(AppendResult {
            stream_version: version,
            first_position: position,
            last_position: position,
        }))
    }
}
