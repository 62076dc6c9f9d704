//! Appending: one `BEGIN IMMEDIATE` transaction per batch on the store's writer connection, which reads the
//! stream's version and looks up the batch's event ids under SQLite's write lock, then inserts the batch in
//! multi-row statements and commits.

use std::time::Instant;

use annals::{
    AppendResult, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, check_append, resolve_replayed_append,
};
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};
use tracing::Instrument;

use crate::failure::{non_negative, retry_busy, store_error};
use crate::row::{Columns, decode, micros};
use crate::store::SqliteStore;

/// The most events one `INSERT` (or one event-id lookup) carries: 8 parameters each, far below SQLite's limit
/// of 32,766 parameters per statement.
const CHUNK: usize = 100;

/// One event as its row stores it, encoded once before the first attempt.
struct Encoded<'a> {
    event_id: &'a [u8],
    event_type: &'a str,
    schema_version: i64,
    payload: String,
    metadata: Option<String>,
}

impl<'a> Encoded<'a> {
    fn new(event: &'a NewEvent) -> annals::Result<Self> {
        let encode = |e: serde_json::Error| annals::Error::Encode {
            reason: format!("cannot write the metadata as JSON: {e}"),
        };
        let metadata = (event.metadata != Metadata::default())
            .then(|| serde_json::to_string(&event.metadata).map_err(encode))
            .transpose()?;
        Ok(Self {
            event_id: event.event_id.as_uuid().as_bytes(),
            event_type: &event.event_type,
            // `check_append` refused schema versions above `MAX_SCHEMA_VERSION`, which fit.
            schema_version: i64::from(event.schema_version),
            payload: event.payload.to_string(),
            metadata,
        })
    }
}

impl SqliteStore {
    /// [`EventStore::append`](annals::EventStore::append): checked, encoded, then tried until it is not refused
    /// by a busy file (bounded); a retry after an attempt whose outcome was lost is safe, since the event ids
    /// make it a replay.
    pub(crate) async fn append_events(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        check_append(stream, &events)?;
        let encoded = events
            .iter()
            .map(Encoded::new)
            .collect::<annals::Result<Vec<_>>>()?;
        let span = tracing::debug_span!(
            "annals_sqlite.append",
            stream = %stream,
            count = events.len(),
            expected = %expected,
            elapsed_us = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let retries = self.inner.settings.busy_retries;
            let result = retry_busy("append", retries, || {
                self.append_once(stream, expected, &events, &encoded)
            })
            .await;
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::Span::current().record("elapsed_us", elapsed_us);
            match &result {
                Ok(done) => tracing::trace!(last_position = done.last_position.get(), "appended"),
                Err(error) => tracing::debug!(%error, "append failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// One attempt: the whole append in one write transaction. Every return without a commit drops the
    /// transaction, which rolls it back (positions drawn by a failed insert are given back with it).
    async fn append_once(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        encoded: &[Encoded<'_>],
    ) -> annals::Result<AppendResult> {
        let fail = |e| store_error("append", e);
        crate::writer::write(&self.inner.writer, "append", async |conn| {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
            let current = stream_version(&mut tx, stream).await?;
            let stored = events_by_ids(&mut tx, encoded).await?;
            if !stored.is_empty() {
                return resolve_replayed_append(stream, expected, events, &stored, current);
            }
            if !expected.matches(current) {
                return Err(annals::Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: current,
                });
            }
            let (first, last) = insert(&mut tx, stream, current, encoded).await?;
            // Waiters look again after this attempt whatever its outcome: a commit whose answer is lost (the
            // future dropped at the await) may still have committed.
            let _wake = self.wake_on_drop();
            tx.commit().await.map_err(fail)?;
            Ok(AppendResult {
                stream_version: StreamVersion(current.get() + encoded.len() as u64),
                first_position: first,
                last_position: last,
            })
        })
        .await
    }
}

/// The version of `stream`: the version of its last event, 0 when it has none.
pub(crate) async fn stream_version(
    conn: &mut SqliteConnection,
    stream: &StreamId,
) -> annals::Result<StreamVersion> {
    let version: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?1",
    )
    .bind(stream.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| store_error("append", e))?;
    let what = || format!("the version of stream {stream:?}");
    Ok(StreamVersion(non_negative("append", &what(), version)?))
}

/// `?, ?, …` with `count` placeholders, each a tuple of `width` when `width > 1`.
fn placeholders(count: usize, width: usize) -> String {
    let one = if width == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; width].join(", "))
    };
    vec![one; count].join(", ")
}

/// The stored events that carry any of the batch's event ids.
async fn events_by_ids(
    conn: &mut SqliteConnection,
    encoded: &[Encoded<'_>],
) -> annals::Result<Vec<RecordedEvent>> {
    let mut stored = Vec::new();
    for chunk in encoded.chunks(CHUNK) {
        let sql = format!(
            "SELECT {} FROM events WHERE event_id IN ({})",
            Columns::Whole.list(),
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for event in chunk {
            query = query.bind(event.event_id);
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| store_error("append", e))?;
        for row in &rows {
            stored.push(decode(row, Columns::Whole, None)?);
        }
    }
    Ok(stored)
}

/// Inserts the batch at the versions after `current` and returns the first and last positions drawn. Under the
/// write lock every row draws the next position, so each statement's rows are consecutive and end at its
/// `last_insert_rowid`; the chunks are checked to follow one another.
async fn insert(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    current: StreamVersion,
    encoded: &[Encoded<'_>],
) -> annals::Result<(Position, Position)> {
    let recorded_at = micros(chrono::Utc::now());
    let mut version = current.get();
    let mut first: Option<i64> = None;
    let mut next: Option<i64> = None;
    for chunk in encoded.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO events (stream_id, stream_version, event_id, recorded_at, event_type, \
             schema_version, payload, metadata) VALUES {}",
            placeholders(chunk.len(), 8)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for event in chunk {
            version += 1;
            query = query
                .bind(stream.as_str())
                .bind(crate::failure::sql_integer(version))
                .bind(event.event_id)
                .bind(recorded_at)
                .bind(event.event_type)
                .bind(event.schema_version)
                .bind(event.payload.as_str())
                .bind(event.metadata.as_deref());
        }
        let done = query
            .execute(&mut *conn)
            .await
            .map_err(|e| store_error("append", e))?;
        let last = done.last_insert_rowid();
        let chunk_first = last - (chunk.len() as i64 - 1);
        if next.is_some_and(|next| next != chunk_first) || chunk_first <= 0 {
            return Err(annals::Error::Backend {
                operation: "append",
                source: format!(
                    "positions of one append are not consecutive: a statement ended at {last} after {next:?}"
                )
                .into(),
            });
        }
        first.get_or_insert(chunk_first);
        next = Some(last + 1);
    }
    let first = first.unwrap_or_default();
    let last = next.map_or(first, |next| next - 1);
    Ok((
        Position(non_negative("append", "the first position", first)?),
        Position(non_negative("append", "the last position", last)?),
    ))
}
