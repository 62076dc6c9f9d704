//! Recognising a connection that is gone, as opposed to a statement that failed on a live one.

use crate::failure::sqlstate;

/// Whether `error` says that the connection itself is gone (closed or reset, or terminated by the server), as
/// opposed to the statement failing on a live connection.
pub(crate) fn connection_lost(error: &annals::Error) -> bool {
    let annals::Error::Unavailable { source, .. } = error else {
        return false;
    };
    match source.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)) => true,
        Some(db @ sqlx::Error::Database(_)) => sqlstate(db).is_some_and(|code| {
            // connection exception; admin shutdown (pg_terminate_backend); crash shutdown
            code.starts_with("08") || code == "57P01" || code == "57P02"
        }),
        _ => false,
    }
}
