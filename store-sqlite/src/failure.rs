//! How driver errors become [`annals::Error`]s, in one place: by SQLite's result code, never by message text;
//! and the bounded, backed-off retry of operations that found the file busy.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a failure of the driver means for the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transience {
    /// Another connection (maybe another process) holds a lock the operation needs (`SQLITE_BUSY`,
    /// `SQLITE_LOCKED` and their extended codes): trying again after a pause may succeed, and the store does so,
    /// a bounded number of times.
    Busy,
    /// The operation may succeed later, but not by trying again at once: the disk is full or failed an I/O, a
    /// connection's worker thread died, no connection could be had in time. The caller decides
    /// ([`annals::Error::Unavailable`]).
    Transient,
    /// Retrying will not help: a constraint, a corrupt or foreign file, a read-only file, a bug
    /// ([`annals::Error::Backend`]).
    Permanent,
}

// SQLite's primary result codes (the low byte of an extended code), https://www.sqlite.org/rescode.html.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_FULL: i64 = 13;
const SQLITE_PROTOCOL: i64 = 15;

/// SQLite's extended result code of `error`, if it is a database error.
pub(crate) fn result_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse().ok()),
        _ => None,
    }
}

/// What `error` means for the operation that met it.
pub(crate) fn transience(error: &sqlx::Error) -> Transience {
    match error {
        sqlx::Error::Database(_) => match result_code(error).map(|code| code & 0xff) {
            Some(SQLITE_BUSY | SQLITE_LOCKED) => Transience::Busy,
            Some(SQLITE_NOMEM | SQLITE_IOERR | SQLITE_FULL | SQLITE_PROTOCOL) => {
                Transience::Transient
            }
            _ => Transience::Permanent,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => Transience::Transient,
        _ => Transience::Permanent,
    }
}

/// Whether `error` says the file cannot be written or opened for writing: `SQLITE_READONLY` (a read-only file,
/// or a directory in which the `-wal` and `-shm` files cannot be created) or `SQLITE_CANTOPEN` (the file or one
/// of its companions cannot be opened or created).
pub(crate) fn is_not_writable(error: &sqlx::Error) -> bool {
    matches!(
        result_code(error).map(|code| code & 0xff),
        Some(SQLITE_READONLY | SQLITE_CANTOPEN)
    )
}

/// A driver error met on the store's file: the source of every [`annals::Error::Unavailable`] and
/// [`annals::Error::Backend`] a [`SqliteStore`](crate::SqliteStore) returns for a failure of SQLite, so that the
/// message names the file (a full disk, a file made read-only, a corrupt page).
#[derive(Debug, thiserror::Error)]
#[error("{source} (SQLite file {path:?})")]
pub struct FileError {
    path: PathBuf,
    source: sqlx::Error,
}

impl FileError {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The driver's error (`sqlx::Error::Database` carries SQLite's extended result code).
    pub fn driver_error(&self) -> &sqlx::Error {
        &self.source
    }
}

/// `error` as the caller sees it: a driver error inside [`annals::Error::Unavailable`] or
/// [`annals::Error::Backend`] becomes a [`FileError`] naming `path`; everything else is returned as it is.
pub(crate) fn on_file(path: &Path, error: annals::Error) -> annals::Error {
    let named = |source: annals::BoxError| match source.downcast::<sqlx::Error>() {
        Ok(source) => Box::new(FileError {
            path: path.to_owned(),
            source: *source,
        }) as annals::BoxError,
        Err(other) => other,
    };
    match error {
        annals::Error::Unavailable { operation, source } => annals::Error::Unavailable {
            operation,
            source: named(source),
        },
        annals::Error::Backend { operation, source } => annals::Error::Backend {
            operation,
            source: named(source),
        },
        other => other,
    }
}

