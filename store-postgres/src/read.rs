//! Reading: one stream (one query), the global order (one query per page, gap-safe, or streamed to a visitor in
//! statements of at most [`VISIT_ALL_STATEMENT`] rows), and the head.

use std::time::Instant;

use annals::{EventId, Metadata, Payload, Position, RecordedEvent, StreamId, StreamVersion};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::types::Json;
use sqlx::{PgExecutor, Row};
use tracing::Instrument;

use crate::connection::{Checkout, connection_lost};
use crate::failure::{non_negative, store_error};
use crate::safe_bound::{SafeBound, Server};
use crate::store::PostgresStore;

/// The most events a page read allocates room for before the rows arrive.
const MAX_PREALLOCATED: usize = 10_000;

/// The most rows one statement of a visit of the global order reads (`visit_all_rows`): a longer visit runs one
/// guarded range statement after another, so that no single statement holds a connection and its snapshot for
/// the whole log.
pub(crate) const VISIT_ALL_STATEMENT: usize = 100_000;

/// A page size or count as the `bigint` PostgreSQL wants (`usize::MAX` means "no limit").
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Which events of a stream a stream read returns, and how much of each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows {
    /// Whole envelopes from version `from` on, at most `limit`.
    Full { from: StreamVersion, limit: usize },
    /// Every event, with only what a fold reads: no `recorded_at` (left at `DateTime::MIN_UTC`) and no
    /// metadata (left empty). See `schema::FOLD_COLUMNS`.
    Fold,
    /// As `Fold`, without the event ids either (left at `EventId::NIL`). See `schema::LEAN_COLUMNS`.
    Lean,
}

/// How much of each event a visit of the global order reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Envelope {
    /// Every stored field (`EventStore::visit_all`).
    Whole,
    /// What a fold reads (`EventStore::fold_all`): no event id, `recorded_at` or metadata.
    Lean,
}

impl PostgresStore {
    pub(crate) async fn read_stream_page(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        let mut events = Vec::new();
        self.visit_stream_rows(stream, from, limit, &mut |event| {
            events.push(event);
            Ok(())
        })
        .await?;
        Ok(events)
    }

