//! Blue/green rebuilds: the projection's current version built into a fresh generation while the live one serves
//! reads, then swapped in, in one transaction, once it has caught up.

use std::time::Instant;

use annals::Position;
use tracing::{Instrument, info, info_span};

use super::batch::BatchError;
use super::rate::Rate;
use super::{Engine, Registered, Shutdown, is_shut};
use crate::backend::{Acquired, Commit, Slot};
use crate::documents::DocBuffer;
use crate::error::{Error, Result};
use crate::status::{Progress, RebuildOutcome, RebuildReport, SlotState};

impl Engine {
    /// Builds the projection's current version into a fresh generation and swaps it in when caught up.
    pub(crate) async fn rebuild(
        &self,
        p: &Registered,
        progress: &(dyn Fn(Progress) + Send + Sync),
        cancel: Shutdown,
    ) -> Result<RebuildReport> {
        let span = info_span!("projection_rebuild", projection = %p.name, version = p.version);
        self.rebuild_inner(p, progress, cancel)
            .instrument(span)
            .await
    }

    async fn rebuild_inner(
        &self,
        p: &Registered,
        progress: &(dyn Fn(Progress) + Send + Sync),
        cancel: Shutdown,
    ) -> Result<RebuildReport> {
        let mut slot = match self
            .backend
            .acquire_building(p.target(), self.owner, self.lease_ttl)
            .await?
        {
            Acquired::Slot(slot) => slot,
            Acquired::Busy => {
                return Err(Error::Busy {
                    projection: p.name.clone(),
                    what: "rebuild",
                });
            }
        };
        if slot.fresh {
            p.reset_hook().await?;
        }
        let started = Instant::now();
        let resumed_from = slot.checkpoint;
        let mut total = self.store.head().await?.get();
        let mut events_read = 0u64;
        let mut parked = 0usize;
        let report = |slot: &Slot, outcome, events, parked| RebuildReport {
            name: p.name.clone(),
            version: p.version,
            outcome,
            checkpoint: slot.checkpoint,
            resumed_from,
            events,
            elapsed: started.elapsed(),
            parked,
        };
        info!(
            resumed_from = resumed_from.get(),
            head = total,
            "rebuild started"
        );
        let mut ahead = None;
        let mut rate = Rate::new();
        progress(Progress {
            done: slot.checkpoint.get(),
            total: total.max(slot.checkpoint.get()),
            events: 0,
            elapsed: started.elapsed(),
        });
        loop {
            if is_shut(&cancel) {
                self.backend.release(&slot, self.owner).await?;
                info!(
                    checkpoint = slot.checkpoint.get(),
                    "rebuild cancelled; it will resume from here"
                );
                return Ok(report(
                    &slot,
                    RebuildOutcome::Cancelled,
                    events_read,
                    parked,
                ));
            }
            let read = self.next_page(p, &slot, &mut ahead).await;
            let events = match read {
                Ok(events) => events,
                Err(e) => {
                    let _ = self.backend.release(&slot, self.owner).await;
                    return Err(e.into());
                }
            };
            if events.is_empty() {
                match self.swap(p, &mut slot).await {
                    Ok(true) => {
                        info!(
                            checkpoint = slot.checkpoint.get(),
                            "rebuild complete; new version is live"
                        );
                        progress(Progress {
                            done: slot.checkpoint.get(),
                            total: total.max(slot.checkpoint.get()),
                            events: events_read,
                            elapsed: started.elapsed(),
                        });
                        return Ok(report(
                            &slot,
                            RebuildOutcome::Completed,
                            events_read,
                            parked,
                        ));
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        let _ = self.backend.release(&slot, self.owner).await;
                        return Err(e);
                    }
                }
            }
            events_read += events.len() as u64;
            match self
                .process_page(
                    p,
                    &mut slot,
                    &events,
                    SlotState::Rebuilding,
                    &mut parked,
                    rate.get(),
                    &cancel,
                )
                .await
            {
                // Interrupted or not, the loop looks at `cancel` next.
                Ok(_) => {}
                Err(e) => {
                    let _ = self.backend.release(&slot, self.owner).await;
                    return Err(e);
                }
            }
            rate.add(events.len());
            total = total.max(slot.checkpoint.get());
            progress(Progress {
                done: slot.checkpoint.get(),
                total,
                events: events_read,
                elapsed: started.elapsed(),
            });
        }
    }

    /// Tries to make the building `slot` live: locks the live generation, applies whatever the live one has
    /// processed beyond the rebuild's checkpoint, and swaps. Returns `false` when an event failed in the final
    /// catch-up (the caller processes it with the failure policy and tries again).
    async fn swap(&self, p: &Registered, slot: &mut Slot) -> Result<bool> {
        let mut tx = self
            .backend
            .begin(
                slot,
                self.owner,
                self.lease_ttl,
                Some(slot.checkpoint),
                true,
            )
            .await?;
        let live = tx.live_checkpoint().unwrap_or(Position::START);
        let mut checkpoint = slot.checkpoint;
        let mut writes = DocBuffer::default();
        while checkpoint < live {
            let events = self
                .store
                .read_all(checkpoint, p.options.batch_size)
                .await?;
            let Some(last) = events.last() else { break };
            let last = last.position;
            // One buffer for every page: later pages read what earlier ones wrote in this transaction.
            match self.apply_into(p, tx.as_mut(), &events, &mut writes).await {
                Ok(_) => {}
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { .. }) => return Ok(false),
            }
            checkpoint = last;
        }
        let caught_up = checkpoint > slot.checkpoint;
        match tx
            .commit(Commit {
                writes: writes.into_writes(),
                checkpoint: Some(checkpoint),
                state: Some(SlotState::Live),
                swap: true,
                ..Commit::default()
            })
            .await
        {
            Ok(()) => {}
            // A write of the final catch-up refused for good: the rebuild loop applies those events under the
            // failure policy and swaps again.
            Err(e) if caught_up && !e.is_transient() && !matches!(e, Error::SwapRefused { .. }) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        slot.checkpoint = checkpoint;
        slot.live = true;
        self.notify(slot);
        Ok(true)
    }
}
