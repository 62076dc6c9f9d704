//! Waiting for new events: LISTEN/NOTIFY wake-ups, a NOTIFY sender kept off the append's commit path, and a
//! polling fallback that bounds what a lost notification can cost.
//!
//! Every store has one generation counter. Local appends bump it directly; a listener task (one connection per
//! store, started by the first waiter) bumps it for every notification from another process and after every
//! reconnect. A waiter subscribes to the counter *before* reading the head, so a bump between the two is not
//! lost, then sleeps until the counter moves or the poll interval passes, and reads the head again.
//!
//! A rolled-back append sends no notification, yet it may be what held a waiter back. So a waiter that found
//! nothing new also asks the store's watcher task (one per store, requests coalesce) to block until the oldest
//! append in flight ends, via the schema's `await_oldest_append`; when it does, the watcher bumps the counter.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use annals::Position;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, SqlStr};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::store::PostgresStore;

/// The default shortest time between two notifications of one store
/// ([`PostgresStore::with_notify_coalesce`]). An isolated append is announced at once; a burst is announced at
/// most every this often, which keeps NOTIFY traffic to at most 1,000 small transactions a second under load
/// while a waiter in another process learns of an append at most 1 ms late (10 ms cost the event feed's
/// consumers 5 ms of latency on average at a few hundred appends a second: `docs/benchmarks.md`, `feed`).
pub const DEFAULT_NOTIFY_COALESCE: Duration = Duration::from_millis(1);

/// The wake-up machinery one store (and its clones) shares with its background tasks.
pub(crate) struct Signals {
    /// The NOTIFY channel of the store's schema.
    channel: String,
    /// Payload of this store's own notifications, so its listener can ignore them (local waiters were woken
    /// directly).
    origin: String,
    /// Bumped whenever new events may be readable.
    generation: watch::Sender<u64>,
    /// Asks the sender task for one NOTIFY; requests made while one is in flight coalesce into one more.
    notify_request: Notify,
    /// Set when the store is dropped; background tasks end.
    shutdown: watch::Sender<bool>,
    /// Asks the watcher task to wait for the oldest append in flight to end.
    watch_request: Notify,
    listener_started: OnceLock<()>,
    sender_started: OnceLock<()>,
    watcher_started: OnceLock<()>,
}

impl Signals {
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            channel: crate::schema::channel(schema),
            origin: uuid::Uuid::now_v7().simple().to_string(),
            generation: watch::channel(0).0,
            notify_request: Notify::new(),
            shutdown: watch::channel(false).0,
            watch_request: Notify::new(),
            listener_started: OnceLock::new(),
            sender_started: OnceLock::new(),
            watcher_started: OnceLock::new(),
        }
    }

    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }
}

impl PostgresStore {
    /// Called after every append attempt that reached the database, committed or not: wakes local waiters
    /// (a failed append may have left a gap they can now pass) and, when enabled, asks for one NOTIFY.
    pub(crate) fn appended(&self, committed: bool) {
        let signals = &self.inner.signals;
        signals.bump();
        if committed && self.inner.config.notify {
            signals.sender_started.get_or_init(|| {
                tokio::spawn(
                    send_notifications(self.pool.clone(), self.inner.signals.clone(), self.inner.config.notify_coalesce)
                        .instrument(tracing::debug_span!("annals_postgres.notifier", channel = %signals.channel)),
                );
            });
            signals.notify_request.notify_one();
        }
    }