    /// Hands the events of `stream` from version `from` on (at most `limit`) to `visit` as their rows arrive,
    /// in one query on a pooled connection; stops at the first error `visit` returns.
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
        let conn = self
            .visit_stream_pooled(None, Rows::Full { from, limit }, stream, visit)
            .await?;
        self.keep(conn);
        Ok(())
    }

    /// Reads `rows` of `stream` on `conn` (a new checkout when `None`) and returns the connection when the read
    /// succeeded, for the caller to use again. A dead pooled connection fails before any row arrives: then the
    /// read runs again, once, on a fresh connection. After any other failure the connection goes back to the
    /// pool.
    pub(crate) async fn visit_stream_pooled(
        &self,
        conn: Option<Checkout>,
        rows: Rows,
        stream: &StreamId,
        visit: &mut (dyn FnMut(RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Checkout> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => self.checkout("read_stream").await?,
        };
        let mut visited = 0usize;
        let first = {
            let mut counting = |event: RecordedEvent| {
                visited += 1;
                visit(event)
            };
            self.visit_rows_on(&mut *conn, rows, stream, &mut counting)
                .await
        };
        match first {
            Ok(()) => Ok(conn),
            // Boxed: the cold path stays out of the hot future, which every read moves into a box.
            Err(error) if visited == 0 && connection_lost(&error) => {
                conn.close_on_drop();
                drop(conn);
                tracing::debug!(%error, "pooled connection lost during a stream read; retrying once");
                Box::pin(async {
                    let mut fresh = self.fresh_connection("read_stream").await?;
                    self.visit_rows_on(&mut *fresh, rows, stream, visit).await?;
                    Ok(fresh)
                })
                .await
            }
            Err(error) => Err(error),
        }
    }

    /// [`visit_stream_rows`](Self::visit_stream_rows) through `executor` (a unit of work's transaction, so that
    /// it sees its own uncommitted events).
    pub(crate) async fn visit_stream_on<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
        visit: &mut (dyn FnMut(RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        if limit == 0 {
            return Ok(());
        }
        self.visit_rows_on(executor, Rows::Full { from, limit }, stream, visit)
            .await
    }

    /// Runs the read `rows` names through `executor` and hands each event to `visit` as its row arrives.
    async fn visit_rows_on<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        rows: Rows,
        stream: &StreamId,
        visit: &mut (dyn FnMut(RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        let (from, limit) = match rows {
            Rows::Full { from, limit } => (from.get(), limit),
            Rows::Fold | Rows::Lean => (StreamVersion::FIRST.get(), usize::MAX),
        };
        let span = tracing::debug_span!(
            "annals_postgres.read_stream",
            schema = %self.schema(),
            stream = %stream,
            from,
            count = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let query = match rows {
                Rows::Full { .. } => sqlx::query(self.inner.statements.load.clone())
                    .bind(stream.as_str())
                    .bind(i64::try_from(from).unwrap_or(i64::MAX))
                    .bind(sql_limit(limit)),
                Rows::Fold => sqlx::query(self.inner.statements.fold.clone()).bind(stream.as_str()),
                Rows::Lean => {
                    sqlx::query(self.inner.statements.fold_lean.clone()).bind(stream.as_str())
                }
            };
            let mut fetched = query.fetch(executor);
            let mut count = 0;
            while let Some(row) = fetched
                .try_next()
                .await
                .map_err(|e| store_error("read_stream", e))?
            {
                let event = match rows {
                    Rows::Full { .. } => decode_row(&row, Some(stream))?,
                    Rows::Fold => envelope(&row, &FOLD_ROW, Some(stream))?,
                    Rows::Lean => envelope(&row, &LEAN_ROW, Some(stream))?,
                };
                visit(event)?;
                count += 1;
            }
            record_done(count, started);
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// One page of the global order. Positions up to a bound once found safe stay safe forever, so pages below
    /// the last bound the store saw are one plain indexed range scan; only a page that reaches that bound asks
    /// the database for the current one (`safe_position()`: the sequence, then the gap markers), and reads the
    /// rest in a later statement, whose snapshot is taken after the markers were looked at (ADR 0001).
    pub(crate) async fn read_all_page(
        &self,
        after: Position,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let span = tracing::debug_span!(
            "annals_postgres.read_all",
            schema = %self.schema(),
            after = after.get(),
            count = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let mut events = match self.inner.safe_bound.get() {
                Some(known) if known.bound > after.get() => {
                    self.read_below(after, known, limit).await?
                }
                _ => Vec::new(),
            };
            if events.len() < limit {
                let from = events.last().map_or(after, |e| e.position);
                let fresh = self.refresh_safe_bound("read_all").await?;
                if fresh.bound > from.get() {
                    let rest = self.read_below(from, fresh, limit - events.len()).await?;
                    events.extend(rest);
                }
            }
            record_done(events.len(), started);
            Ok(events)
        }
        .instrument(span)
        .await
        .inspect_err(|error| self.forget_safe_bound_if_unavailable(error))
    }

    /// Hands every event with a position above `after`, up to one safe bound found at the start, to `visit` as
    /// its row arrives, and returns the last position visited (`after` when none). The bound is a fresh
    /// `safe_position()` (the statement `read_all` asks when it reaches its remembered bound); the rows are read
    /// by later statements (snapshots taken after the gap markers were looked at, ADR 0001), each the guarded
    /// range statement of `read_all`, of at most [`VISIT_ALL_STATEMENT`] rows, one after another until the bound.
    /// Each row is decoded with the checks and errors of `read_all` ([`decode_row`]); an [`Envelope::Lean`] visit
    /// reads and decodes only the fold's columns (`schema::LEAN_COLUMNS`).
    ///
    /// A statement whose guard fails (the server changed since the bound was found: a fail-over, a restart, a
    /// restore) returns no rows, like a `read_all` page: the visit then ends at the last event handed over, which
    /// skips nothing.
    pub(crate) async fn visit_all_rows(
        &self,
        after: Position,
        shape: Envelope,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        let span = tracing::debug_span!(
            "annals_postgres.visit_all",
            schema = %self.schema(),
            after = after.get(),
            count = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        // Only the store's own failures may mean another server: a visitor's error says nothing about it.
        let mut visitor_failed = false;
        let visited = async {
            let started = Instant::now();
            let bound = self.refresh_safe_bound("visit_all").await?;
            let mut last = after;
            let mut count = 0usize;
            while bound.bound > last.get() {
                let mut rows = self.rows_below(last, bound, VISIT_ALL_STATEMENT, shape);
                let mut in_statement = 0usize;
                while let Some(row) = rows
                    .try_next()
                    .await
                    .map_err(|e| store_error("visit_all", e))?
                {
                    let event = match shape {
                        Envelope::Whole => decode_row(&row, None)?,
                        Envelope::Lean => envelope(&row, &LEAN_ROW, None)?,
                    };
                    if let Err(error) = visit(&event) {
                        visitor_failed = true;
                        return Err(error);
                    }
                    last = event.position;
                    in_statement += 1;
                }
                count += in_statement;
                if in_statement < VISIT_ALL_STATEMENT {
                    break;
                }
            }
            record_done(count, started);
            Ok(last)
        }
        .instrument(span)
        .await;
        if let Err(error) = &visited
            && !visitor_failed
        {
            self.forget_safe_bound_if_unavailable(error);
        }
        visited
    }

    /// Events with `after < position <= bound`, in position order. Only for a `bound` that `safe_position()`
    /// returned before this statement started, on the server it names: on any other (or when the sequence went
    /// back below the bound) the statement returns nothing.
    async fn read_below(
        &self,
        after: Position,
        bound: SafeBound,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        let rows = self.rows_below(after, bound, limit, Envelope::Whole);
        decode_stream(rows, limit, None, "read_all").await
    }

    /// The rows of [`read_below`](Self::read_below) (the columns of `schema::EVENT_COLUMNS`, or of
    /// `schema::LEAN_COLUMNS` for [`Envelope::Lean`], then `stream_id`), as they arrive.
    fn rows_below(
        &self,
        after: Position,
        bound: SafeBound,
        limit: usize,
        shape: Envelope,
    ) -> BoxStream<'_, Result<PgRow, sqlx::Error>> {
        let statement = match shape {
            Envelope::Whole => &self.inner.statements.read_below,
            Envelope::Lean => &self.inner.statements.read_below_lean,
        };
        sqlx::query(statement.clone())
            .bind(i64::try_from(after.get()).unwrap_or(i64::MAX))
            .bind(i64::try_from(bound.bound).unwrap_or(i64::MAX))
            .bind(sql_limit(limit))
            .bind(bound.server.started_at)
            .fetch(&self.pool)
    }

    /// Asks the database how far the global order is safe to read now, on which server, and remembers it;
    /// failures are errors of `operation`.
    async fn refresh_safe_bound(&self, operation: &'static str) -> annals::Result<SafeBound> {
        let row = sqlx::query(self.inner.statements.safe_position.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| store_error(operation, e))?;
        let column = |e| store_error(operation, e);
        let bound = non_negative(
            operation,
            "safe_position()",
            row.try_get(0).map_err(column)?,
        )?;
        let last_drawn = non_negative(
            operation,
            "the position sequence's last value",
            row.try_get(1).map_err(column)?,
        )?;
        let fresh = SafeBound {
            server: Server {
                system_identifier: row.try_get(2).map_err(column)?,
                started_at: row.try_get(3).map_err(column)?,
            },
            bound,
        };
        Ok(self.inner.safe_bound.record(fresh, last_drawn))
    }

    /// A broken connection may come back to another server (a fail-over): what was safe before may not be.
    pub(crate) fn forget_safe_bound_if_unavailable(&self, error: &annals::Error) {
        if matches!(error, annals::Error::Unavailable { .. }) {
            self.inner.safe_bound.forget();
        }
    }

    pub(crate) async fn safe_head(&self) -> annals::Result<Position> {
        let head: i64 = sqlx::query_scalar(self.inner.statements.head.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| store_error("head", e))
            .inspect_err(|error| self.forget_safe_bound_if_unavailable(error))?;
        Ok(Position(non_negative(
            "head",
            "head_position() (the highest stored position)",
            head,
        )?))
    }

    /// The last position drawn from the position sequence (0 before the first append), never below the head.
    pub(crate) async fn allocated_head_position(&self) -> annals::Result<Position> {
        let last: i64 = sqlx::query_scalar(self.inner.statements.allocated.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| store_error("allocated_head", e))?;
        Ok(Position(non_negative(
            "allocated_head",
            "pg_sequence_last_value(events_position_seq)",
            last,
        )?))
    }

    /// The stored events carrying any of `ids`, read through `executor`.
    pub(crate) async fn events_by_ids<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        ids: &[uuid::Uuid],
    ) -> annals::Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(self.inner.statements.by_ids.clone())
            .bind(ids)
            .fetch_all(executor)
            .await
            .map_err(|e| store_error("append", e))?;
        rows.iter().map(|row| decode_row(row, None)).collect()
    }

    /// The current version of `stream`, read through `executor`.
    pub(crate) async fn stream_version<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        stream: &StreamId,
    ) -> annals::Result<StreamVersion> {
        let version: i64 = sqlx::query_scalar(self.inner.statements.version.clone())
            .bind(stream.as_str())
            .fetch_one(executor)
            .await
            .map_err(|e| store_error("append", e))?;
        Ok(StreamVersion(non_negative(
            "append",
            &format!("the highest stored version of stream {stream:?}"),
            version,
        )?))
    }
}

/// Decodes rows as they arrive, so decoding overlaps with the server sending the rest.
async fn decode_stream(
    mut rows: impl futures::Stream<Item = Result<PgRow, sqlx::Error>> + Unpin,
    limit: usize,
    stream: Option<&StreamId>,
    operation: &'static str,
) -> annals::Result<Vec<RecordedEvent>> {
    // Sized for a full page up front (pages are usually full while catching up): no regrowth and copying.
    let mut events = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| store_error(operation, e))?
    {
        events.push(decode_row(&row, stream)?);
    }
    Ok(events)
}

