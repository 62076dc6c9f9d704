//! One attempt at applying a batch of deliveries: a transaction that locks the batch's streams in the order
//! fence, records an inbox row per delivery it applies, runs the handler for each new one, proves it is still
//! the inbox's live transaction, and commits; and how a failed attempt is classified.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, PgConnection};

use super::fence::{self, Verdict};
use super::transient::{is_transient_cause, is_transient_sqlx, sqlstate};
use super::{Delivery, Handler, HandlerError, Inbox};
use crate::error::Error;

/// What an attempt that did not fail did with each delivery, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// The handler ran and its transaction, inbox row included, committed.
    Applied,
    /// The inbox row was there already: nothing ran.
    Duplicate,
    /// An earlier event of its stream is not applied yet: nothing recorded, hand it back.
    Held,
}

/// Why an attempt failed; nothing of it was committed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Retrying later may succeed: a transient database error (deadlock, serialization failure, lock or
    /// statement timeout, lost connection), in the handler or in the inbox's own statements. Never counted
    /// toward the attempts, never parked.
    Transient(Error),
    /// The handler's own failure (for the delivery at `index` of the batch, when known), or a transaction it
    /// left unable to commit (`index` unknown): counted toward the attempts.
    Permanent {
        /// The delivery whose handler failed, when known.
        index: Option<usize>,
        /// What failed.
        cause: String,
    },
}

impl Failure {
    fn permanent(cause: impl Into<String>) -> Self {
        Self::Permanent {
            index: None,
            cause: cause.into(),
        }
    }
}

impl<H: Handler> Inbox<H> {
    /// Runs `batch` once, in one transaction; nothing is acknowledged here.
    pub(super) async fn attempt(
        &self,
        batch: &[&Delivery<H::Event>],
    ) -> Result<Vec<Attempt>, Failure> {
        let schema = &self.options.schema;
        let mut tx = self.pool.begin().await.map_err(own("begin"))?;
        let mut streams: Vec<&str> = batch.iter().map(|d| d.headers.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let (marks, xid) = fence::lock(
            &mut tx,
            schema,
            &self.name,
            &streams,
            self.options.gap_wait(),
        )
        .await
        .map_err(classify_own)?;
        let keys: Vec<(&str, u64)> = batch
            .iter()
            .map(|d| (d.headers.stream_id.as_str(), d.headers.stream_version.0))
            .collect();
        let (verdicts, updates) = fence::plan(&keys, &marks);
        let applying: Vec<&Delivery<H::Event>> = batch
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v == Verdict::Apply)
            .map(|(d, _)| *d)
            .collect();
        let mut new = self.record(&mut tx, &applying).await?;
        let mut outcome = Vec::with_capacity(batch.len());
        for (index, (delivery, verdict)) in batch.iter().zip(&verdicts).enumerate() {
            if *verdict == Verdict::Hold {
                outcome.push(Attempt::Held);
            } else if new.remove(&delivery.headers.event_id.0) {
                if let Err(e) = self.handler.handle(delivery, &mut tx).await {
                    return Err(handler_failure(e, index));
                }
                outcome.push(Attempt::Applied);
            } else {
                outcome.push(Attempt::Duplicate);
            }
        }
        fence::write(&mut tx, schema, &self.name, &updates)
            .await
            .map_err(check_failure)?;
        self.prove(&mut tx, &applying, xid).await?;
        tx.commit().await.map_err(|e| {
            if is_transient_sqlx(&e) {
                // The outcome is unknown: the redelivery finds the inbox rows if the commit went through.
                own("commit")(e)
            } else {
                Failure::permanent(format!("the commit failed: {e}"))
            }
        })?;
        Ok(outcome)
    }

