//! The batching task behind [`GroupCommitStore`](crate::GroupCommitStore): takes every append queued while the
//! previous batch was being committed (up to the batch size, waiting for none), commits them in one call of
//! `append_batch`, and answers each append with its own result.

use std::sync::Arc;
use std::time::Instant;

use annals::{
    AppendResult, ExpectedVersion, Metadata, NewEvent, Position, StreamId, StreamVersion,
    resolve_replayed_append,
};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, Row, SqlSafeStr, SqlStr};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::append::expected_code;
use crate::connection::connection_lost;
use crate::failure::{non_negative, store_error};
use crate::schema::quoted;
use crate::store::PostgresStore;

/// One queued append and where its result goes.
pub(crate) struct Request {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) reply: oneshot::Sender<annals::Result<AppendResult>>,
}

impl Request {
    /// Hands the result to the caller; a caller that stopped waiting (dropped its future) is not an error.
    fn answer(self, result: annals::Result<AppendResult>) {
        let _ = self.reply.send(result);
    }
}

/// Commits batches until every [`GroupCommitStore`](crate::GroupCommitStore) clone is gone and the queue is empty.
///
/// Several of these tasks may share one queue (`max_in_flight`): each takes the appends queued when it is free.
/// Two batches in flight never deadlock each other (both take stream locks in one order), and the appends they
/// hold were concurrent, so either may commit first.
pub(crate) async fn run_batches(
    store: PostgresStore,
    queue: Arc<Mutex<mpsc::Receiver<Request>>>,
    max_batch: usize,
) {
    let statement = AssertSqlSafe(format!(
        "SELECT r_index, r_outcome, r_stream_version, r_first_position, r_last_position \
         FROM {}.append_batch($1, $2, $3, $4, $5, $6, $7, $8)",
        quoted(store.schema())
    ))
    .into_sql_str();
    let mut batch = Vec::with_capacity(max_batch);
    // Natural batching: `recv_many` waits for one append only, then takes whatever else is queued.
    loop {
        // The lock is held only while taking a batch, never while committing one.
        let taken = queue.lock().await.recv_many(&mut batch, max_batch).await;
        if taken == 0 {
            break;
        }
        // An append whose caller stopped waiting before its batch started is dropped unsent: nothing of it was
        // written, which is one of the outcomes a cancelled append may have.
        batch.retain(|request: &Request| !request.reply.is_closed());
        if !batch.is_empty() {
            commit(&store, &statement, std::mem::take(&mut batch)).await;
        }
        batch.clear();
    }
}

/// Why a batch statement did not answer.
enum Failed {
    /// Nothing was sent: no connection could be had. Every append fails with this (nothing was written).
    NotSent(annals::Error),
    /// The statement was sent and failed: either PostgreSQL refused it (nothing committed) or the connection
    /// broke (the outcome is unknown). Every append is sent again on its own, which is safe by event id.
    Sent(annals::Error),
}

/// One row of `append_batch`: the append it answers (0-based) and `append_events`' result for it.
struct Answer {
    index: usize,
    outcome: i16,
    version: StreamVersion,
    first: Option<i64>,
    last: Option<i64>,
}

async fn commit(store: &PostgresStore, statement: &SqlStr, batch: Vec<Request>) {
    let started = Instant::now();
    let size = batch.len();
    match call(store, statement, &batch).await {
        Ok(answers) => {
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(size, elapsed_us, "group commit: batch committed");
            answer_all(store, batch, answers).await;
        }
        Err(Failed::NotSent(error)) => {
            tracing::debug!(size, %error, "group commit: no connection for the batch");
            for request in batch {
                let error = annals::Error::Unavailable {
                    operation: "append",
                    source: format!(
                        "no connection for the group commit batch (nothing was written): {error}"
                    )
                    .into(),
                };
                request.answer(Err(error));
            }
        }
        Err(Failed::Sent(error)) => {
            // Either nothing committed or nobody knows: send each append on its own, in queue order (so that
            // appends to one stream keep their order). An append that did commit with the batch is found by its
            // event ids and reports its original result; the others get their own precise result or error.
            tracing::warn!(size, %error, "group commit: batch failed; sending its appends one by one");
            store.appended(false);
            for request in batch {
                if request.reply.is_closed() {
                    // Its caller is gone; whether the batch stored it or not, nobody is told a wrong answer.
                    continue;
                }
                let Request {
                    stream,
                    expected,
                    events,
                    reply,
                } = request;
                let result = store
                    .append_pooled(None, &stream, expected, events, None)
                    .await;
                let _ = reply.send(result);
            }
        }
    }
}

/// Runs the batch statement on a pooled connection.
async fn call(
    store: &PostgresStore,
    statement: &SqlStr,
    batch: &[Request],
) -> Result<Vec<Answer>, Failed> {
    let columns = Columns::new(batch).map_err(Failed::Sent)?;
    // A connection known to be outside any transaction (`connection/clean.rs`): the batch must commit.
    let mut conn = store.checkout("append").await.map_err(Failed::NotSent)?;
    let result = run(&mut conn, statement, &columns, batch.len()).await;
    match &result {
        Ok(_) => store.keep(conn),
        Err(error) if connection_lost(error) => conn.close_on_drop(),
        Err(_) => {}
    }
    result.map_err(Failed::Sent)
}

