//! The SQLite backend: read models, checkpoints, leases and dead letters in the event store's file (feature
//! `sqlite`).
//!
//! Tables (created by [`migrate`](Backend::migrate), `schema.rs`): `projection_slots` (one row per generation of
//! each projection: checkpoint, state, lease), `projection_documents` (every generation's documents, keyed by
//! projection and generation), `projection_dead_letters`, and `projection_fence`, the counter fencing tokens are
//! drawn from.
//!
//! Ownership has no advisory lock to lean on: a lease row with a **fencing token**. Every change of owner draws
//! a new token (a takeover, a restart: a new process is a new owner, a re-acquisition after the lease was released
//! or taken); the runner and a replay of one `Projections` share theirs. The owner renews its lease well
//! inside the TTL; and every batch commits in one `BEGIN IMMEDIATE` transaction whose first statement moves the
//! checkpoint only where name, generation, owner, token and the checkpoint the batch started from all still
//! match. SQLite lets one writer in at a time, so no takeover can slip between that check and the commit: an
//! owner whose lease was taken can never commit again, and a dead owner's lease is taken once its TTL ran out.
//!
//! Writes go through the store's writer connection ([`annals_sqlite::SqliteStore::writer_pool`]), so in one
//! process they queue with the appends; reads through its readers. A batch reads its documents in a read
//! transaction on a reader, begun with the check that the lease is ours at the expected checkpoint (WAL gives
//! it that snapshot for its whole length), and writes only at its commit, behind the fence: projection code
//! never runs while SQLite's write lock is held, and an owner whose lease is taken mid-batch applies its batch
//! to the state it started from, then has its commit refused. Only a swap holds the write lock from its start,
//! for the final catch-up (as PostgreSQL locks the live generation's row).

mod batch;
mod lease;
mod read;
mod schema;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annals::{Position, async_trait};
use annals_sqlite::SqliteStore;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Acquired, Backend, BatchTx, Slot, Target};
use crate::error::{Error, Result};
use crate::status::{ParkedEvent, SlotState};

/// The SQLite backend. Clones share the store's connections.
#[derive(Debug, Clone)]
pub(crate) struct SqliteBackend {
    writer: SqlitePool,
    readers: SqlitePool,
    migrated: std::sync::Arc<OnceCell<()>>,
}

impl SqliteBackend {
    /// The backend in `store`'s file.
    pub(crate) fn new(store: &SqliteStore) -> Self {
        Self {
            writer: store.writer_pool().clone(),
            readers: store.reader_pool().clone(),
            migrated: std::sync::Arc::default(),
        }
    }

    /// Creates the tables once per backend, before the first read (a reader of a file no runner migrated yet
    /// reads it as empty, as on PostgreSQL).
    async fn ensure_migrated(&self) -> Result<()> {
        self.migrated
            .get_or_try_init(|| schema::migrate(&self.writer))
            .await
            .map(|_| ())
    }
}

/// Now, in milliseconds since the Unix epoch: lease deadlines are wall-clock times, comparable between the
/// processes of the machine that share the file.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The end of a lease of `ttl` taken now.
pub(super) fn lease_end(ttl: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// A position, generation or count as SQLite's `INTEGER`.
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads `column` of a row of `table`, naming both when it is missing or of another type.
pub(super) fn column<'r, T>(row: &'r SqliteRow, table: &str, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(|e| Error::StoredValue {
        table: table.to_owned(),
        column,
        reason: e.to_string(),
    })
}

/// A stored non-negative integer (position, generation, token, count): a negative value is corrupt, never 0.
pub(super) fn non_negative(row: &SqliteRow, table: &str, name: &'static str) -> Result<u64> {
    let v: i64 = column(row, table, name)?;
    u64::try_from(v).map_err(|_| Error::StoredValue {
        table: table.to_owned(),
        column: name,
        reason: format!("{v} is negative"),
    })
}

/// Decodes a row of `projection_slots` read with [`schema::SLOT_COLUMNS`].
pub(super) fn slot_from(row: &SqliteRow, fresh: bool) -> Result<Slot> {
    let t = schema::SLOTS;
    let owner: Option<String> = column(row, t, "owner")?;
    let lease_until: Option<i64> = column(row, t, "lease_until")?;
    let state: String = column(row, t, "state")?;
    Ok(Slot {
        name: column(row, t, "name")?,
        generation: non_negative(row, t, "generation")?,
        version: u32::try_from(non_negative(row, t, "version")?).map_err(|_| {
            Error::StoredValue {
                table: t.to_owned(),
                column: "version",
                reason: "beyond 2^32 - 1".to_owned(),
            }
        })?,
        live: column(row, t, "live")?,
        checkpoint: Position(non_negative(row, t, "checkpoint")?),
        state: SlotState::parse(&state),
        error: column(row, t, "error")?,
        throughput: column(row, t, "throughput")?,
        owned: owner.is_some() && lease_until.is_some_and(|until| until > now_ms()),
        fresh,
        fence: non_negative(row, t, "fence")?,
    })
}

/// The lost-ownership error of `name`.
pub(super) fn lost(name: &str) -> Error {
    Error::LostOwnership {
        projection: name.to_owned(),
    }
}

/// Whether a SQLite failure may go away when the same work is tried again, by SQLite's result code (never the
/// message): another connection's lock (`SQLITE_BUSY`, `SQLITE_LOCKED`), memory, I/O, a full disk, the WAL
/// protocol; connection and pool failures. Permanent: constraints, a corrupt file, a read-only file.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 7 | 10 | 13 | 15)),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        _ => false,
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn migrate(&self) -> Result<()> {
        self.ensure_migrated().await
    }

    async fn acquire_live(&self, p: Target<'_>, owner: Uuid, ttl: Duration) -> Result<Acquired> {
        self.acquire(p, owner, ttl, true).await
    }

    async fn acquire_building(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<Acquired> {
        self.acquire(p, owner, ttl, false).await
    }

    async fn release(&self, slot: &Slot, owner: Uuid) -> Result<()> {
        self.release_lease(slot, owner).await
    }

    async fn renew(&self, slot: &Slot, owner: Uuid, ttl: Duration, state: SlotState) -> Result<()> {
        self.renew_lease(slot, owner, ttl, state).await
    }

    async fn fail(&self, slot: &Slot, owner: Uuid, error: &str) -> Result<()> {
        self.record_failure(slot, owner, error).await
    }

    async fn begin(
        &self,
        slot: &Slot,
        owner: Uuid,
        ttl: Duration,
        expected: Option<Position>,
        swap: bool,
    ) -> Result<Box<dyn BatchTx>> {
        self.begin_batch(slot, owner, ttl, expected, swap).await
    }

    async fn slots(&self) -> Result<Vec<Slot>> {
        self.ensure_migrated().await?;
        self.read_slots().await
    }

    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        self.ensure_migrated().await?;
        self.read_parked(name).await
    }

    async fn reset(&self, name: &str) -> Result<()> {
        self.ensure_migrated().await?;
        self.drop_all(name).await
    }

    async fn checkpoint(&self, name: &str) -> Result<Position> {
        self.ensure_migrated().await?;
        self.read_checkpoint(name).await
    }

    async fn get_doc(&self, name: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        self.ensure_migrated().await?;
        self.read_doc(name, collection, key).await
    }

    async fn list_docs(
        &self,
        name: &str,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>> {
        self.ensure_migrated().await?;
        self.read_docs(name, collection, prefix, after, limit).await
    }

    fn schema_of(&self, _name: &str) -> Option<String> {
        None
    }
}
