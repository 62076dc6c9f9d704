//! The store's [`CommandSession`]: a command attempt's stream read and append on one pooled connection.

use crate::connection::Checkout;
use crate::read::Rows;
use crate::store::PostgresStore;
use annals::{
    AppendResult, CommandSession, ExpectedVersion, NewEvent, RecordedEvent, StreamId,
    StreamVersion, async_trait,
};

/// One command attempt on a [`PostgresStore`]. The stream read checks a connection out and keeps it; the append
/// runs on it, and when it appends to the stream just read, it starts from the version the read found
/// (`append_next.rs`). Then the store holds the connection for its next operation (`connection/held.rs`) rather than paying the
/// pool's release (a ping, in a task sqlx spawns) per command. A session dropped after its read (the command
/// decided nothing, or failed) hands its connection to the store the same way.
///
/// Each operation keeps the store's rules: a connection found dead is replaced once by one that just answered
/// a ping (a read before any row arrived, or an append, which is idempotent by event id); after any failure the
/// connection goes back to the pool and the next operation checks out another.
pub(crate) struct PgCommandSession<'s> {
    pub(crate) store: &'s PostgresStore,
    pub(crate) conn: Option<Checkout>,
    /// The stream the last completed read was of, and the version it found (0 when it found no events).
    pub(crate) read: Option<(StreamId, StreamVersion)>,
}

impl Drop for PgCommandSession<'_> {
    /// The connection left here after a successful read is idle and clean.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.keep(conn);
        }
    }
}

impl PgCommandSession<'_> {
    /// Reads `rows` of `stream` on the session's connection (checked out now when it has none), keeps the
    /// connection, and remembers the version found for an append after the read.
    async fn read_rows(
        &mut self,
        rows: Rows,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.read = None;
        let mut found = StreamVersion::NONE;
        let conn = self
            .store
            .visit_stream_pooled(self.conn.take(), rows, stream, &mut |event| {
                found = found.max(event.stream_version);
                visit(&event)
            })
            .await?;
        self.conn = Some(conn);
        self.read = Some((stream.clone(), found));
        Ok(())
    }
}

#[async_trait]
impl CommandSession for PgCommandSession<'_> {
    /// Reads the fold's columns only: the events have no `recorded_at` and no metadata (as
    /// [`CommandSession::visit_stream`] allows).
    async fn visit_stream(
        &mut self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.read_rows(Rows::Fold, stream, visit).await
    }

    /// Reads the lean fold's columns: no event ids either (as [`CommandSession::fold_stream`] allows).
    async fn fold_stream(
        &mut self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.read_rows(Rows::Lean, stream, visit).await
    }

    async fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        let read = match self.read.take() {
            Some((read, version)) if read == *stream => Some(version),
            _ => None,
        };
        self.store
            .append_pooled(self.conn.take(), stream, expected, events, read)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most a command's store futures may take. Every call moves its future into a box (`async_trait`) by
    /// copying all of it, so a large inline future (sqlx's acquire alone is about 14 KB) costs thousands of
    /// instructions per command.
    const SMALL: usize = 4096;

    #[tokio::test]
    async fn the_futures_of_a_command_stay_small() {
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1/nothing").unwrap();
        let store = PostgresStore::from_pool(pool);
        let id = StreamId::new("sized").unwrap();
        let mut session = PgCommandSession {
            store: &store,
            conn: None,
            read: None,
        };
        let append = session.append(&id, ExpectedVersion::Any, Vec::new());
        let size = std::mem::size_of_val(&*append);
        assert!(
            size <= SMALL,
            "the session's append future takes {size} bytes"
        );
        drop(append);
        let mut visit = |_: &RecordedEvent| Ok(());
        let read = session.visit_stream(&id, &mut visit);
        let size = std::mem::size_of_val(&*read);
        assert!(
            size <= SMALL,
            "the session's read future takes {size} bytes"
        );
        drop(read);
        let fold = session.fold_stream(&id, &mut visit);
        let size = std::mem::size_of_val(&*fold);
        assert!(
            size <= SMALL,
            "the session's fold future takes {size} bytes"
        );
        drop(fold);
        let append = annals::EventStore::append(&store, &id, ExpectedVersion::Any, Vec::new());
        let size = std::mem::size_of_val(&*append);
        assert!(
            size <= SMALL,
            "the store's append future takes {size} bytes"
        );
    }
}
