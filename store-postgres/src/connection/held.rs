//! Connections the store keeps between its own operations instead of handing them back to the pool.
//!
//! sqlx pings every connection that goes back to its pool, in a task it spawns: a round trip to the server, a
//! task and about 13,000 instructions per command, on the client and on the server, for a connection that the
//! next command takes out again a moment later. So after a stream read or an append that succeeded, the store
//! keeps the connection (still checked out of the pool, so it still counts against the pool's size) for its
//! next stream read or append, and hands it back to the pool only when it is not needed:
//!
//! - it is held only while the pool could still serve another checkout at once (an idle connection, or room to
//!   open one), so the store never takes the last connection from the pool's other users;
//! - a connection that sat unused for [`HELD_IDLE`] goes back to the pool (a sweeper task looks every
//!   [`HELD_IDLE`] while any is held, and stops when none is);
//! - a connection out of the pool for longer than [`HELD_AWAY`] goes back at its next release, so the pool's
//!   lifetime rules (`max_lifetime`, `idle_timeout`) still apply to it;
//! - only a connection whose operation succeeded is kept, so it is idle, outside any transaction and in a known
//!   state; any failure, or a cancelled operation, hands it to the pool, which tests it and closes it if needed;
//! - a connection found dead makes the store give back every connection it holds: after a server restart or a
//!   network cut they are all dead, and the retry must not find another one.
//!
//! A held connection is not pinged before its next use, as the store's pool does not ping before acquire
//! either (`reconnect.rs`): a dead one is replaced once by a connection that just answered a ping, and appends
//! are idempotent by event id. On a pool that does ping before every acquire the store holds nothing.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// How long a held connection may sit unused before it goes back to the pool.
pub(crate) const HELD_IDLE: Duration = Duration::from_millis(100);

/// How long a connection may stay out of the pool, used again and again by the store, before it goes back.
pub(crate) const HELD_AWAY: Duration = Duration::from_secs(60);

/// A connection checked out of the pool for the store's own use, and since when it has been out.
pub(crate) struct Checkout {
    conn: PoolConnection<Postgres>,
    out_since: Instant,
}

impl Checkout {
    /// A connection just taken from the pool.
    pub(crate) fn new(conn: PoolConnection<Postgres>) -> Self {
        Self {
            conn,
            out_since: Instant::now(),
        }
    }

    /// Closes the connection when it is dropped instead of returning it to the pool (it is known to be broken).
    pub(crate) fn close_on_drop(&mut self) {
        self.conn.close_on_drop();
    }
}

impl Deref for Checkout {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// The connections a store holds between operations (shared by its clones).
#[derive(Default)]
pub(crate) struct HeldConnections {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Most recently used last.
    idle: Vec<(Checkout, Instant)>,
    /// The task handing long-unused connections back, while any is held.
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl HeldConnections {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used held connection, if any.
    pub(crate) fn take(&self) -> Option<Checkout> {
        self.state().idle.pop().map(|(checkout, _)| checkout)
    }

    /// Keeps `checkout`, whose last operation succeeded, for the next operation, or hands it back to `pool`
    /// (see the module's rules). Outside any runtime (a command session dropped after its runtime ended) the
    /// connection is closed instead: the pool's release needs a runtime.
    pub(crate) fn keep(self: &Arc<Self>, pool: &PgPool, checkout: Checkout) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // sqlx's release spawns a task, and panics without a runtime: close the connection instead.
            drop(checkout.conn.leak());
            return;
        };
        let options = pool.options();
        if !spare(pool.num_idle(), pool.size(), options.get_max_connections())
            || pool.is_closed()
            || checkout.out_since.elapsed() >= HELD_AWAY
            || options.get_test_before_acquire()
        {
            return;
        }
        let mut state = self.state();
        state.idle.push((checkout, Instant::now()));
        if state.sweeper.as_ref().is_none_or(|task| task.is_finished()) {
            state.sweeper = Some(runtime.spawn(sweep(Arc::downgrade(self))));
        }
    }

    /// Hands every held connection back to the pool (one was found dead: the others may be too).
    pub(crate) fn give_all_back(&self) {
        let idle = std::mem::take(&mut self.state().idle);
        drop(idle);
    }
}

impl Drop for HeldConnections {
    /// Without a runtime (the store outlived the runtime its connections were made on) a pooled connection
    /// cannot go back to the pool, whose release spawns a task (and panics without a runtime): each one is
    /// closed instead. The pool does not get its place back, but a pool whose runtime is gone is of no use
    /// anyway.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (checkout, _) in state.idle.drain(..) {
            drop(checkout.conn.leak());
        }
    }
}

/// Whether a pool with `idle` idle connections, `size` open and room for `max` could serve another checkout
/// at once, were the store to hold one more.
fn spare(idle: usize, size: u32, max: u32) -> bool {
    idle > 0 || size < max
}

/// Every [`HELD_IDLE`], hands back the connections unused for that long; ends when none is held or the store is
/// gone.
async fn sweep(held: Weak<HeldConnections>) {
    loop {
        tokio::time::sleep(HELD_IDLE).await;
        let Some(held) = held.upgrade() else {
            return;
        };
        let stale = {
            let mut state = held.state();
            let cut = state
                .idle
                .partition_point(|(_, since)| since.elapsed() >= HELD_IDLE);
            let stale: Vec<_> = state.idle.drain(..cut).collect();
            if state.idle.is_empty() {
                state.sweeper = None;
                drop(state);
                drop(stale);
                return;
            }
            stale
        };
        drop(stale);
    }
}

#[cfg(test)]
mod tests {
    use super::spare;

    #[test]
    fn the_store_never_holds_the_pools_last_connection() {
        // One connection, checked out by the store: nobody else could get one.
        assert!(!spare(0, 1, 1));
        // Every connection open and out: holding one more would make the next checkout wait.
        assert!(!spare(0, 10, 10));
        // An idle connection left, or room to open one.
        assert!(spare(1, 10, 10));
        assert!(spare(0, 3, 10));
    }
}
