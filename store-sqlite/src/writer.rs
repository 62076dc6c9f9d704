//! Write transactions on the store's writer connection, and what a failed one leaves behind.
//!
//! When a statement fails with `SQLITE_FULL`, `SQLITE_IOERR`, `SQLITE_NOMEM` (and in some cases `SQLITE_BUSY`),
//! SQLite may roll the whole transaction back by itself. sqlx's transaction bookkeeping does not see that: the
//! rollback it issues when the transaction is dropped then fails ("no transaction is active"), its count of open
//! transactions stays at one, and every later `BEGIN IMMEDIATE` on that connection is refused
//! (`InvalidSavePointStatement`): one full disk would disable the store's single writer for good. So a
//! connection whose write failed with a driver error is closed instead of going back to the pool, which opens a
//! fresh one for the next write.

use sqlx::SqliteConnection;
use sqlx::SqlitePool;

use crate::failure::store_error;

/// Whether `error` came from the driver (a [`store_error`]), as opposed to a refusal the store decided on (a
/// conflict, a replay, invalid input) after which the connection is as sound as before.
fn from_driver(error: &annals::Error) -> bool {
    match error {
        annals::Error::Unavailable { source, .. } | annals::Error::Backend { source, .. } => {
            source.is::<sqlx::Error>()
        }
        _ => false,
    }
}

/// Runs `work` (which begins, and commits or drops, its own transaction) on the writer connection of `pool`;
/// after a driver error the connection is closed, not returned to the pool.
pub(crate) async fn write<T>(
    pool: &SqlitePool,
    operation: &'static str,
    work: impl AsyncFnOnce(&mut SqliteConnection) -> annals::Result<T>,
) -> annals::Result<T> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| store_error(operation, e))?;
    let result = work(&mut conn).await;
    if result.as_ref().is_err_and(from_driver) {
        conn.close_on_drop();
    }
    result
}
