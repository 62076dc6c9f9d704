//! One batch: documents read through the readers while the projection applies events, then everything written
//! in one `BEGIN IMMEDIATE` transaction whose first statement is the fence.

use std::time::Duration;

use annals::{Position, async_trait};
use serde_json::Value;
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::lease::drop_generation;
use super::schema::SLOTS;
use super::{SqliteBackend, column, int, lease_end, lost, non_negative, now_ms};
use crate::backend::{BatchTx, Commit, Slot};
use crate::documents::DocSource;
use crate::error::{Error, Result};
use crate::status::SlotState;

type Tx = Transaction<'static, Sqlite>;

/// An open batch on one generation.
struct SqliteBatch {
    writer: SqlitePool,
    readers: SqlitePool,
    name: String,
    generation: u64,
    owner: String,
    fence: u64,
    /// The lease's time-to-live, renewed by the commit.
    ttl: Duration,
    /// The checkpoint the batch started from (the fence checks it is still the stored one).
    expected: Option<Position>,
    /// A swap's transaction, holding SQLite's write lock from its start; `None` for an ordinary batch.
    held: Option<Tx>,
    /// An ordinary batch's read transaction on a reader: every document it loads comes from the snapshot in
    /// which the lease was found ours at this checkpoint, so an owner whose lease is taken meanwhile still
    /// applies its batch to the state it started from (and its commit is refused), never to a newer one.
    snapshot: Option<Tx>,
    live_checkpoint: Option<Position>,
}

impl SqliteBackend {
    /// Opens a batch on `slot`: fails with `LostOwnership` at once when the lease is no longer ours (or the
    /// checkpoint moved). A swap takes SQLite's write lock here and keeps it until its commit, so the live
    /// generation cannot move while the rebuild catches up to it.
    pub(super) async fn begin_batch(
        &self,
        slot: &Slot,
        owner: Uuid,
        ttl: Duration,
        expected: Option<Position>,
        swap: bool,
    ) -> Result<Box<dyn BatchTx>> {
        let mut batch = SqliteBatch {
            ttl,
            writer: self.writer.clone(),
            readers: self.readers.clone(),
            name: slot.name.clone(),
            generation: slot.generation,
            owner: owner.to_string(),
            fence: slot.fence,
            expected,
            held: None,
            snapshot: None,
            live_checkpoint: None,
        };
        if swap {
            let mut tx = self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(Error::db("begin swap"))?;
            batch.check(&mut tx).await?;
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT checkpoint FROM projection_slots WHERE name = ?1 AND live = 1",
            )
            .bind(&slot.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Error::db("read the live checkpoint"))?;
            batch.live_checkpoint = Some(Position(u64::try_from(live.unwrap_or(0)).map_err(
                |_| Error::StoredValue {
                    table: SLOTS.to_owned(),
                    column: "checkpoint",
                    reason: "negative".to_owned(),
                },
            )?));
            batch.held = Some(tx);
        } else {
            // A deferred transaction: its snapshot is taken by its first read, the check.
            let mut tx = self
                .readers
                .begin()
                .await
                .map_err(Error::db("begin batch"))?;
            batch.check(&mut tx).await?;
            batch.snapshot = Some(tx);
        }
        Ok(Box::new(batch))
    }
}

impl SqliteBatch {
    /// Whether the generation is still ours, with the token we took it with, at the expected checkpoint.
    async fn check(&self, conn: &mut sqlx::SqliteConnection) -> Result<()> {
        let row = sqlx::query(
            "SELECT owner, fence, checkpoint FROM projection_slots WHERE name = ?1 AND generation = ?2",
        )
        .bind(&self.name)
        .bind(int(self.generation))
        .fetch_optional(conn)
        .await
        .map_err(Error::db("check the lease"))?
        .ok_or_else(|| lost(&self.name))?;
        let owner: Option<String> = column(&row, SLOTS, "owner")?;
        let ours = owner.as_deref() == Some(self.owner.as_str())
            && non_negative(&row, SLOTS, "fence")? == self.fence;
        let checkpoint = Position(non_negative(&row, SLOTS, "checkpoint")?);
        if !ours || self.expected.is_some_and(|e| e != checkpoint) {
            return Err(lost(&self.name));
        }
        Ok(())
    }

    /// The fence, first statement of the commit: moves the checkpoint (and renews the lease) only where the
    /// generation is still ours with our token, at the checkpoint the batch started from.
    async fn fence(&self, tx: &mut Tx, commit: &Commit) -> Result<()> {
        let done = sqlx::query(
            "UPDATE projection_slots SET checkpoint = coalesce(?6, checkpoint), state = coalesce(?7, state), \
             throughput = coalesce(?8, throughput), updated_at = ?9, lease_until = ?10 \
             WHERE name = ?1 AND generation = ?2 AND owner = ?3 AND fence = ?4 AND (?5 IS NULL OR checkpoint = ?5)",
        )
        .bind(&self.name)
        .bind(int(self.generation))
        .bind(&self.owner)
        .bind(int(self.fence))
        .bind(self.expected.map(|p| int(p.get())))
        .bind(commit.checkpoint.map(|p| int(p.get())))
        .bind(commit.state.map(SlotState::as_str))
        .bind(commit.throughput)
        .bind(now_ms())
        .bind(lease_end(self.ttl))
        .execute(&mut **tx)
        .await
        .map_err(Error::db("move checkpoint"))?;
        if done.rows_affected() == 0 {
            return Err(lost(&self.name));
        }
        Ok(())
    }

