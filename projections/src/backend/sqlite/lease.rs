//! Leases with fencing tokens: taking a generation (creating it when needed), renewing, releasing, failing.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Sqlite, Transaction};
use tracing::info;
use uuid::Uuid;

use super::schema::{SLOT_COLUMNS, SLOTS};
use super::{SqliteBackend, column, int, lease_end, lost, non_negative, now_ms, slot_from};
use crate::backend::{Acquired, Slot, Target};
use crate::error::{Error, Result};
use crate::status::SlotState;

type Tx = Transaction<'static, Sqlite>;

impl SqliteBackend {
    /// Takes the lease on the live (`live`) or rebuild generation of `p`, in one `BEGIN IMMEDIATE` transaction:
    /// busy while another owner's lease runs; otherwise the generation (created when missing, or replacing a
    /// rebuild of another version) gets `owner` and a lease of `ttl`, with a fresh fencing token unless `owner`
    /// holds it already (the runner and a replay of parked events of one `Projections` share their lease, as on
    /// PostgreSQL; every change of owner draws a new token).
    pub(super) async fn acquire(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
        live: bool,
    ) -> Result<Acquired> {
        self.ensure_migrated().await?;
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::db("acquire"))?;
        let row = sqlx::query(
            "SELECT generation, version, owner, lease_until, fence FROM projection_slots \
             WHERE name = ?1 AND live = ?2",
        )
        .bind(p.name)
        .bind(live)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db("acquire"))?;
        let mut generation = None;
        let mut kept_fence = None;
        if let Some(row) = row {
            let current: Option<String> = column(&row, SLOTS, "owner")?;
            let until: Option<i64> = column(&row, SLOTS, "lease_until")?;
            let found = non_negative(&row, SLOTS, "generation")?;
            let mine = owner.to_string();
            if current.as_deref() == Some(mine.as_str()) {
                kept_fence = Some(non_negative(&row, SLOTS, "fence")?);
            }
            if let Some(other) = current.filter(|o| *o != mine) {
                if until.is_some_and(|until| until > now_ms()) {
                    return Ok(Acquired::Busy);
                }
                info!(projection = %p.name, previous = %other, live,
                      "the previous owner's lease ran out; taking over");
            }
            if !live && non_negative(&row, SLOTS, "version")? != u64::from(p.version) {
                drop_generation(&mut tx, p.name, found).await?;
                kept_fence = None;
            } else {
                generation = Some(found);
            }
        }
        let fresh = generation.is_none();
        let generation = match generation {
            Some(g) => g,
            None => create(&mut tx, p, live).await?,
        };
        let fence = match kept_fence {
            Some(fence) => int(fence),
            None => sqlx::query_scalar(
                "UPDATE projection_fence SET last = last + 1 WHERE id = 1 RETURNING last",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::db("draw a fencing token"))?,
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection_slots SET owner = ?3, lease_until = ?4, fence = ?5, updated_at = ?6, error = NULL, \
             state = CASE WHEN live = 1 THEN (CASE WHEN state = 'failed' THEN 'catching_up' ELSE state END) \
             ELSE 'rebuilding' END \
             WHERE name = ?1 AND generation = ?2 RETURNING {SLOT_COLUMNS}"
        )))
        .bind(p.name)
        .bind(int(generation))
        .bind(owner.to_string())
        .bind(lease_end(ttl))
        .bind(fence)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::db("take lease"))?;
        let slot = slot_from(&row, fresh)?;
        tx.commit().await.map_err(Error::db("take lease"))?;
        Ok(Acquired::Slot(slot))
    }

    /// Extends the lease and records the state; `LostOwnership` when the lease's owner or token changed.
    pub(super) async fn renew_lease(
        &self,
        slot: &Slot,
        owner: Uuid,
        ttl: Duration,
        state: SlotState,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE projection_slots SET lease_until = ?5, state = ?6, updated_at = ?7, \
             throughput = CASE WHEN ?6 = 'live' THEN 0 ELSE throughput END \
             WHERE name = ?1 AND generation = ?2 AND owner = ?3 AND fence = ?4",
        )
        .bind(&slot.name)
        .bind(int(slot.generation))
        .bind(owner.to_string())
        .bind(int(slot.fence))
        .bind(lease_end(ttl))
        .bind(state.as_str())
        .bind(now_ms())
        .execute(&self.writer)
        .await
        .map_err(Error::db("renew lease"))?;
        if done.rows_affected() == 0 {
            return Err(lost(&slot.name));
        }
        Ok(())
    }

    /// Gives the lease up (nothing when it is not ours any more).
    pub(super) async fn release_lease(&self, slot: &Slot, owner: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE projection_slots SET owner = NULL, lease_until = NULL, throughput = 0, updated_at = ?5, \
             state = CASE WHEN state IN ('live', 'catching_up') THEN 'stopped' ELSE state END \
             WHERE name = ?1 AND generation = ?2 AND owner = ?3 AND fence = ?4",
        )
        .bind(&slot.name)
        .bind(int(slot.generation))
        .bind(owner.to_string())
        .bind(int(slot.fence))
        .bind(now_ms())
        .execute(&self.writer)
        .await
        .map_err(Error::db("release lease"))?;
        Ok(())
    }

    /// Records that the projection stopped with `error`, giving the lease up.
    pub(super) async fn record_failure(&self, slot: &Slot, owner: Uuid, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE projection_slots SET state = 'failed', error = ?5, owner = NULL, lease_until = NULL, \
             throughput = 0, updated_at = ?6 WHERE name = ?1 AND generation = ?2 AND owner = ?3 AND fence = ?4",
        )
        .bind(&slot.name)
        .bind(int(slot.generation))
        .bind(owner.to_string())
        .bind(int(slot.fence))
        .bind(error)
        .bind(now_ms())
        .execute(&self.writer)
        .await
        .map_err(Error::db("record failure"))?;
        Ok(())
    }
}

/// Creates a generation of `p` (the next number) inside `tx`; returns its number.
async fn create(tx: &mut Tx, p: Target<'_>, live: bool) -> Result<u64> {
    let generation: i64 = sqlx::query_scalar(
        "INSERT INTO projection_slots (name, generation, version, live, state, updated_at) \
         SELECT ?1, coalesce(max(generation), 0) + 1, ?2, ?3, ?4, ?5 FROM projection_slots WHERE name = ?1 \
         RETURNING generation",
    )
    .bind(p.name)
    .bind(i64::from(p.version))
    .bind(live)
    .bind(if live { "catching_up" } else { "rebuilding" })
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await
    .map_err(Error::db("create slot"))?;
    u64::try_from(generation).map_err(|_| Error::StoredValue {
        table: SLOTS.to_owned(),
        column: "generation",
        reason: format!("{generation} is negative"),
    })
}

/// Deletes a generation's row, documents and dead letters inside `tx`.
pub(super) async fn drop_generation(tx: &mut Tx, name: &str, generation: u64) -> Result<()> {
    for statement in [
        "DELETE FROM projection_documents WHERE name = ?1 AND generation = ?2",
        "DELETE FROM projection_dead_letters WHERE name = ?1 AND generation = ?2",
        "DELETE FROM projection_slots WHERE name = ?1 AND generation = ?2",
    ] {
        sqlx::query(statement)
            .bind(name)
            .bind(int(generation))
            .execute(&mut **tx)
            .await
            .map_err(Error::db("drop a generation"))?;
    }
    Ok(())
}