/// Maps a driver error of `operation` to the store error a caller can act on: busy and transient failures are
/// [`annals::Error::Unavailable`] (retryable), everything else [`annals::Error::Backend`].
pub(crate) fn store_error(operation: &'static str, error: sqlx::Error) -> annals::Error {
    match transience(&error) {
        Transience::Busy | Transience::Transient => annals::Error::Unavailable {
            operation,
            source: Box::new(error),
        },
        Transience::Permanent => annals::Error::Backend {
            operation,
            source: Box::new(error),
        },
    }
}

/// Whether `error` is a [`store_error`] made of a busy driver error.
pub(crate) fn is_busy(error: &annals::Error) -> bool {
    match error {
        annals::Error::Unavailable { source, .. } => source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(|e| transience(e) == Transience::Busy),
        _ => false,
    }
}

/// The pauses between tries of a busy operation: up to 20 ms, doubling to at most 480 ms, each between half and
/// all of that (jittered), so that processes that met at a lock do not meet again.
pub(crate) const BUSY_PAUSES: annals::RetryPolicy =
    annals::RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(480), 0);

/// Runs `attempt` until it succeeds, fails with anything but a busy file, or has been retried `retries` times
/// after busy failures (pausing by [`BUSY_PAUSES`]). Every attempt must be safe to repeat: reads are, a write
/// transaction that failed was rolled back, and appends are idempotent by event id.
pub(crate) async fn retry_busy<T, F, Fut>(
    operation: &'static str,
    retries: u32,
    attempt: F,
) -> annals::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = annals::Result<T>>,
{
    retry(operation, retries, is_busy, attempt).await
}

/// [`retry_busy`] for any error type, with `busy` telling which errors are worth another try.
pub(crate) async fn retry<T, E, F, Fut>(
    operation: &'static str,
    retries: u32,
    busy: impl Fn(&E) -> bool,
    attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    BUSY_PAUSES
        .with_retries(retries)
        .retry(attempt, busy, |error, pause| {
            tracing::debug!(operation, %error, ?pause, "the file is busy; trying again");
        })
        .await
}

/// A count, version or position SQLite returned as an `INTEGER`, which must not be negative: a negative one
/// means a corrupt row, and is an error naming `what`, never clamped to 0.
pub(crate) fn non_negative(operation: &'static str, what: &str, value: i64) -> annals::Result<u64> {
    u64::try_from(value).map_err(|_| annals::Error::Backend {
        operation,
        source: format!("{what} is {value}, which is impossible: the file holds a corrupt row")
            .into(),
    })
}

/// A version, position or limit as the `INTEGER` SQLite compares it with: one beyond `i64::MAX` cannot be
/// stored, so it stands for "beyond every stored value" (`i64::MAX`), as on PostgreSQL.
pub(crate) fn sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_worker_failures_are_retryable_and_others_are_not() {
        assert!(store_error("append", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(store_error("append", sqlx::Error::WorkerCrashed).is_retryable());
        assert!(!store_error("append", sqlx::Error::RowNotFound).is_retryable());
        assert!(!is_busy(&store_error("append", sqlx::Error::PoolTimedOut)));
    }

    #[test]
    fn driver_errors_name_the_file_and_keep_their_kind() {
        let path = Path::new("/data/events.db");
        let error = on_file(path, store_error("append", sqlx::Error::PoolTimedOut));
        assert!(error.is_retryable());
        assert!(error.to_string().contains("/data/events.db"), "{error}");
        let error = on_file(path, store_error("append", sqlx::Error::RowNotFound));
        assert!(matches!(error, annals::Error::Backend { .. }));
        assert!(error.to_string().contains("/data/events.db"), "{error}");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(BUSY_PAUSES.pause(0) >= Duration::from_millis(10));
        assert!(BUSY_PAUSES.pause(0) <= Duration::from_millis(20));
        assert!(BUSY_PAUSES.pause(2) >= Duration::from_millis(40));
        assert!(BUSY_PAUSES.pause(40) <= Duration::from_millis(480));
        assert_eq!(BUSY_PAUSES.with_retries(7).pauses().count(), 7);
    }
}
