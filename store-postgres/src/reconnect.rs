//! Dead pooled connections. The store's pool does not ping a connection before handing it out (that would cost a
//! round trip per operation), so a connection the server or the network dropped while it sat idle is found dead
//! on its next use. An operation that fails that way before the server could have done anything observable is
//! retried once here, on a connection that has just answered a ping; appends are idempotent by event id, so even
//! an append whose commit was acknowledged to nobody is safe to send again.

use crate::failure::{sqlstate, store_error};
use crate::held::Checkout;
use crate::store::PostgresStore;

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

impl PostgresStore {
    /// A connection for a stream read or an append: the one the store held back after its last operation
    /// (`held.rs`), else an idle one taken from the pool at once when the pool does not ping before acquire (then
    /// acquiring would run no check on it either, except a `before_acquire` hook, which this skips), otherwise
    /// sqlx's `acquire`, which waits for one or opens one. sqlx's acquire future is about 14 KB (it holds a whole
    /// connection attempt) and moving it into a box costs a copy of all of it, so the common case avoids it; when
    /// it is needed it is boxed, so the futures holding it stay small.
    pub(crate) async fn checkout(&self, operation: &'static str) -> annals::Result<Checkout> {
        if let Some(held) = self.inner.held.take() {
            return Ok(held);
        }
        if !self.pool.options().get_test_before_acquire()
            && let Some(idle) = self.pool.try_acquire()
        {
            return Ok(Checkout::new(idle));
        }
        Box::pin(self.pool.acquire())
            .await
            .map(Checkout::new)
            .map_err(|e| store_error(operation, e))
    }

    /// Keeps `checkout`, whose operation succeeded, for the store's next stream read or append, or hands it
    /// back to the pool (`held.rs` says when).
    pub(crate) fn keep(&self, checkout: Checkout) {
        self.inner.held.keep(&self.pool, checkout);
    }

    /// A pooled connection that answered a ping just now. The connections the store holds are handed back first
    /// (one was found dead, so they may all be). Idle connections that fail the ping are closed and the next one
    /// is tried, at most once per connection the pool may hold (and once more for a new one).
    pub(crate) async fn fresh_connection(
        &self,
        operation: &'static str,
    ) -> annals::Result<Checkout> {
        self.inner.held.give_all_back();
        let tries = self.pool.options().get_max_connections().saturating_add(1);
        let mut last = sqlx::Error::PoolTimedOut;
        for _ in 0..tries {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(|e| store_error(operation, e))?;
            match sqlx::Connection::ping(&mut *conn).await {
                Ok(()) => return Ok(Checkout::new(conn)),
                Err(error) => {
                    conn.close_on_drop();
                    last = error;
                }
            }
        }
        Err(store_error(operation, last))
    }
}
