//! The read-model backends: where documents, SQL tables, checkpoints, leases and dead letters live.

pub(crate) mod memory;
#[cfg(feature = "postgres")]
mod owner_session;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::time::Duration;

use annals::{Position, RecordedEvent, async_trait};
use serde_json::Value;
use uuid::Uuid;

use crate::documents::DocSource;
use crate::error::Result;
#[cfg(feature = "postgres")]
use crate::projection::SqlProjection;
#[cfg(feature = "postgres")]
use crate::sql::SqlTx;
use crate::status::{ParkedEvent, SlotState};

/// What a backend needs to know of a projection to keep its generations: the runner's registration hands it
/// over (`Registered::target`), so backends know nothing of the runner.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The projection's name (checkpoint key, part of storage names).
    pub(crate) name: &'a str,
    /// The version of the code registered, which a generation is built for.
    pub(crate) version: u32,
    /// The SQL projection whose [`setup`](SqlProjection::setup) creates a generation's tables; `None` for a
    /// document projection (its generations hold documents).
    #[cfg(feature = "postgres")]
    pub(crate) sql: Option<&'a dyn SqlProjection>,
}

/// One generation of one projection's read model, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) generation: u64,
    pub(crate) version: u32,
    /// Whether it is the generation readers see (the other kind is a rebuild in progress).
    pub(crate) live: bool,
    pub(crate) checkpoint: Position,
    pub(crate) state: SlotState,
    pub(crate) error: Option<String>,
    pub(crate) throughput: f64,
    /// Whether a runner currently holds an unexpired lease on it.
    pub(crate) owned: bool,
    /// Whether its storage was just created (nothing applied yet).
    pub(crate) fresh: bool,
    /// The fencing token the lease was taken with (SQLite; 0 on the backends that fence otherwise): every change
    /// of owner draws a new one, and a batch commits only while the stored token is still this one.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fence: u64,
}

/// Everything one batch commits, atomically.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    /// Documents to upsert (`Some`) or delete (`None`).
    pub(crate) writes: Vec<(String, String, Option<Value>)>,
    /// The new checkpoint (`None` keeps it).
    pub(crate) checkpoint: Option<Position>,
    /// Events to park in the dead-letter list.
    pub(crate) park: Vec<ParkedEvent>,
    /// Parked positions to remove (replayed successfully).
    pub(crate) unpark: Vec<Position>,
    /// The state to record.
    pub(crate) state: Option<SlotState>,
    /// Recent throughput in events per second.
    pub(crate) throughput: Option<f64>,
    /// Make this (building) generation the live one, dropping the old.
    pub(crate) swap: bool,
}

/// Outcome of trying to take a lease.
#[derive(Debug)]
pub(crate) enum Acquired {
    Slot(Slot),
    Busy,
}

/// An open batch transaction on one slot, holding that slot's row lock (and the live slot's, for a swap).
#[async_trait]
pub(crate) trait BatchTx: DocSource {
    /// Reads committed documents inside the transaction.
    fn docs(&mut self) -> &mut dyn DocSource;
    /// The SQL transaction, on PostgreSQL (`None`, the default, on other backends).
    #[cfg(feature = "postgres")]
    fn sql(&mut self) -> Option<SqlTx<'_>> {
        None
    }
    /// For a swap transaction: the live generation's checkpoint (locked).
    fn live_checkpoint(&self) -> Option<Position>;
    /// Commits the batch; fails with `LostOwnership` when the slot is no longer ours.
    async fn commit(self: Box<Self>, commit: Commit) -> Result<()>;
}

/// A read-model backend.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Creates the backend's own tables (idempotent).
    async fn migrate(&self) -> Result<()>;

    /// Takes (or renews) the lease on the live generation, creating generation 1 when there is none.
    async fn acquire_live(&self, p: Target<'_>, owner: Uuid, ttl: Duration) -> Result<Acquired>;

    /// Like [`acquire_live`](Self::acquire_live), but takes the lease over from another owner only once it has
    /// expired or was released, never because that owner's session ended: for holders with effects outside the
    /// backend, which may still be going on after their session died ([`crate::Lease`]). By default
    /// `acquire_live`, for backends that have no owner sessions (their takeover waits for expiry anyway).
    async fn acquire_live_after_expiry(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<Acquired> {
        self.acquire_live(p, owner, ttl).await
    }

    /// Takes the lease on the rebuild generation, creating it (or replacing one of another version).
    async fn acquire_building(&self, p: Target<'_>, owner: Uuid, ttl: Duration)
    -> Result<Acquired>;

    /// Gives up a lease (no-op when it is not ours).
    async fn release(&self, slot: &Slot, owner: Uuid) -> Result<()>;

    /// Extends the lease and records the state; `LostOwnership` when it is not ours any more.
    async fn renew(&self, slot: &Slot, owner: Uuid, ttl: Duration, state: SlotState) -> Result<()>;

    /// Records that the projection stopped with `error`.
    async fn fail(&self, slot: &Slot, owner: Uuid, error: &str) -> Result<()>;

    /// Opens a batch on `slot`: checks it is ours and (when given) still at `expected`.
    async fn begin(
        &self,
        slot: &Slot,
        owner: Uuid,
        ttl: Duration,
        expected: Option<Position>,
        swap: bool,
    ) -> Result<Box<dyn BatchTx>>;

    /// Every stored generation of every projection.
    async fn slots(&self) -> Result<Vec<Slot>>;

    /// The parked events of the live generation of `name`, in position order.
    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>>;

    /// Drops every generation, checkpoint and parked event of `name`.
    async fn reset(&self, name: &str) -> Result<()>;

    /// The live checkpoint of `name` (`START` when it has none).
    async fn checkpoint(&self, name: &str) -> Result<Position>;

    /// A live document.
    async fn get_doc(&self, name: &str, collection: &str, key: &str) -> Result<Option<Value>>;

    /// Live documents whose key starts with `prefix` (and sorts after `after`, when given), in key order.
    async fn list_docs(
        &self,
        name: &str,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>>;

    /// The stable schema readers use for SQL projections (PostgreSQL only).
    fn schema_of(&self, name: &str) -> Option<String>;
}

/// Builds a [`ParkedEvent`] for `event`.
pub(crate) fn parked_from(event: &RecordedEvent, error: String, attempts: u32) -> ParkedEvent {
    ParkedEvent {
        position: event.position,
        event_id: event.event_id,
        stream: event.stream_id.clone(),
        event_type: event.event_type.clone(),
        error,
        attempts,
    }
}
