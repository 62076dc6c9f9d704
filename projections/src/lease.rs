//! [`Lease`]: the ownership of one projection's live checkpoint, held by a caller that does its own work between
//! checkpoints (the NATS relay publishes outside any database transaction, then commits its checkpoint).
//!
//! The lease is the same row (PostgreSQL), entry (memory) or backend record that a projection runner holds, so
//! the fencing is the backend's: a commit checks, in its own short transaction, that this owner still holds the
//! lease and that the checkpoint is the one it last committed. What a runner gets from its batch transaction (the
//! row lock for the whole batch) a lease holder replaces by its own clock: [`Lease::valid_until`] is an instant
//! before which no other owner can have taken the lease, measured from *before* the request that set the expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::Position;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::backend::{Backend, Commit, Slot};
use crate::error::{Error, Result};
use crate::status::SlotState;

/// The live lease on one projection registered with [`Projections::leased`](crate::Projections::leased), taken
/// by [`Projections::try_lease`](crate::Projections::try_lease).
///
/// Another owner takes the lease over only once it has expired (by the backend's clock) or was released: on
/// PostgreSQL never merely because this owner's database session ended, unlike a projection runner's lease.
/// Dropping a `Lease` without [`release`](Self::release) leaves it to expire after the TTL.
pub struct Lease {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) owner: Uuid,
    pub(crate) ttl: Duration,
    pub(crate) slot: Slot,
    pub(crate) valid_until: Instant,
    pub(crate) notifier: watch::Sender<Position>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.slot.name)
            .field("checkpoint", &self.slot.checkpoint)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The committed checkpoint: the position of the last event the holder has finished with.
    pub fn checkpoint(&self) -> Position {
        self.slot.checkpoint
    }

    /// The lease's time-to-live (each renewal and commit extends it by this much).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// An instant, by this process's monotonic clock, before which the lease cannot have expired: the start of
    /// the last request that set its expiry, plus the TTL. A holder with effects outside the backend stops them
    /// before this instant (self-fencing), since from then on another owner may hold the lease.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// What is left of the lease by this process's clock (zero once it may have expired).
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }

    /// Whether the lease was created just now (nothing committed yet; its storage is empty).
    pub fn fresh(&self) -> bool {
        self.slot.fresh
    }

    /// Extends the lease by its TTL and records whether the holder is caught up (`live`) or catching up.
    ///
    /// # Errors
    /// [`Error::LostOwnership`] when another owner holds it now; database errors (the lease is then still
    /// valid until [`valid_until`](Self::valid_until), no longer).
    pub async fn renew(&mut self, live: bool) -> Result<()> {
        let started = Instant::now();
        let state = if live {
            SlotState::Live
        } else {
            SlotState::CatchingUp
        };
        self.backend
            .renew(&self.slot, self.owner, self.ttl, state)
            .await?;
        self.valid_until = started + self.ttl;
        Ok(())
    }

    /// Commits `checkpoint` (and `documents`, upserts of `(collection, key, value)` in the projection's live
    /// read model) in one short transaction that first checks this owner still holds the lease and the stored
    /// checkpoint is [`checkpoint`](Self::checkpoint); extends the lease. Waiting subscribers of the projection
    /// see the new position.
    ///
    /// # Errors
    /// [`Error::LostOwnership`] when the lease or the checkpoint is no longer this holder's (a stale owner never
    /// commits); [`Error::Config`] when `checkpoint` is behind the committed one; database errors.
    pub async fn commit(
        &mut self,
        checkpoint: Position,
        documents: Vec<(String, String, Value)>,
        live: bool,
    ) -> Result<()> {
        if checkpoint < self.slot.checkpoint {
            return Err(Error::Config {
                reason: format!(
                    "projection {:?}: checkpoint {checkpoint} is behind the committed {}",
                    self.slot.name, self.slot.checkpoint
                ),
            });
        }
        let started = Instant::now();
        let tx = self
            .backend
            .begin(
                &self.slot,
                self.owner,
                self.ttl,
                Some(self.slot.checkpoint),
                false,
            )
            .await?;
        let commit = Commit {
            writes: documents
                .into_iter()
                .map(|(collection, key, value)| (collection, key, Some(value)))
                .collect(),
            checkpoint: Some(checkpoint),
            state: Some(if live {
                SlotState::Live
            } else {
                SlotState::CatchingUp
            }),
            ..Commit::default()
        };
        tx.commit(commit).await?;
        self.valid_until = started + self.ttl;
        self.slot.checkpoint = checkpoint;
        self.notifier.send_if_modified(|p| {
            let grew = checkpoint > *p;
            if grew {
                *p = checkpoint;
            }
            grew
        });
        Ok(())
    }

    /// Gives the lease up so that another owner can take it at once.
    ///
    /// # Errors
    /// Database errors (the lease then expires by itself).
    pub async fn release(self) -> Result<()> {
        self.backend.release(&self.slot, self.owner).await
    }

    /// Records that the holder stopped for good with `error` (shown by `status` as failed) and gives the lease up.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fail(self, error: &str) -> Result<()> {
        self.backend.fail(&self.slot, self.owner, error).await
    }
}
