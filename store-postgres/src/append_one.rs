//! The fast path of the store's own single-event appends: one `INSERT … SELECT` prepared on the client, taking
//! the same locks as `append_events` in the same order, that either appends the event or writes nothing and
//! hands the append to `append_events`, whose answer is authoritative.
//!
//! A command appends one event in its own transaction far more often than anything else, and `append_events`
//! is PL/pgSQL: every call pays for the function's executor start-up, its array parameters and one SPI statement
//! per step (callgrind on the server: 260,300 instructions per append against 196,400 for this statement; a
//! plain `INSERT` into the same table, without the locks, costs 164,500; see `docs/benchmarks.md`). The statement reads the stream's version in its own
//! snapshot, taken before it holds the stream lock, so the version may be stale; a stale read can only make it
//! insert a version that is already taken, which the unique key `(stream_id, stream_version)` refuses, so the
//! statement fails having written nothing. Whatever it cannot decide alone — a version that does not match, an
//! event id already stored (a retry), a version taken meanwhile — it leaves to `append_events`: the fast path
//! never reports a conflict or a replay itself.

use annals::{ExpectedVersion, NewEvent, StreamId};
use sqlx::{PgConnection, Row};

use crate::append::expected_code;
use crate::failure::store_error;
use crate::fast_append::{FastAppend, run};
use crate::store::PostgresStore;

impl PostgresStore {
    /// Appends `event` to `stream` in a transaction of its own on `conn` (autocommit: one statement), if the
    /// statement alone can: see the module's documentation.
    pub(crate) async fn append_one(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        event: &NewEvent,
    ) -> annals::Result<FastAppend> {
        let statement = self.inner.statements.append_one.clone();
        let row = match run(conn, statement, stream, expected_code(expected), event).await? {
            Ok(row) => row,
            Err(undecided_or_failed) => return Ok(undecided_or_failed),
        };
        let read = |e| store_error("append", e);
        FastAppend::appended(
            stream,
            row.try_get(0).map_err(read)?,
            row.try_get(1).map_err(read)?,
        )
    }
}
