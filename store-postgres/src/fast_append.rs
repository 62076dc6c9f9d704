//! What the single-event fast paths (`append_one.rs`, `append_next.rs`) share: how their statement is bound, and
//! what one did: appended, or nothing written and the append handed to `append_events`, whose answer is
//! authoritative.

use annals::{AppendResult, NewEvent, Position, StreamId, StreamVersion};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Postgres, SqlStr};

use crate::append::stored_metadata;
use crate::failure::{EVENT_ID_KEY, STREAM_VERSION_KEY, non_negative_named, violated_unique};

/// A fast path's statement with its parameters bound: `$1` the stream, `$2` `number` (the statement's own: the
/// expected version's code, or the version to write), then the event's id, type, `schema_version`, payload and
/// metadata as `$3` to `$7`.
pub(crate) fn bound<'q>(
    statement: SqlStr,
    stream: &'q StreamId,
    number: i64,
    event: &'q NewEvent,
    schema_version: i32,
) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(statement)
        .bind(stream.as_str())
        .bind(number)
        .bind(event.event_id.0)
        .bind(event.event_type.as_str())
        .bind(schema_version)
        .bind(Json(&event.payload))
        .bind(stored_metadata(&event.metadata))
}

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
