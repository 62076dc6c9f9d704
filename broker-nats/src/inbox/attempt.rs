//! One attempt at applying a delivery: a transaction that records the inbox row, runs the handler, proves it
//! is still the inbox's live transaction, and commits; and how a failed attempt is classified.

use sqlx::{AssertSqlSafe, PgConnection};

use super::transient::{is_transient_cause, is_transient_sqlx, sqlstate};
use super::{Delivery, Handler, HandlerError, Inbox};
use crate::error::Error;

/// What an attempt that did not fail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// The handler ran and its transaction, inbox row included, committed.
    Applied,
    /// The inbox row was there already: nothing ran.
    Duplicate,
}

/// Why an attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Retrying later may succeed: a transient database error (deadlock, serialization failure, lock or
    /// statement timeout, lost connection), in the handler or in the inbox's own statements. Never counted
    /// toward the attempts, never parked.
    Transient(Error),
    /// The handler's own failure, or a transaction it left unable to commit: counted toward the attempts.
    Permanent(String),
}

impl<H: Handler> Inbox<H> {
    /// Runs `delivery` once, in a transaction of its own; nothing is acknowledged here.
    pub(super) async fn attempt(&self, delivery: &Delivery<H::Event>) -> Result<Attempt, Failure> {
        let mut tx = self.pool.begin().await.map_err(own("begin"))?;
        let Some(xid) = self.record(&mut tx, delivery).await? else {
            return Ok(Attempt::Duplicate);
        };
        if let Err(e) = self.handler.handle(delivery, &mut tx).await {
            return Err(handler_failure(e));
        }
        self.prove(&mut tx, delivery, xid).await?;
        tx.commit().await.map_err(|e| {
            if is_transient_sqlx(&e) {
                // The outcome is unknown: the redelivery finds the inbox row if the commit went through.
                own("commit")(e)
            } else {
                Failure::Permanent(format!("the commit failed: {e}"))
            }
        })?;
        Ok(Attempt::Applied)
    }

    /// Inserts the inbox row; returns the transaction's id, or `None` when the row was there (a duplicate).
    async fn record(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery<H::Event>,
    ) -> Result<Option<i64>, Failure> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} (consumer, event_id, stream_id, stream_version, position) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING txid_current()",
            self.table("inbox")
        )))
        .bind(&self.name)
        .bind(delivery.headers.event_id.0)
        .bind(delivery.headers.stream_id.as_str())
        .bind(i64::try_from(delivery.headers.stream_version.0).unwrap_or(i64::MAX))
        .bind(i64::try_from(delivery.headers.position.get()).unwrap_or(i64::MAX))
        .fetch_optional(conn)
        .await
        .map_err(own("record in inbox"))
    }

    /// Proves, after the handler and before `COMMIT`, that the transaction is still the inbox's and alive.
    ///
    /// PostgreSQL answers `COMMIT` in an aborted transaction with `ROLLBACK`, which the driver reports as a
    /// success: a handler that swallowed a failed statement would have its message acknowledged with neither
    /// its effects nor its inbox row. A statement here fails instead (`25P02`); and a handler that ended the
    /// transaction itself shows as a missing inbox row or another transaction id.
    async fn prove(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery<H::Event>,
        xid: i64,
    ) -> Result<(), Failure> {
        let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT txid_current() FROM {} WHERE consumer = $1 AND event_id = $2",
            self.table("inbox")
        )))
        .bind(&self.name)
        .bind(delivery.headers.event_id.0)
        .fetch_optional(conn)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            Some("25P02") => Failure::Permanent(format!(
                "its transaction was aborted by a statement that failed although the handler returned Ok \
                 (a swallowed SQL error; SQLSTATE 25P02): nothing was committed ({e})"
            )),
            _ if is_transient_sqlx(&e) => own("check the transaction before commit")(e),
            _ => Failure::Permanent(format!(
                "its transaction cannot be checked before commit: {e}"
            )),
        })?;
        match found {
            Some(id) if id == xid => Ok(()),
            _ => Err(Failure::Permanent(
                "the handler ended the inbox's transaction (a COMMIT or ROLLBACK of its own): the inbox row \
                 is not in the transaction it began"
                    .into(),
            )),
        }
    }
}

/// A failure of one of the inbox's own statements: transient for the inbox (the run loop retries it, as for
/// any database error of its own).
fn own(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Failure {
    move |source| Failure::Transient(Error::Database { operation, source })
}

/// Classifies a handler's error: transient when it is, or was caused by, a transient database error.
fn handler_failure(e: HandlerError) -> Failure {
    if is_transient_cause(&*e) {
        Failure::Transient(Error::HandlerTransient { source: e })
    } else {
        Failure::Permanent(e.to_string())
    }
}
