//! Replaying parked events: the live generation's dead letters applied again, in position order.

use annals::{Position, RecordedEvent};

use super::batch::{BatchError, commit_failure};
use super::{Engine, Registered};
use crate::backend::{Acquired, Commit, Slot, parked_from};
use crate::documents::DocBuffer;
use crate::error::{BoxError, Error, Result};
use crate::status::{ParkedEvent, ReplayReport};

impl Engine {
    /// Applies the parked events of the live generation again, in position order; removes those that succeed.
    /// Takes the live lease for the duration and gives it back on every way out, failures included.
    pub(crate) async fn replay_parked(&self, p: &Registered) -> Result<ReplayReport> {
        let parked = self.backend.parked(&p.name).await?;
        if parked.is_empty() {
            return Ok(ReplayReport::default());
        }
        let slot = match self
            .backend
            .acquire_live(p.target(), self.owner, self.lease_ttl)
            .await?
        {
            Acquired::Slot(slot) => slot,
            Acquired::Busy => {
                return Err(Error::Busy {
                    projection: p.name.clone(),
                    what: "live read model",
                });
            }
        };
        let replayed = self.replay_owned(p, &slot, parked).await;
        let released = self.backend.release(&slot, self.owner).await;
        let report = replayed?;
        released?;
        Ok(report)
    }

    async fn replay_owned(
        &self,
        p: &Registered,
        slot: &Slot,
        parked: Vec<ParkedEvent>,
    ) -> Result<ReplayReport> {
        let mut report = ReplayReport::default();
        for parked in parked {
            let Some(event) = self
                .store
                .read_all(Position(parked.position.get().saturating_sub(1)), 1)
                .await?
                .into_iter()
                .find(|e| e.position == parked.position)
            else {
                continue;
            };
            if let Some(failed) = self
                .run_effects(p, std::slice::from_ref(&event))
                .await
                .failed
            {
                match failed {
                    BatchError::Infra(e) => return Err(e),
                    BatchError::Apply { error, .. } => {
                        self.still_failing(slot, &event, &error, parked.attempts)
                            .await?;
                        report.still_failing += 1;
                        continue;
                    }
                }
            }
            let tx = self
                .backend
                .begin(slot, self.owner, self.lease_ttl, None, false)
                .await?;
            let mut tx = tx;
            let mut buffer = DocBuffer::default();
            let applied = match self
                .apply_into(p, tx.as_mut(), std::slice::from_ref(&event), &mut buffer)
                .await
            {
                Ok(_) => tx
                    .commit(Commit {
                        writes: buffer.into_writes(),
                        unpark: vec![parked.position],
                        ..Commit::default()
                    })
                    .await
                    .map_err(|e| commit_failure(e, Some(0))),
                Err(e) => {
                    drop(tx);
                    Err(e)
                }
            };
            match applied {
                Ok(()) => report.replayed += 1,
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { error, .. }) => {
                    self.still_failing(slot, &event, &error, parked.attempts)
                        .await?;
                    report.still_failing += 1;
                }
            }
        }
        Ok(report)
    }

    /// Parks `event` again after a replay failed on it, with the new error and one more attempt.
    async fn still_failing(
        &self,
        slot: &Slot,
        event: &RecordedEvent,
        error: &BoxError,
        attempts: u32,
    ) -> Result<()> {
        let tx = self
            .backend
            .begin(slot, self.owner, self.lease_ttl, None, false)
            .await?;
        tx.commit(Commit {
            park: vec![parked_from(event, error.to_string(), attempts + 1)],
            ..Commit::default()
        })
        .await
    }
}