async fn run(
    conn: &mut PgConnection,
    statement: &SqlStr,
    columns: &Columns<'_>,
    appends: usize,
) -> annals::Result<Vec<Answer>> {
    let rows = sqlx::query(statement.clone())
        .bind(&columns.streams)
        .bind(&columns.expected)
        .bind(&columns.counts)
        .bind(&columns.ids)
        .bind(&columns.types)
        .bind(&columns.schema_versions)
        .bind(&columns.payloads)
        .bind(&columns.metadata)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| store_error("append", e))?;
    let read = |e| store_error("append", e);
    let mut answers = Vec::with_capacity(rows.len());
    for row in &rows {
        let index: i32 = row.try_get(0).map_err(read)?;
        let index = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .filter(|i| *i < appends)
            .ok_or_else(|| annals::Error::Backend {
                operation: "append",
                source: format!("append_batch answered for append #{index} of {appends}").into(),
            })?;
        let version: i64 = row.try_get(2).map_err(read)?;
        answers.push(Answer {
            index,
            outcome: row.try_get(1).map_err(read)?,
            version: StreamVersion(non_negative(
                "append",
                "a stream version append_batch returned",
                version,
            )?),
            first: row.try_get(3).map_err(read)?,
            last: row.try_get(4).map_err(read)?,
        });
    }
    Ok(answers)
}

/// Answers every append of a committed batch: successes and conflicts at once, replays after looking up the
/// stored events (committed now, so read through the pool).
async fn answer_all(store: &PostgresStore, batch: Vec<Request>, answers: Vec<Answer>) {
    let mut slots: Vec<Option<Answer>> = batch.iter().map(|_| None).collect();
    for answer in answers {
        let index = answer.index;
        if let Some(slot) = slots.get_mut(index) {
            *slot = Some(answer);
        }
    }
    if slots
        .iter()
        .any(|slot| slot.as_ref().is_some_and(|a| a.outcome == 0))
    {
        // Wakes this process's waiters and sends the NOTIFY (after the commit, coalesced), as a lone append does.
        store.appended(true);
    }
    let mut replays = Vec::new();
    for (request, slot) in batch.into_iter().zip(slots) {
        let Some(answer) = slot else {
            request.answer(Err(annals::Error::Backend {
                operation: "append",
                source: "append_batch committed without answering for this append; it may or may not be \
                         stored (sending it again with the same event ids is safe)"
                    .into(),
            }));
            continue;
        };
        match answer.outcome {
            0 => {
                let result = appended(&answer);
                request.answer(result);
            }
            1 => {
                let error = annals::Error::Conflict {
                    stream: request.stream.clone(),
                    expected: request.expected,
                    actual: answer.version,
                };
                request.answer(Err(error));
            }
            _ => replays.push((request, answer.version)),
        }
    }
    for (request, current) in replays {
        let ids: Vec<Uuid> = request.events.iter().map(|e| e.event_id.0).collect();
        let result = match store.events_by_ids(store.pool(), &ids).await {
            Ok(stored) => resolve_replayed_append(
                &request.stream,
                request.expected,
                &request.events,
                &stored,
                current,
            ),
            Err(error) => Err(error),
        };
        request.answer(result);
    }
}

/// The result of an append `append_events` made.
fn appended(answer: &Answer) -> annals::Result<AppendResult> {
    Ok(AppendResult {
        stream_version: answer.version,
        first_position: position(answer.first, "r_first_position")?,
        last_position: position(answer.last, "r_last_position")?,
    })
}

/// A position `append_batch` returned for an appended batch: present and positive.
fn position(raw: Option<i64>, which: &str) -> annals::Result<Position> {
    match raw {
        Some(raw) if raw > 0 => Ok(Position(non_negative("append", which, raw)?)),
        _ => Err(annals::Error::Backend {
            operation: "append",
            source: format!("append_batch returned {which} {raw:?} for an appended batch").into(),
        }),
    }
}

/// The batch as the column arrays `append_batch` takes: per append, then every event of every append in order.
struct Columns<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    counts: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<Json<&'a serde_json::Value>>,
    metadata: Vec<Option<Json<&'a Metadata>>>,
}

impl<'a> Columns<'a> {
    fn new(batch: &'a [Request]) -> annals::Result<Self> {
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        let mut columns = Self {
            streams: Vec::with_capacity(batch.len()),
            expected: Vec::with_capacity(batch.len()),
            counts: Vec::with_capacity(batch.len()),
            ids: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
        };
        // `check_append` ran before queueing, so these conversions hold; if one did not, the batch is sent one
        // append at a time and the store reports the precise error.
        let too_big = |stream: &StreamId| annals::Error::InvalidAppend {
            stream: stream.clone(),
            reason: "the batch is too large for the PostgreSQL store".to_owned(),
        };
        for request in batch {
            columns.streams.push(request.stream.as_str());
            columns.expected.push(expected_code(request.expected));
            columns
                .counts
                .push(i32::try_from(request.events.len()).map_err(|_| too_big(&request.stream))?);
            for event in &request.events {
                columns.ids.push(event.event_id.0);
                columns.types.push(&event.event_type);
                columns.schema_versions.push(
                    i32::try_from(event.schema_version).map_err(|_| too_big(&request.stream))?,
                );
                columns.payloads.push(Json(&event.payload));
                let m = &event.metadata;
                let empty =
                    m.correlation_id.is_none() && m.causation_id.is_none() && m.extra.is_empty();
                columns.metadata.push((!empty).then_some(Json(m)));
            }
        }
        Ok(columns)
    }
}