fn record_done(count: usize, started: Instant) {
    let span = tracing::Span::current();
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("count", count);
    span.record("elapsed_us", elapsed_us);
    tracing::trace!(count, elapsed_us, "read");
}

/// Where the envelope's columns stand in one of the store's row shapes (the position is always column 0).
struct Layout {
    version: usize,
    /// `None` in a shape without the event id (the event gets `EventId::NIL`).
    event_id: Option<usize>,
    schema_version: usize,
    event_type: usize,
    payload: usize,
    /// Where `stream_id` follows the shape's columns in a read of the global order.
    stream: usize,
}

/// `schema::EVENT_COLUMNS`.
const EVENT_ROW: Layout = Layout {
    version: 1,
    event_id: Some(2),
    schema_version: 4,
    event_type: 5,
    payload: 6,
    stream: 8,
};

/// `schema::FOLD_COLUMNS`.
const FOLD_ROW: Layout = Layout {
    version: 1,
    event_id: Some(2),
    schema_version: 3,
    event_type: 4,
    payload: 5,
    stream: 6,
};

/// `schema::LEAN_COLUMNS`.
const LEAN_ROW: Layout = Layout {
    version: 1,
    event_id: None,
    schema_version: 2,
    event_type: 3,
    payload: 4,
    stream: 5,
};

