//! Appending: one call of the schema's `append_events` function per batch, on the store's pool or inside the
//! caller's transaction; a single event in the store's own transaction tries one plain statement first
//! (`append_one.rs`).

use std::time::Instant;

use annals::{
    AppendResult, ExpectedVersion, Metadata, NewEvent, Position, StreamId, StreamVersion,
    check_append, resolve_replayed_append,
};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::connection::{Checkout, connection_lost};
use crate::failure::{
    EVENT_ID_KEY, STREAM_VERSION_KEY, non_negative, non_negative_named, sqlstate, store_error,
    violated_unique,
};
use crate::fast_append::FastAppend;
use crate::store::PostgresStore;

/// Whose transaction an append runs in, which decides how its failures can be examined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transaction {
    /// The store's own single-statement transaction: after an error the connection is still usable. `read` is
    /// the stream's version as a read on this store just found it, when the append follows one (a command
    /// session's): proof that the versions up to it are stored (`append_next.rs`).
    Own { read: Option<StreamVersion> },
    /// The caller's transaction: an error aborts it, so follow-up reads go through the pool.
    Callers,
}

/// The batch as the column arrays `append_events` takes.
struct Columns<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<Json<&'a serde_json::Value>>,
    metadata: Vec<Option<Json<&'a Metadata>>>,
}

impl<'a> Columns<'a> {
    fn new(stream: &StreamId, events: &'a [NewEvent]) -> annals::Result<Self> {
        let mut columns = Self {
            ids: Vec::with_capacity(events.len()),
            types: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: Vec::with_capacity(events.len()),
        };
        for (index, event) in events.iter().enumerate() {
            columns.ids.push(event.event_id.0);
            columns.types.push(&event.event_type);
            columns
                .schema_versions
                .push(schema_version(stream, index, event)?);
            columns.payloads.push(Json(&event.payload));
            columns.metadata.push(stored_metadata(&event.metadata));
        }
        Ok(columns)
    }
}

/// `metadata` as the `metadata` column stores it: NULL when the event has none.
pub(crate) fn stored_metadata(metadata: &Metadata) -> Option<Json<&Metadata>> {
    let empty = metadata.correlation_id.is_none()
        && metadata.causation_id.is_none()
        && metadata.extra.is_empty();
    (!empty).then_some(Json(metadata))
}

/// The schema version of `event`, the `index`th of its batch, as the `integer` column that stores it.
pub(crate) fn schema_version(
    stream: &StreamId,
    index: usize,
    event: &NewEvent,
) -> annals::Result<i32> {
    i32::try_from(event.schema_version).map_err(|_| annals::Error::InvalidAppend {
        stream: stream.clone(),
        reason: format!(
            "event #{index} has schema version {}, the PostgreSQL store keeps at most {}",
            event.schema_version,
            i32::MAX
        ),
    })
}

/// `append_events`' expected-version encoding: `>= 0` exact, `-1` any, `-2` stream exists.
pub(crate) fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::StreamExists => -2,
        ExpectedVersion::NoStream => 0,
        // A version beyond i64 can never match: the append conflicts, reporting the real version.
        ExpectedVersion::Exact(version) => i64::try_from(version.get()).unwrap_or(i64::MAX),
    }
}

/// A position `append_events` returned for an appended batch: present and positive.
fn position(raw: Option<i64>, which: &str) -> annals::Result<Position> {
    match raw {
        Some(raw) if raw > 0 => Ok(Position(non_negative("append", which, raw)?)),
        Some(raw) => Err(annals::Error::Backend {
            operation: "append",
            source: format!("append_events returned {which} {raw}; positions start at 1").into(),
        }),
        None => Err(annals::Error::Backend {
            operation: "append",
            source: format!("append_events returned no {which} for an appended batch").into(),
        }),
    }
}

