//! Reading: one stream, the global order (pages, or visits of up to [`VISIT_ALL_STATEMENT`] rows per
//! statement), and the head. Every read is one statement on a reader connection, which in WAL mode sees one
//! committed state of the file: since committed positions are contiguous (`migrations/0001_events.sql`), the
//! global order a reader sees never has a gap that a later commit could fill.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use annals::{Position, RecordedEvent, StreamId, StreamVersion};
use futures::TryStreamExt;
use sqlx::AssertSqlSafe;

use crate::failure::{is_busy, non_negative, retry, retry_busy, sql_integer, store_error};
pub(crate) use crate::row::Columns;
use crate::row::decode;
use crate::store::SqliteStore;

/// The most rows one statement of a visit of the global order reads: a longer visit runs one statement after
/// another, so that no reader holds one snapshot (which keeps the write-ahead log from being checkpointed past
/// it) for the whole log.
pub(crate) const VISIT_ALL_STATEMENT: usize = 100_000;

/// A page size or count as the `INTEGER` SQLite wants (`usize::MAX` means "no limit").
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Whether a failure of a visit is worth another try: the file was busy and no row was handed over yet (a
/// visitor must not see a row twice).
fn untouched(visited: &AtomicUsize) -> impl Fn(&annals::Error) -> bool + '_ {
    move |error| visited.load(Ordering::Relaxed) == 0 && is_busy(error)
}

impl SqliteStore {
    /// Hands the events of `stream` from version `from` on (at most `limit`) to `visit` as their rows arrive;
    /// stops at the first error `visit` returns. A busy file is retried only while no row was handed over.
    pub(crate) async fn visit_stream_rows(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
        visit: &mut (dyn FnMut(RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        if limit == 0 {
            return Ok(());
        }
        let sql = format!(
            "SELECT {} FROM events WHERE stream_id = ?1 AND stream_version >= ?2 \
             ORDER BY stream_version LIMIT ?3",
            Columns::Whole.list()
        );
        let visited = AtomicUsize::new(0);
        let sql = &sql;
        let visit = &tokio::sync::Mutex::new(visit);
        let retries = self.inner.settings.busy_retries;
        retry("read_stream", retries, untouched(&visited), || async {
            let mut visit = visit.lock().await;
            let mut rows = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(stream.as_str())
                .bind(sql_integer(from.get()))
                .bind(sql_limit(limit))
                .fetch(&self.inner.readers);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| store_error("read_stream", e))?
            {
                let event = decode(&row, Columns::Whole, Some(stream))?;
                visited.fetch_add(1, Ordering::Relaxed);
                (*visit)(event)?;
            }
            Ok(())
        })
        .await
    }

    /// One page of the global order: up to `limit` events with positions above `after`.
    pub(crate) async fn read_all_page(
        &self,
        after: Position,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
            Columns::Whole.list()
        );
        let sql = &sql;
        retry_busy("read_all", self.inner.settings.busy_retries, || async {
            let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(sql_integer(after.get()))
                .bind(sql_limit(limit))
                .fetch_all(&self.inner.readers)
                .await
                .map_err(|e| store_error("read_all", e))?;
            rows.iter()
                .map(|row| decode(row, Columns::Whole, None))
                .collect()
        })
        .await
    }

    /// The position of the last committed event ([`Position::START`] for an empty store).
    pub(crate) async fn head_position(&self) -> annals::Result<Position> {
        let head: i64 = retry_busy("head", self.inner.settings.busy_retries, || async {
            sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
                .fetch_one(&self.inner.readers)
                .await
                .map_err(|e| store_error("head", e))
        })
        .await?;
        Ok(Position(non_negative("head", "the head position", head)?))
    }

    /// Hands every event above `after` up to the head as of the call to `visit`, in statements of at most
    /// [`VISIT_ALL_STATEMENT`] rows, each row decoded as it arrives; returns the last position visited.
    pub(crate) async fn visit_all_rows(
        &self,
        after: Position,
        columns: Columns,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        let head = self.head_position().await?;
        let sql = format!(
            "SELECT {} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position LIMIT ?3",
            columns.list()
        );
        let mut last = after;
        while last < head {
            let (visited, reached) = self
                .visit_statement(&sql, last, head, columns, &mut *visit)
                .await?;
            last = reached;
            if visited < VISIT_ALL_STATEMENT {
                break;
            }
        }
        Ok(last)
    }

    /// One statement of [`visit_all_rows`](Self::visit_all_rows): returns how many rows it visited and the last
    /// position visited (`after` when none).
    async fn visit_statement(
        &self,
        sql: &str,
        after: Position,
        head: Position,
        columns: Columns,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<(usize, Position)> {
        let visited = AtomicUsize::new(0);
        let last = AtomicU64::new(after.get());
        let visit = &tokio::sync::Mutex::new(visit);
        let retries = self.inner.settings.busy_retries;
        retry("visit_all", retries, untouched(&visited), || async {
            let mut visit = visit.lock().await;
            let mut rows = sqlx::query(AssertSqlSafe(sql))
                .bind(sql_integer(after.get()))
                .bind(sql_integer(head.get()))
                .bind(sql_limit(VISIT_ALL_STATEMENT))
                .fetch(&self.inner.readers);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| store_error("visit_all", e))?
            {
                let event = decode(&row, columns, None)?;
                visited.fetch_add(1, Ordering::Relaxed);
                (*visit)(&event)?;
                last.store(event.position.get(), Ordering::Relaxed);
            }
            Ok(())
        })
        .await?;
        Ok((visited.into_inner(), Position(last.into_inner())))
    }
}