    /// Waits until the head is past `after` or `timeout` has passed; returns the head then.
    pub(crate) async fn wait_until_past(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        let signals = &self.inner.signals;
        signals.listener_started.get_or_init(|| {
            tokio::spawn(
                listen(self.pool.clone(), signals.clone(), self.poll_interval()).instrument(
                    tracing::debug_span!("annals_postgres.listener", channel = %signals.channel),
                ),
            );
        });
        let deadline = Instant::now().checked_add(timeout);
        let mut generation = signals.generation.subscribe();
        loop {
            generation.borrow_and_update();
            let head = self.safe_head().await?;
            if head > after {
                return Ok(head);
            }
            let now = Instant::now();
            let pause = match deadline {
                Some(deadline) if deadline <= now => return Ok(head),
                Some(deadline) => self.poll_interval().min(deadline - now),
                None => self.poll_interval(),
            };
            // Maybe an append in flight holds us back; learn at once when it ends, even by a rollback.
            signals.watcher_started.get_or_init(|| {
                tokio::spawn(
                    watch_open_appends(
                        self.pool.clone(),
                        signals.clone(),
                        self.inner.statements.await_oldest_append.clone(),
                        self.poll_interval(),
                    )
                    .instrument(
                        tracing::debug_span!("annals_postgres.watcher", schema = %self.schema()),
                    ),
                );
            });
            signals.watch_request.notify_one();
            // A timeout here is the polling fallback; the sender cannot close while `self` holds it.
            let _ = tokio::time::timeout(pause, generation.changed()).await;
        }
    }
}

/// Sends one NOTIFY per burst of local appends, after they committed, on a pool connection of its own. The
/// NOTIFY commits asynchronously: a notification lost in a crash costs a waiter one poll interval.
async fn send_notifications(pool: PgPool, signals: Arc<Signals>, coalesce: Duration) {
    let mut shutdown = signals.shutdown.subscribe();
    loop {
        tokio::select! {
            () = signals.notify_request.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let sent =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
                .bind(&signals.channel)
                .bind(&signals.origin)
                .execute(&pool)
                .await;
        match sent {
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => return,
            // Waiters elsewhere fall back to polling; nothing is lost.
            Err(error) => tracing::debug!(%error, "could not send a notification"),
        }
        // Appends committed meanwhile collapse into the next notification: under load, at most one per interval.
        tokio::select! {
            () = tokio::time::sleep(coalesce) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// On request, waits (at most `limit` each time) until the oldest append in flight ends, then wakes the waiters.
/// Returns to idle at once when nothing is in flight, so it never spins.
async fn watch_open_appends(
    pool: PgPool,
    signals: Arc<Signals>,
    statement: SqlStr,
    limit: Duration,
) {
    let mut shutdown = signals.shutdown.subscribe();
    let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = signals.watch_request.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let waited = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            waited = sqlx::query_scalar::<_, bool>(statement.clone()).bind(limit_ms).fetch_one(&pool) => waited,
        };
        match waited {
            // The append ended: committed or rolled back.
            Ok(true) => signals.bump(),
            // Nothing in flight: whatever holds the waiter back, a notification or its poll will tell.
            Ok(false) => {}
            Err(sqlx::Error::PoolClosed) => return,
            // A lock timeout means the append is still open; the waiters' poll asks again.
            Err(error) if crate::failure::sqlstate(&error).as_deref() == Some("55P03") => {}
            Err(error) => {
                tracing::debug!(%error, "could not wait for an open append; waiters poll");
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(limit) => {}
                }
            }
        }
    }
}

/// Holds one listening connection for the store, bumping the generation on every foreign notification and
/// after every reconnect (notifications may have been missed meanwhile). Ends when the store or its pool closes.
async fn listen(pool: PgPool, signals: Arc<Signals>, retry_after: Duration) {
    let mut shutdown = signals.shutdown.subscribe();
    let mut listener: Option<PgListener> = None;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            outcome = receive(&pool, &mut listener, &signals) => outcome,
        };
        match outcome {
            Ok(()) => {}
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::debug!(%error, "notification listener failed; waiters poll until it is back");
                listener = None;
                signals.bump();
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(retry_after) => {}
                }
            }
        }
    }
}

/// Connects the listener if needed, then handles one notification or one reconnect.
async fn receive(
    pool: &PgPool,
    listener: &mut Option<PgListener>,
    signals: &Signals,
) -> Result<(), sqlx::Error> {
    let active = match listener {
        Some(active) => active,
        None => {
            let mut fresh = PgListener::connect_with(pool).await?;
            fresh.listen(&signals.channel).await?;
            // Anything may have been appended while no one listened.
            signals.bump();
            listener.insert(fresh)
        }
    };
    match active.try_recv().await? {
        Some(notification) if notification.payload() == signals.origin => {}
        // A foreign notification, or `None`: the connection was lost and is re-established on the next call.
        _ => signals.bump(),
    }
    Ok(())
}