    /// Inserts the inbox rows; returns the event ids that were not there yet (the others are duplicates).
    async fn record(
        &self,
        conn: &mut PgConnection,
        batch: &[&Delivery<H::Event>],
    ) -> Result<HashSet<uuid::Uuid>, Failure> {
        if batch.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<uuid::Uuid> = batch.iter().map(|d| d.headers.event_id.0).collect();
        let streams: Vec<&str> = batch.iter().map(|d| d.headers.stream_id.as_str()).collect();
        let versions: Vec<i64> = batch
            .iter()
            .map(|d| i64::try_from(d.headers.stream_version.0).unwrap_or(i64::MAX))
            .collect();
        let positions: Vec<i64> = batch
            .iter()
            .map(|d| i64::try_from(d.headers.position.get()).unwrap_or(i64::MAX))
            .collect();
        let inserted: Vec<uuid::Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} (consumer, event_id, stream_id, stream_version, position) \
             SELECT $1, e, s, v, p FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::bigint[]) AS r(e, s, v, p) \
             ON CONFLICT DO NOTHING RETURNING event_id",
            self.table("inbox")
        )))
        .bind(&self.name)
        .bind(ids)
        .bind(streams)
        .bind(versions)
        .bind(positions)
        .fetch_all(conn)
        .await
        .map_err(own("record in inbox"))?;
        Ok(inserted.into_iter().collect())
    }

    /// Proves, after the handlers and before `COMMIT`, that the transaction is still the inbox's and alive.
    ///
    /// PostgreSQL answers `COMMIT` in an aborted transaction with `ROLLBACK`, which the driver reports as a
    /// success: a handler that swallowed a failed statement would have its messages acknowledged with neither
    /// their effects nor their inbox rows. A statement here fails instead (`25P02`); and a handler that ended
    /// the transaction itself shows as missing inbox rows or another transaction id.
    async fn prove(
        &self,
        conn: &mut PgConnection,
        applying: &[&Delivery<H::Event>],
        xid: i64,
    ) -> Result<(), Failure> {
        let ids: HashSet<uuid::Uuid> = applying.iter().map(|d| d.headers.event_id.0).collect();
        let ids: Vec<uuid::Uuid> = ids.into_iter().collect();
        let (found_xid, rows): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT txid_current(), count(*) FROM {} WHERE consumer = $1 AND event_id = ANY($2)",
            self.table("inbox")
        )))
        .bind(&self.name)
        .bind(&ids)
        .fetch_one(conn)
        .await
        .map_err(check_failure)?;
        if found_xid == xid && usize::try_from(rows).is_ok_and(|n| n == ids.len()) {
            Ok(())
        } else {
            Err(Failure::permanent(
                "the handler ended the inbox's transaction (a COMMIT or ROLLBACK of its own): the inbox rows \
                 are not in the transaction it began",
            ))
        }
    }
}

/// How a statement of the inbox's after the handlers failed: an aborted transaction is a handler's swallowed
/// error (permanent, culprit unknown), a transient error is transient, anything else permanent.
fn check_failure(e: sqlx::Error) -> Failure {
    match sqlstate(&e).as_deref() {
        Some("25P02") => Failure::permanent(format!(
            "its transaction was aborted by a statement that failed although the handler returned Ok \
             (a swallowed SQL error; SQLSTATE 25P02): nothing was committed ({e})"
        )),
        _ if is_transient_sqlx(&e) => own("check the transaction before commit")(e),
        _ => Failure::permanent(format!(
            "its transaction cannot be checked before commit: {e}"
        )),
    }
}

/// A failure of one of the inbox's own statements: transient for the inbox (the run loop retries it, as for
/// any database error of its own).
fn own(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Failure {
    move |source| Failure::Transient(Error::Database { operation, source })
}

/// The fence's lock failed: its statement is the inbox's own, so the failure is transient.
fn classify_own(e: Error) -> Failure {
    Failure::Transient(e)
}

/// Classifies the error of the handler of the batch's delivery `index`: transient when it is, or was caused
/// by, a transient database error.
fn handler_failure(e: HandlerError, index: usize) -> Failure {
    if is_transient_cause(&*e) {
        Failure::Transient(Error::HandlerTransient { source: e })
    } else {
        Failure::Permanent {
            index: Some(index),
            cause: e.to_string(),
        }
    }
}