impl PostgresStore {
    /// Appends `events` to `stream` inside the caller's transaction on `conn`, with the same expected-version and
    /// idempotency rules as [`EventStore::append`](annals::EventStore::append). The events become visible, and
    /// waiters are notified, only when the caller commits; a rollback leaves nothing behind. Use it to write
    /// events together with your own rows atomically (an outbox message, an idempotency key, a read model).
    ///
    /// The transaction must run at READ COMMITTED (PostgreSQL's default). Until it ends, global readers of this
    /// schema stop just below its events, so keep it short. A conflict or a replay is reported without aborting
    /// the transaction; any other error aborts it, as PostgreSQL errors do.
    ///
    /// ```no_run
    /// # async fn demo(store: annals_postgres::PostgresStore) -> anyhow::Result<()> {
    /// use annals::{ExpectedVersion, NewEvent, StreamId};
    ///
    /// let mut tx = store.pool().begin().await?;
    /// let stream = StreamId::new("order-7")?;
    /// let placed = NewEvent::new("OrderPlaced", serde_json::json!({"total": 1250}));
    /// store.append_in(&mut tx, &stream, ExpectedVersion::NoStream, vec![placed]).await?;
    /// sqlx::query("INSERT INTO outbox (topic, body) VALUES ('orders', 'order-7 placed')")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`EventStore::append`](annals::EventStore::append). An event id that a concurrent transaction stored
    /// while this one ran is reported as a [`Conflict`](annals::Error::Conflict): roll back and retry.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.append_in_unit(conn, stream, expected, events).await.0
    }

    /// [`append_in`](PostgresStore::append_in), also telling whether a failure was a clean refusal: nothing was
    /// written and the caller's transaction is intact (a conflict, a replay that does not match, a malformed
    /// batch). Any other failure may have aborted the transaction or left it in an unknown state.
    pub(crate) async fn append_in_unit(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> (annals::Result<AppendResult>, bool) {
        if let Err(invalid) = check_append(stream, &events) {
            return (Err(invalid), true);
        }
        let mut refused = false;
        let result = self
            .append_traced(
                conn,
                Transaction::Callers,
                stream,
                expected,
                &events,
                &mut refused,
            )
            .await;
        (result, refused)
    }

    /// Appends in the store's own transaction on `conn`, a connection checked out of the pool (a new checkout
    /// when `None`: a command session passes the connection its stream read used, and `read`, the version that
    /// read found, when it read this stream). A dead connection is
    /// replaced once by a fresh one; after a success the store holds the connection for its next operation
    /// (`connection/held.rs`), after a failure it goes back to the pool.
    pub(crate) async fn append_pooled(
        &self,
        conn: Option<Checkout>,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        read: Option<StreamVersion>,
    ) -> annals::Result<AppendResult> {
        check_append(stream, &events)?;
        let mut conn = match conn {
            Some(conn) => conn,
            None => self.checkout("append").await?,
        };
        let mut result = self
            .append_own(&mut conn, stream, expected, &events, read)
            .await;
        if result.as_ref().is_err_and(connection_lost) {
            // The pooled connection was dead (the pool does not ping before handing one out). Send the same
            // events again, once, on a connection that just answered a ping: if the first attempt did commit,
            // the event ids make this a replay that returns its result instead of writing twice. Boxed, as
            // the other cold paths: every append moves its future into a box, so it stays small.
            conn.close_on_drop();
            drop(conn);
            tracing::debug!(%stream, "pooled connection lost during append; retrying once on a fresh one");
            // Without the read: what it found was on the lost connection's server, and a fresh connection may
            // reach another one (after a fail-over) that lacks some of it, so the version is read again there.
            result = Box::pin(async {
                let mut fresh = self.fresh_connection("append").await?;
                let result = self
                    .append_own(&mut fresh, stream, expected, &events, None)
                    .await;
                if result.is_ok() {
                    self.keep(fresh);
                }
                result
            })
            .await;
        } else if result.is_ok() {
            self.keep(conn);
        }
        match &result {
            Ok(_) => self.appended(true),
            // A failure after reaching the database may have left a gap; let local waiters look again.
            Err(annals::Error::Unavailable { .. } | annals::Error::Backend { .. }) => {
                self.appended(false)
            }
            Err(_) => {}
        }
        result
    }

    /// One attempt of [`append_pooled`](Self::append_pooled): the append in the store's own transaction on `conn`.
    async fn append_own(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        read: Option<StreamVersion>,
    ) -> annals::Result<AppendResult> {
        let transaction = Transaction::Own { read };
        self.append_traced(conn, transaction, stream, expected, events, &mut false)
            .await
    }

    async fn append_traced(
        &self,
        conn: &mut PgConnection,
        transaction: Transaction,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        refused: &mut bool,
    ) -> annals::Result<AppendResult> {
        let span = tracing::debug_span!(
            "annals_postgres.append",
            schema = %self.schema(),
            stream = %stream,
            count = events.len(),
            expected = %expected,
            version = tracing::field::Empty,
            first_position = tracing::field::Empty,
            last_position = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let result = self
                .append_on(conn, transaction, stream, expected, events, refused)
                .await;
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let span = tracing::Span::current();
            span.record("elapsed_us", elapsed_us);
            match &result {
                Ok(done) => {
                    span.record("version", done.stream_version.get());
                    span.record("first_position", done.first_position.get());
                    span.record("last_position", done.last_position.get());
                    tracing::trace!(count = events.len(), elapsed_us, "appended");
                }
                Err(error) => tracing::debug!(%error, elapsed_us, "append failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// One append on `conn`: a single event in the store's own transaction through a fast path first, then (or
    /// otherwise) `append_events`. `refused` is set at every return that wrote nothing and left the transaction
    /// as it was.
    async fn append_on(
        &self,
        conn: &mut PgConnection,
        transaction: Transaction,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        refused: &mut bool,
    ) -> annals::Result<AppendResult> {
        if let Transaction::Own { read } = transaction
            && let [event] = events
        {
            match self
                .append_fast(conn, read, stream, expected, event)
                .await?
            {
                FastAppend::Appended(done) => return Ok(done),
                FastAppend::Undecided => {}
                FastAppend::Failed(error) => {
                    return Box::pin(self.append_failed(
                        conn,
                        transaction,
                        stream,
                        expected,
                        events,
                        &[event.event_id.0],
                        error,
                    ))
                    .await;
                }
            }
        }
        let columns = match Columns::new(stream, events) {
            Ok(columns) => columns,
            Err(invalid) => {
                *refused = true;
                return Err(invalid);
            }
        };
        let notify_channel = (transaction == Transaction::Callers && self.inner.config.notify)
            .then(|| self.inner.signals.channel());
        let called = sqlx::query(self.inner.statements.append.clone())
            .bind(stream.as_str())
            .bind(expected_code(expected))
            .bind(transaction == Transaction::Callers)
            .bind(&columns.ids)
            .bind(&columns.types)
            .bind(&columns.schema_versions)
            .bind(&columns.payloads)
            .bind(&columns.metadata)
            .bind(notify_channel)
            // `fetch_optional`, not `fetch_one`: the same statement without the extra boxed future around it.
            .fetch_optional(&mut *conn)
            .await;
        match called {
            Ok(Some(row)) => {
                self.append_outcome(conn, &row, stream, expected, events, &columns.ids, refused)
                    .await
            }
            Ok(None) => Err(annals::Error::Backend {
                operation: "append",
                source: "append_events returned no row".into(),
            }),
            // Boxed: the cold path stays out of the future every append moves into a box.
            Err(error) => {
                Box::pin(self.append_failed(
                    conn,
                    transaction,
                    stream,
                    expected,
                    events,
                    &columns.ids,
                    error,
                ))
                .await
            }
        }
    }

    /// Most appends are one event in the store's own transaction: one plain statement does those
    /// (`append_next.rs` after a read whose version the expected one allows, else `append_one.rs`), and hands
    /// what it cannot decide alone to `append_events`.
    async fn append_fast(
        &self,
        conn: &mut PgConnection,
        read: Option<StreamVersion>,
        stream: &StreamId,
        expected: ExpectedVersion,
        event: &NewEvent,
    ) -> annals::Result<FastAppend> {
        match read {
            Some(read) if expected.matches(read) => {
                self.append_next(conn, stream, read, event).await
            }
            _ => self.append_one(conn, stream, expected, event).await,
        }
    }

    /// What `append_events` answered in `row`: appended, a conflict, or ids already stored (a retry of an
    /// earlier append, or ids reused; the transaction is intact either way).
    #[allow(clippy::too_many_arguments)]
    async fn append_outcome(
        &self,
        conn: &mut PgConnection,
        row: &PgRow,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        ids: &[Uuid],
        refused: &mut bool,
    ) -> annals::Result<AppendResult> {
        let read = |e| store_error("append", e);
        let outcome: i16 = row.try_get(0).map_err(read)?;
        let version: i64 = row.try_get(1).map_err(read)?;
        let version = StreamVersion(non_negative_named("append", version, || {
            format!("the version of stream {stream:?} (append_events' o_stream_version)")
        })?);
        match outcome {
            0 => Ok(AppendResult {
                stream_version: version,
                first_position: position(row.try_get(2).map_err(read)?, "o_first_position")?,
                last_position: position(row.try_get(3).map_err(read)?, "o_last_position")?,
            }),
            1 => {
                *refused = true;
                Err(annals::Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: version,
                })
            }
            _ => {
                let stored = Box::pin(self.events_by_ids(&mut *conn, ids)).await?;
                let resolved = resolve_replayed_append(stream, expected, events, &stored, version);
                *refused = resolved.is_err();
                resolved
            }
        }
    }

    /// Turns a failed `append_events` call into the error (or, for a retried append, the result) it means.
    #[allow(clippy::too_many_arguments)]
    async fn append_failed(
        &self,
        conn: &mut PgConnection,
        transaction: Transaction,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        ids: &[Uuid],
        error: sqlx::Error,
    ) -> annals::Result<AppendResult> {
        match violated_unique(&error) {
            Some(EVENT_ID_KEY) => {
                let (stored, current) = match transaction {
                    Transaction::Own { .. } => (
                        self.events_by_ids(&mut *conn, ids).await?,
                        self.stream_version(&mut *conn, stream).await?,
                    ),
                    Transaction::Callers => (
                        self.events_by_ids(&self.pool, ids).await?,
                        self.stream_version(&self.pool, stream).await?,
                    ),
                };
                let resolved = resolve_replayed_append(stream, expected, events, &stored, current);
                match (transaction, resolved) {
                    // The caller's transaction is aborted: it must roll back and retry, which will then find
                    // the replay.
                    (Transaction::Callers, Ok(_)) => Err(annals::Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual: current,
                    }),
                    (_, resolved) => resolved,
                }
            }
            // Only possible when the caller's transaction reads an old snapshot (REPEATABLE READ or stricter).
            Some(STREAM_VERSION_KEY) => Err(annals::Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: match transaction {
                    Transaction::Own { .. } => self.stream_version(&mut *conn, stream).await?,
                    Transaction::Callers => self.stream_version(&self.pool, stream).await?,
                },
            }),
            _ => match sqlstate(&error).as_deref() {
                // untranslatable character (a \u0000 in JSON) or a NUL byte in text
                Some("22P05" | "22021") => Err(unstorable(stream, events, &error)),
                _ => Err(store_error("append", error)),
            },
        }
    }
}

/// The error for a batch PostgreSQL cannot store because of a NUL character, naming the first event that has
/// one.
fn unstorable(stream: &StreamId, events: &[NewEvent], error: &sqlx::Error) -> annals::Error {
    let has_nul = |event: &NewEvent| {
        event.event_type.contains('\0')
            || serde_json::to_string(&event.payload).is_ok_and(|s| s.contains("\\u0000"))
            || serde_json::to_string(&event.metadata).is_ok_and(|s| s.contains("\\u0000"))
    };
    let culprit = events
        .iter()
        .position(has_nul)
        .map_or_else(|| "an event".to_owned(), |index| format!("event #{index}"));
    annals::Error::InvalidAppend {
        stream: stream.clone(),
        reason: format!(
            "{culprit} contains a NUL character (\\u0000) in its event type, payload or metadata, which \
             PostgreSQL cannot store: {error}"
        ),
    }
}