    /// The batch's documents, dead letters and (for a swap) the switch-over, inside `tx`.
    async fn write(&self, tx: &mut Tx, commit: Commit) -> Result<()> {
        let generation = int(self.generation);
        for (collection, key, value) in commit.writes {
            let query = match value {
                Some(value) => {
                    crate::backend::memory::storable(&collection, &key, &value)?;
                    sqlx::query(
                        "INSERT INTO projection_documents (name, generation, collection, key, doc) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE SET doc = excluded.doc",
                    )
                    .bind(&self.name)
                    .bind(generation)
                    .bind(collection)
                    .bind(key)
                    .bind(value.to_string())
                }
                None => sqlx::query(
                    "DELETE FROM projection_documents \
                     WHERE name = ?1 AND generation = ?2 AND collection = ?3 AND key = ?4",
                )
                .bind(&self.name)
                .bind(generation)
                .bind(collection)
                .bind(key),
            };
            query
                .execute(&mut **tx)
                .await
                .map_err(Error::db("write documents"))?;
        }
        for parked in &commit.park {
            sqlx::query(
                "INSERT INTO projection_dead_letters \
                 (name, generation, position, event_id, stream_id, event_type, error, attempts, parked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO UPDATE SET \
                 error = excluded.error, attempts = excluded.attempts, parked_at = excluded.parked_at",
            )
            .bind(&self.name)
            .bind(generation)
            .bind(int(parked.position.get()))
            .bind(parked.event_id.0.to_string())
            .bind(parked.stream.as_str())
            .bind(&parked.event_type)
            .bind(&parked.error)
            .bind(i64::from(parked.attempts))
            .bind(now_ms())
            .execute(&mut **tx)
            .await
            .map_err(Error::db("park event"))?;
        }
        for position in &commit.unpark {
            sqlx::query(
                "DELETE FROM projection_dead_letters WHERE name = ?1 AND generation = ?2 AND position = ?3",
            )
            .bind(&self.name)
            .bind(generation)
            .bind(int(position.get()))
            .execute(&mut **tx)
            .await
            .map_err(Error::db("unpark events"))?;
        }
        if commit.swap {
            self.switch_over(tx).await?;
        }
        Ok(())
    }

    /// Drops the live generation and makes this one live, released.
    async fn switch_over(&self, tx: &mut Tx) -> Result<()> {
        let old: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM projection_slots WHERE name = ?1 AND live = 1",
        )
        .bind(&self.name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("swap"))?;
        if let Some(old) = old {
            let old = u64::try_from(old).map_err(|_| Error::StoredValue {
                table: SLOTS.to_owned(),
                column: "generation",
                reason: format!("{old} is negative"),
            })?;
            drop_generation(tx, &self.name, old).await?;
        }
        sqlx::query(
            "UPDATE projection_slots SET live = 1, owner = NULL, lease_until = NULL, state = 'stopped', \
             throughput = 0 WHERE name = ?1 AND generation = ?2",
        )
        .bind(&self.name)
        .bind(int(self.generation))
        .execute(&mut **tx)
        .await
        .map_err(Error::db("swap"))?;
        Ok(())
    }
}

#[async_trait]
impl DocSource for SqliteBatch {
    async fn load(&mut self, collection: &str, key: &str) -> Result<Option<Value>> {
        let query = sqlx::query_scalar::<_, String>(
            "SELECT doc FROM projection_documents \
             WHERE name = ?1 AND generation = ?2 AND collection = ?3 AND key = ?4",
        )
        .bind(&self.name)
        .bind(int(self.generation))
        .bind(collection)
        .bind(key);
        let text = match self.held.as_mut().or(self.snapshot.as_mut()) {
            Some(tx) => query.fetch_optional(&mut **tx).await,
            None => query.fetch_optional(&self.readers).await,
        }
        .map_err(Error::db("read document"))?;
        text.map(|text| parse_doc(&self.name, collection, key, &text))
            .transpose()
    }
}

/// A stored document's JSON, refused with the table and key named when it is not JSON.
pub(super) fn parse_doc(name: &str, collection: &str, key: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::StoredValue {
        table: "projection_documents".to_owned(),
        column: "doc",
        reason: format!("projection {name:?}, document {collection:?}/{key:?}: {e}"),
    })
}

#[async_trait]
impl BatchTx for SqliteBatch {
    fn docs(&mut self) -> &mut dyn DocSource {
        self
    }

    fn live_checkpoint(&self) -> Option<Position> {
        self.live_checkpoint
    }

    async fn commit(mut self: Box<Self>, commit: Commit) -> Result<()> {
        // The reads are done: end the read transaction, so the reader goes back to its pool.
        if let Some(snapshot) = self.snapshot.take() {
            snapshot
                .rollback()
                .await
                .map_err(Error::db("end the batch's reads"))?;
        }
        let mut tx = match self.held.take() {
            Some(tx) => tx,
            None => self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(Error::db("begin commit"))?,
        };
        // Dropping `tx` on an error rolls it back.
        self.fence(&mut tx, &commit).await?;
        self.write(&mut tx, commit).await?;
        tx.commit().await.map_err(Error::db("commit batch"))
    }
}
