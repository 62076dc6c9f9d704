//! [`Timers`]: durable "wake instance I at T with this payload", on the memory store, in PostgreSQL or in
//! SQLite.

use std::sync::Arc;
use std::time::Duration;

use annals::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::parked::ParkedStore;

pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// One pending timer, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timer {
    pub(crate) process: String,
    pub(crate) instance: String,
    pub(crate) key: String,
    /// Names this scheduling (process, instance, key, due time): the cause id of its firing.
    pub(crate) fire_id: Uuid,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) payload: serde_json::Value,
    pub(crate) correlation_id: Option<String>,
    /// Claims so far (this one included, once claimed).
    pub(crate) attempts: u32,
}

/// Pending and parked timers of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimerCounts {
    pub(crate) pending: u64,
    pub(crate) parked: u64,
}

/// Where timers are kept. Claims are leases: a poller that dies loses its claim when it runs out, and another
/// poller fires the timer again (handling is idempotent, so it fires once in effect).
#[async_trait]
pub(crate) trait TimerStore: Send + Sync + 'static {
    /// Inserts or replaces the timer of `(process, instance, key)`; the same scheduling again changes nothing.
    async fn schedule(&self, timer: &Timer) -> Result<()>;
    /// Deletes the pending timer of `(process, instance, key)`; whether there was one.
    async fn cancel(&self, process: &str, instance: &str, key: &str) -> Result<bool>;
    /// Claims up to `limit` due timers of `process` (earliest first) for `claim_for`, skipping claimed and
    /// parked ones (`attempts >= max_attempts`).
    async fn claim_due(
        &self,
        process: &str,
        limit: usize,
        claim_for: Duration,
        max_attempts: u32,
    ) -> Result<Vec<Timer>>;
    /// Deletes a fired timer, unless it was scheduled anew meanwhile (another `fire_id`).
    async fn complete(&self, timer: &Timer) -> Result<()>;
    /// Gives a failed firing back: claimable again after `retry_in`, with `error` recorded.
    async fn release(&self, timer: &Timer, retry_in: Duration, error: &str) -> Result<()>;
    /// The earliest due time of a claimable timer of `process`.
    async fn next_due(&self, process: &str, max_attempts: u32) -> Result<Option<DateTime<Utc>>>;
    /// Makes the parked timers of `process` (`attempts >= max_attempts`) claimable again at once, with their
    /// attempts counted from zero; how many.
    async fn unpark(&self, process: &str, max_attempts: u32) -> Result<u64>;
    /// How many timers `process` has pending and parked.
    async fn counts(&self, process: &str, max_attempts: u32) -> Result<TimerCounts>;
}

/// The durable timers of process managers: in process memory (with the memory store) or in the PostgreSQL
/// store's schema (table `process_timers`, migration 0006 of `annals-postgres`). The process's parked inputs
/// are kept beside them (in memory, or table `process_parked`, migration 0012). Cheap to clone.
///
/// Every store accepts the same due times, [`timer_due_range`](crate::timer_due_range); a timer due outside it
/// is refused with [`Error::DueOutOfRange`] before it reaches the store.
#[derive(Clone)]
pub struct Timers {
    pub(crate) store: Arc<dyn TimerStore>,
    pub(crate) parked: Arc<dyn ParkedStore>,
    pub(crate) wake: Arc<Notify>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers").finish_non_exhaustive()
    }
}

impl Timers {
    /// Timers kept in this process's memory, for the memory store (they live as long as the store does).
    pub fn memory() -> Self {
        Self::from_stores(
            Arc::new(memory::MemoryTimers::default()),
            Arc::new(crate::parked::memory::MemoryParked::default()),
        )
    }

    /// Timers kept in `store`'s schema, table `process_timers` (created by the store's migrations). Polling
    /// reads through an index on due time and claims with `FOR UPDATE SKIP LOCKED`, so several processes can
    /// poll the same table.
    #[cfg(feature = "postgres")]
    pub fn postgres(store: &annals_postgres::PostgresStore) -> Self {
        Self::from_stores(
            Arc::new(postgres::PostgresTimers::new(
                store.pool().clone(),
                store.schema(),
            )),
            Arc::new(crate::parked::postgres::PostgresParked::new(
                store.pool().clone(),
                store.schema(),
            )),
        )
    }

    /// Timers kept in `store`'s SQLite file, table `process_timers`, and parked inputs in `process_parked`
    /// (created by the store's migrations, 0003). Claims go through the store's writer, one statement each, so
    /// pollers in several processes on the file claim disjoint timers; the due poll reads an index on when a
    /// timer may next be claimed.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(store: &annals_sqlite::SqliteStore) -> Self {
        let (writer, readers) = (store.writer_pool().clone(), store.reader_pool().clone());
        Self::from_stores(
            Arc::new(sqlite::SqliteTimers::new(writer.clone(), readers.clone())),
            Arc::new(crate::parked::sqlite::SqliteParked::new(writer, readers)),
        )
    }

    fn from_stores(store: Arc<dyn TimerStore>, parked: Arc<dyn ParkedStore>) -> Self {
        Self {
            store,
            parked,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Schedules `timer` if its due time is in [`timer_due_range`](crate::timer_due_range), on every store alike.
    ///
    /// # Errors
    /// [`Error::DueOutOfRange`]; the store's error.
    pub(crate) async fn schedule(&self, timer: &Timer) -> Result<()> {
        if !crate::due_range::timer_due_range().contains(&timer.due_at) {
            return Err(Error::DueOutOfRange {
                process: timer.process.clone(),
                instance: timer.instance.clone(),
                key: timer.key.clone(),
                due_at: timer.due_at,
                range: crate::due_range::describe(),
            });
        }
        self.store.schedule(timer).await?;
        self.wake.notify_waiters();
        Ok(())
    }
}
