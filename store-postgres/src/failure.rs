//! How driver errors become [`annals::Error`]s: by SQLSTATE and constraint name, never by message text.

use std::borrow::Cow;

/// The unique constraint on event ids (see the migration).
pub(crate) const EVENT_ID_KEY: &str = "events_event_id_key";
/// The unique constraint on (stream id, stream version).
pub(crate) const STREAM_VERSION_KEY: &str = "events_stream_version_key";

/// A count or position PostgreSQL returned as a `bigint`, which must not be negative: a negative one means a
/// corrupt row (written by hand) or a broken function, and is an error naming `what`, never clamped to 0.
pub(crate) fn non_negative(operation: &'static str, what: &str, value: i64) -> annals::Result<u64> {
    u64::try_from(value).map_err(|_| annals::Error::Backend {
        operation,
        source: format!(
            "{what} is {value}, which is impossible: the events table holds a corrupt row"
        )
        .into(),
    })
}

/// [`non_negative`] for a hot path: `what` is only formatted when `value` is negative.
pub(crate) fn non_negative_named(
    operation: &'static str,
    value: i64,
    what: impl FnOnce() -> String,
) -> annals::Result<u64> {
    match u64::try_from(value) {
        Ok(value) => Ok(value),
        Err(_) => non_negative(operation, &what(), value),
    }
}

/// Maps a driver error of `operation` to the store error a caller can act on.
pub(crate) fn store_error(operation: &'static str, error: sqlx::Error) -> annals::Error {
    if is_transient(&error) {
        annals::Error::Unavailable {
            operation,
            source: Box::new(error),
        }
    } else {
        annals::Error::Backend {
            operation,
            source: Box::new(error),
        }
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<Cow<'_, str>> {
    match error {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    }
}

/// The unique constraint a unique violation broke, if `error` is one.
pub(crate) fn violated_unique(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if sqlstate(error).as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

/// Whether retrying the operation may succeed: the connection broke or could not be had, the server is
/// shutting down or out of resources, or the transaction lost a serialization race or a deadlock.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(_) => sqlstate(error).is_some_and(|code| {
            let code = code.as_ref();
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources (too many connections, out of memory, disk full)
                || code.starts_with("57P") // admin/crash shutdown, cannot connect now, database dropped
                || code == "57014" // query canceled (statement timeout)
                || code == "40001" // serialization failure
                || code == "40P01" // deadlock detected
                || code == "55P03" // lock not available (lock timeout)
                || code == "25006" // read-only transaction (a standby during fail-over)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_failures_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(store_error("append", sqlx::Error::Io(io)).is_retryable());
        assert!(store_error("append", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!store_error("append", sqlx::Error::RowNotFound).is_retryable());
    }
}
