//! Connections left inside a transaction by another user of a shared pool.
//!
//! The store's own statements are single statements in autocommit (or run in a transaction the store begins
//! and ends itself), so they assume a connection outside any transaction. A connection that an application
//! put back into a shared pool after a plain `BEGIN` without `COMMIT` breaks that: an append on it reports
//! success without committing, and its gap marker stays held until that transaction ends, stopping every reader
//! of the global order below it. sqlx tracks only the transactions begun through its own API, and does not
//! publish the transaction status the server reports after every statement, so the store asks the server once
//! per connection it takes from the pool (a connection it holds between its own operations is known to be
//! clean): in a simple query, `statement_timestamp()` is the query's start and, outside a transaction block,
//! the transaction it runs in starts with it, so the two are equal; inside a block opened by an earlier query,
//! `transaction_timestamp()` is that earlier query's start. The round trip also proves the connection alive.
//! A connection found inside a transaction, or dead, is closed (the server rolls the transaction back) and
//! another one is taken.

use sqlx::Row;
use sqlx::pool::PoolConnection;

use crate::failure::store_error;

/// True outside a transaction block, false inside one (see the module's documentation).
const OUTSIDE_A_TRANSACTION: &str =
    "SELECT pg_catalog.statement_timestamp() = pg_catalog.transaction_timestamp()";

/// What the probe found on a connection.
pub(super) enum Probe {
    /// Outside any transaction: fit for the store's statements.
    Clean(PoolConnection<sqlx::Postgres>),
    /// Inside a transaction left open by another user of the pool; closed.
    InTransaction,
    /// The probe failed (the connection is dead, most likely); closed.
    Failed(annals::Error),
}

/// Asks the server whether `conn` is outside any transaction; closes it when it is not, or when it does not
/// answer.
pub(super) async fn probe(
    mut conn: PoolConnection<sqlx::Postgres>,
    operation: &'static str,
) -> Probe {
    let answer = sqlx::raw_sql(OUTSIDE_A_TRANSACTION)
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get::<bool, _>(0));
    match answer {
        Ok(true) => Probe::Clean(conn),
        Ok(false) => {
            tracing::warn!(
                operation,
                "a pooled connection was inside a transaction another user of the pool left open; closing it \
                 (which rolls that transaction back) and taking another"
            );
            conn.close_on_drop();
            Probe::InTransaction
        }
        Err(error) => {
            conn.close_on_drop();
            Probe::Failed(store_error(operation, error))
        }
    }
}

/// The error when every connection the pool handed out in `tries` tries was inside a transaction.
pub(super) fn refused(operation: &'static str, tries: u32) -> annals::Error {
    annals::Error::Backend {
        operation,
        source: format!(
            "each of the {tries} connections the pool handed out was inside a transaction that another user of \
             the pool left open (a BEGIN without COMMIT or ROLLBACK); the store closed them rather than write \
             into those transactions: end every transaction before its connection goes back to the pool"
        )
        .into(),
    }
}
