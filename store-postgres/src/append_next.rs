//! The fast path of a single event appended in the store's own transaction right after a read of its stream
//! (a command's session: read, decide, append): one `INSERT … SELECT` at the version after the one the read
//! found, without a read of the stream's version.
//!
//! The read is a hint; the statement checks it. It takes the stream lock (the one `append_events` and
//! `append_one.rs` take, so their version reads stay final beside it: an `Any` append never meets this one's
//! version in flight), then writes version `v + 1` only if version `v` is stored (`v` = 0 needs nothing), and
//! the unique key `(stream_id, stream_version)` refuses `v + 1` if it is taken. Versions are never deleted and
//! every append writes after a stored version, so when the insert succeeds the stream's version was exactly `v`
//! as the event committed, and any expected version that `v` satisfies was met. When the statement returns no
//! row (the server does not hold version `v`: a promoted standby lacking the last commits, a pooler that
//! re-routed the connection) or is refused by a unique key (a version taken since the read, an event id already
//! stored by a retry), nothing was written and `append_events` decides, as it does for `append_one.rs`. No
//! append can leave a hole, whatever server or connection it lands on.
//!
//! What it saves over `append_one.rs` is the version's read (an index scan for the stream's highest version);
//! the probe for version `v` is one unique-index lookup. The gap marker is taken as everywhere else, after the
//! stream lock and before the position is drawn. The retry on a fresh connection after a lost one goes through
//! `append_one.rs` anyway, which reads the version where it appends.

use annals::{NewEvent, StreamId, StreamVersion};
use sqlx::{PgConnection, Row};

use crate::failure::store_error;
use crate::fast_append::{FastAppend, run};
use crate::store::PostgresStore;

impl PostgresStore {
    /// Appends `event` to `stream` at the version after `read`, the version a read of the stream just found,
    /// in a transaction of its own on `conn` (autocommit: one statement), if the server holds version `read`:
    /// see the module's documentation.
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
