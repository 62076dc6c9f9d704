//! What the single-event fast paths (`append_one.rs`, `append_next.rs`) share: how their statement runs, and
//! what one did: appended; nothing written and the append handed to `append_events`, whose answer is
//! authoritative; or failed, with what was written unknown when the connection was lost.

use annals::{AppendResult, NewEvent, Position, StreamId, StreamVersion};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, SqlStr};

use crate::append::{schema_version, stored_metadata};
use crate::failure::{EVENT_ID_KEY, STREAM_VERSION_KEY, non_negative_named, violated_unique};

/// Runs a fast path's statement on `conn`, its parameters bound: `$1` the stream, `$2` `number` (the statement's
/// own: the expected version's code, or the version to write), then the event's id, type, schema version,
/// payload and metadata as `$3` to `$7`. The row the statement returned, or what its outcome means: no row is
/// [`FastAppend::Undecided`] (for `append_one`, a version that does not match; for `append_next`, a version
/// before it that the server does not hold), and a failure is [`FastAppend::refused`].
pub(crate) async fn run(
    conn: &mut PgConnection,
    statement: SqlStr,
    stream: &StreamId,
    number: i64,
    event: &NewEvent,
) -> annals::Result<Result<PgRow, FastAppend>> {
    let schema_version = schema_version(stream, 0, event)?;
    let inserted = sqlx::query(statement)
        .bind(stream.as_str())
        .bind(number)
        .bind(event.event_id.0)
        .bind(event.event_type.as_str())
        .bind(schema_version)
        .bind(Json(&event.payload))
        .bind(stored_metadata(&event.metadata))
        .fetch_optional(conn)
        .await;
    Ok(match inserted {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(FastAppend::Undecided),
        Err(error) => Err(FastAppend::refused(error)),
    })
}

/// What a fast path did.
pub(crate) enum FastAppend {
    /// The event is appended and committed.
    Appended(AppendResult),
    /// Nothing was written; `append_events` decides (a conflict, a replay, or a version taken meanwhile).
    Undecided,
    /// The statement failed for another reason. On a live connection nothing was written (the statement is its
    /// own transaction). When the connection was lost, the server may have committed the event before the
    /// reply was lost: the retry on a fresh connection finds it by its id and returns the stored result.
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