/// Turns one row (the columns of `schema::EVENT_COLUMNS`, then `stream_id` unless `stream` is given) into an
/// event. A row that does not fit (corrupt metadata, an impossible number) is an [`annals::Error::Decode`]
/// naming the event, or a backend error naming its position when even its identity is unreadable.
pub(crate) fn decode_row(row: &PgRow, stream: Option<&StreamId>) -> annals::Result<RecordedEvent> {
    let mut event = envelope(row, &EVENT_ROW, stream)?;
    let fields = (|| -> Result<(), sqlx::Error> {
        event.recorded_at = row.try_get_unchecked(3)?;
        if let Some(Json(metadata)) = row.try_get_unchecked::<Option<Json<Metadata>>, _>(7)? {
            event.metadata = metadata;
        }
        Ok(())
    })();
    match fields {
        Ok(()) => Ok(event),
        Err(source) => Err(event.decode_error(source)),
    }
}

/// The part of a row every read shape has (position, stream, version, event id where the shape has it, type,
/// schema version, payload), checked, with the same errors as [`decode_row`]: `recorded_at` and metadata are left
/// at their defaults for the caller to fill in, the event id at `EventId::NIL` in a shape without it.
fn envelope(row: &PgRow, at: &Layout, stream: Option<&StreamId>) -> annals::Result<RecordedEvent> {
    let corrupt = |what: String| annals::Error::Backend {
        operation: "read",
        source: what.into(),
    };
    let position: i64 = row
        .try_get_unchecked(0)
        .map_err(|e| corrupt(format!("unreadable position: {e}")))?;
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(format!("stored event at position {position}: {what}: {e}"))
    };
    let stream_id = match stream {
        Some(stream) => stream.clone(),
        None => {
            let raw: String = row
                .try_get_unchecked(at.stream)
                .map_err(|e| refused("unreadable stream id", &e))?;
            StreamId::new(raw).map_err(|e| refused("invalid stream id", &e))?
        }
    };
    let version: i64 = row
        .try_get_unchecked(at.version)
        .map_err(|e| refused("unreadable stream version", &e))?;
    let event_type: String = row
        .try_get_unchecked(at.event_type)
        .map_err(|e| refused("unreadable event type", &e))?;
    // NULL stands for 1 (`schema::EVENT_COLUMNS` says why).
    let schema_version: i32 = row
        .try_get_unchecked::<Option<i32>, _>(at.schema_version)
        .map_err(|e| refused("unreadable schema version", &e))?
        .unwrap_or(1);
    let (payload, payload_error) = match stored_json(row, at.payload) {
        Ok(json) => (Payload::from_stored_json(json), None),
        Err(e) => (Payload::from(serde_json::Value::Null), Some(e)),
    };
    // The envelope so far, for naming the event in an error; an impossible number is refused just below, so the
    // placeholder 0s are never handed out as data.
    let mut event = RecordedEvent {
        event_id: EventId::NIL,
        stream_id,
        stream_version: StreamVersion(u64::try_from(version).unwrap_or(0)),
        position: Position(u64::try_from(position).unwrap_or(0)),
        recorded_at: DateTime::<Utc>::MIN_UTC,
        event_type,
        schema_version: u32::try_from(schema_version).unwrap_or(0),
        payload,
        metadata: Metadata::default(),
    };
    if position <= 0 || version <= 0 || schema_version < 0 {
        return Err(event.decode_error(format!(
            "impossible envelope: position {position}, stream version {version}, schema version {schema_version}"
        )));
    }
    if let Some(source) = payload_error {
        return Err(event.decode_error(source));
    }
    let Some(event_id) = at.event_id else {
        return Ok(event);
    };
    match row.try_get_unchecked(event_id) {
        Ok(id) => {
            event.event_id = EventId(id);
            Ok(event)
        }
        Err(source) => Err(event.decode_error(source)),
    }
}

/// The JSON text of a `jsonb` column, as PostgreSQL sent it: in the binary format a version byte (1) and the
/// text. PostgreSQL only stores valid JSON in `jsonb`, so the text is not parsed here but once, when decoded.
fn stored_json(row: &PgRow, index: usize) -> Result<&str, sqlx::Error> {
    let value = row.try_get_raw(index)?;
    let decode = |source: sqlx::error::BoxDynError| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source,
    };
    let bytes = value.as_bytes().map_err(decode)?;
    let text = match value.format() {
        PgValueFormat::Text => bytes,
        PgValueFormat::Binary => match bytes.split_first() {
            Some((1, text)) => text,
            _ => {
                return Err(decode(
                    "unsupported jsonb format version (expected 1)".into(),
                ));
            }
        },
    };
    std::str::from_utf8(text).map_err(|e| decode(e.into()))
}
