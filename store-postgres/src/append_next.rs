//! The fast path of a single event appended in the store's own transaction right after a read of its stream
//! (a command's session: read, decide, append): one `INSERT … VALUES` at the version after the one the read
//! found, with neither the stream lock nor a read of the stream's version.
//!
//! The read is the proof. Events are never deleted and a stream's versions run from 1 without a hole (every
//! append writes the version after one it read, under the unique key), so a read that found version `v` (0:
//! no events) proves versions `1..=v` are stored for good. The event goes in at `v + 1`; the unique key
//! `(stream_id, stream_version)` refuses it if that version is taken, by a commit since the read or by an
//! append in flight (the key waits for it to end). So when the insert succeeds, the stream's version was
//! exactly `v` as the event committed, and any expected version that `v` satisfies was met; when it is
//! refused, nothing was written and `append_events` decides, as it does for `append_one.rs`. An event id
//! already stored (a retry) is refused by its own unique key the same way.
//!
//! The proof holds on the server the read ran on, so it is used only on the read's own connection: when that
//! connection is lost, the retry on a fresh one (which may reach another server, a standby promoted after an
//! asynchronous fail-over that lacks the last commits) goes through `append_one.rs`, which reads the version
//! where it appends.
//!
//! What it saves is the server's work for the lock and the version's index scan: callgrind on the server
//! counts 147,000 instructions per append against 208,500 for `append_one`'s statement on the same table (see
//! `docs/benchmarks.md`). The gap marker is taken as everywhere else, before the position is drawn.

use annals::{NewEvent, StreamId, StreamVersion};
use sqlx::{PgConnection, Row};

use crate::failure::store_error;
use crate::fast_append::{FastAppend, run};
use crate::store::PostgresStore;

impl PostgresStore {
    /// Appends `event` to `stream` at the version after `read`, the version a read of the stream just found,
    /// in a transaction of its own on `conn` (autocommit: one statement): see the module's documentation.
    pub(crate) async fn append_next(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        read: StreamVersion,
        event: &NewEvent,
    ) -> annals::Result<FastAppend> {
        let Some(version) = read
            .get()
            .checked_add(1)
            .and_then(|next| i64::try_from(next).ok())
        else {
            // No version after it fits the column: `append_events` says so.
            return Ok(FastAppend::Undecided);
        };
        let statement = self.inner.statements.append_next.clone();
        let row = match run(conn, statement, stream, version, event).await? {
            Ok(row) => row,
            Err(undecided_or_failed) => return Ok(undecided_or_failed),
        };
        let position = row.try_get(0).map_err(|e| store_error("append", e))?;
        FastAppend::appended(stream, position, version)
    }
}
