//! The store's connections, in a room of their own below the store: how an operation gets one (`Connections`:
//! a held one, an idle one, or sqlx's acquire), which are kept between operations (`held.rs`), how a dead one is
//! recognised and replaced (`lost.rs`), and how one left inside a transaction by another user of a shared pool
//! is refused (`clean.rs`). Nothing here knows the store; the store owns a [`Connections`].
//!
//! Dead pooled connections: the store's pool does not ping a connection before handing it out (that would cost
//! a round trip per operation), so a connection the server or the network dropped while it sat idle is found
//! dead on its next use. An operation that fails that way before the server could have done anything
//! observable is retried once on a connection that has just answered a ping ([`Connections::fresh`]); appends
//! are idempotent by event id, so even an append whose commit was acknowledged to nobody is safe to send again.

mod clean;
mod held;
mod lost;

use std::sync::Arc;

use sqlx::PgPool;
use sqlx::pool::PoolConnection;

use clean::Probe;
pub(crate) use held::Checkout;
use held::HeldConnections;
pub(crate) use lost::connection_lost;

use crate::failure::store_error;

/// The pool the store draws from and the connections it holds between its own operations.
pub(crate) struct Connections {
    pool: PgPool,
    held: Arc<HeldConnections>,
}

impl Connections {
    /// The connections of a store on `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            held: Arc::default(),
        }
    }

    /// A connection for a stream read or an append: the one the store held back after its last operation
    /// (`held.rs`), else an idle one taken from the pool at once when the pool does not ping before acquire (then
    /// acquiring would run no check on it either, except a `before_acquire` hook, which this skips), otherwise
    /// sqlx's `acquire`, which waits for one or opens one. A connection taken from the pool is checked to be
    /// outside any transaction first (`clean.rs`). sqlx's acquire future is about 14 KB (it holds a whole
    /// connection attempt) and moving it into a box costs a copy of all of it, so the common case avoids it;
    /// when it is needed it is boxed, so the futures holding it stay small.
    pub(crate) async fn checkout(&self, operation: &'static str) -> annals::Result<Checkout> {
        if let Some(held) = self.held.take() {
            return Ok(held);
        }
        Box::pin(self.checkout_clean(operation)).await
    }

    /// A connection from the pool that answers and is outside any transaction (`clean.rs`), closing those that
    /// do not or are not, at most once per connection the pool may hold (and once more for a new one).
    async fn checkout_clean(&self, operation: &'static str) -> annals::Result<Checkout> {
        let tries = self.pool.options().get_max_connections().saturating_add(1);
        let mut failed = None;
        for _ in 0..tries {
            let conn = self.take_from_pool(operation).await?;
            match clean::probe(conn, operation).await {
                Probe::Clean(conn) => return Ok(Checkout::new(conn)),
                Probe::InTransaction => {}
                Probe::Failed(error) => failed = Some(error),
            }
        }
        Err(failed.unwrap_or_else(|| clean::refused(operation, tries)))
    }

    /// An idle connection at once when the pool does not ping before acquire, else sqlx's `acquire`.
    async fn take_from_pool(
        &self,
        operation: &'static str,
    ) -> annals::Result<PoolConnection<sqlx::Postgres>> {
        if !self.pool.options().get_test_before_acquire()
            && let Some(idle) = self.pool.try_acquire()
        {
            return Ok(idle);
        }
        self.pool
            .acquire()
            .await
            .map_err(|e| store_error(operation, e))
    }

    /// Keeps `checkout`, whose operation succeeded, for the store's next stream read or append, or hands it
    /// back to the pool (`held.rs` says when).
    pub(crate) fn keep(&self, checkout: Checkout) {
        self.held.keep(&self.pool, checkout);
    }

    /// Hands every held connection back to the pool (one was found dead: the others may be too).
    pub(crate) fn give_all_back(&self) {
        self.held.give_all_back();
    }

    /// A pooled connection that answered just now and is outside any transaction (`clean.rs`'s probe is the
    /// ping). The connections the store holds are handed back first (one was found dead, so they may all be).
    pub(crate) async fn fresh(&self, operation: &'static str) -> annals::Result<Checkout> {
        self.give_all_back();
        Box::pin(self.checkout_clean(operation)).await
    }
}
