//! One batch in one transaction: the wanted events applied through the backend's [`BatchTx`], committed with the
//! checkpoint, and why a batch did not commit ([`BatchError`]).

use std::borrow::Cow;

use annals::RecordedEvent;

use super::{Engine, Kind, Registered};
use crate::backend::{BatchTx, Commit, Slot};
use crate::documents::{DocBuffer, Documents};
#[cfg(feature = "postgres")]
use crate::error::is_transient_sqlx;
use crate::error::{BoxError, Error};
use crate::status::SlotState;

/// A wanted event of a batch, as projections see it, with its index in the batch.
type Wanted<'e> = (usize, Cow<'e, RecordedEvent>);

/// Why a batch did not commit.
pub(super) enum BatchError {
    /// The projection failed on the event at this index of the batch (`None`: the batch failed and which
    /// event caused it is unknown; the runner retries the events one by one to find it).
    Apply {
        index: Option<usize>,
        error: BoxError,
    },
    /// Infrastructure (store, database, ownership).
    Infra(Error),
}

impl BatchError {
    /// The same failure with its event's index counted `by` events further on (the index was within a part of
    /// the batch that starts there).
    fn shifted(self, by: usize) -> Self {
        match self {
            Self::Apply {
                index: Some(index),
                error,
            } => Self::Apply {
                index: Some(index + by),
                error,
            },
            other => other,
        }
    }
}

impl From<Error> for BatchError {
    fn from(e: Error) -> Self {
        Self::Infra(e)
    }
}

/// Whether an error from projection code is really a transient infrastructure failure (retry the batch: a lost
/// connection, a deadlock, a lost lease) or a failure of the event (the failure policy decides), by SQLSTATE.
pub(super) fn classify(index: Option<usize>, error: BoxError) -> BatchError {
    let error = match error.downcast::<Error>() {
        Ok(e) if e.is_transient() && !matches!(*e, Error::Busy { .. }) => {
            return BatchError::Infra(*e);
        }
        Ok(e) => e as BoxError,
        Err(error) => error,
    };
    #[cfg(feature = "postgres")]
    let error = match error.downcast::<sqlx::Error>() {
        Ok(source) if is_transient_sqlx(&source) => {
            return BatchError::Infra(Error::Database {
                operation: "apply",
                source: *source,
            });
        }
        Ok(source) => source as BoxError,
        Err(error) => error,
    };
    BatchError::Apply { index, error }
}

/// How a failed commit counts: transient errors are retried; permanent ones (a document PostgreSQL refuses)
/// are the failure of an event of the batch: `only` when the batch holds a single wanted event, else unknown.
pub(super) fn commit_failure(error: Error, only: Option<usize>) -> BatchError {
    if error.is_transient() {
        BatchError::Infra(error)
    } else {
        BatchError::Apply {
            index: only,
            error: Box::new(error),
        }
    }
}

impl Engine {
    /// The events of `events` that `p` wants, upcast, with their index in `events`. Filters on the name the
    /// event has after upcasting (a renamed event reaches the projections listing its new name).
    pub(super) fn wanted<'e>(
        &self,
        p: &Registered,
        events: &'e [RecordedEvent],
    ) -> std::result::Result<Vec<Wanted<'e>>, (usize, BoxError)> {
        let mut wanted = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let current = self.current(event).map_err(|error| (index, error))?;
            if p.wants(&current) {
                wanted.push((index, current));
            }
        }
        Ok(wanted)
    }

    /// Applies `events` inside `tx`, reading and writing documents through `buffer` (so a transaction that spans
    /// several pages sees its own earlier writes); returns the indexes of the events the projection wanted.
    pub(super) async fn apply_into(
        &self,
        p: &Registered,
        tx: &mut dyn BatchTx,
        events: &[RecordedEvent],
        buffer: &mut DocBuffer,
    ) -> std::result::Result<Vec<usize>, BatchError> {
        let wanted = self
            .wanted(p, events)
            .map_err(|(index, error)| BatchError::Apply {
                index: Some(index),
                error,
            })?;
        match &p.kind {
            Kind::Docs(projection) => {
                for (index, event) in &wanted {
                    let mut docs = Documents {
                        source: tx.docs(),
                        buffer: &mut *buffer,
                    };
                    projection
                        .apply(event, &mut docs)
                        .await
                        .map_err(|e| classify(Some(*index), e))?;
                    if let Some(refused) = buffer.take_refused() {
                        return Err(BatchError::Apply {
                            index: Some(*index),
                            error: Box::new(refused),
                        });
                    }
                }
            }
            #[cfg(feature = "postgres")]
            Kind::Sql(projection) => {
                let mut sql = tx.sql().ok_or_else(|| Error::SqlNeedsPostgres {
                    name: p.name.clone(),
                })?;
                let refs: Vec<&RecordedEvent> = wanted.iter().map(|(_, e)| e.as_ref()).collect();
                projection
                    .apply_batch(&refs, &mut sql)
                    .await
                    .map_err(|(j, e)| {
                        // Index 0 of several means "cannot tell which": found by retrying one by one.
                        let index = match (j, wanted.len()) {
                            (0, n) if n > 1 => None,
                            (j, _) => Some(wanted.get(j).map_or(0, |w| w.0)),
                        };
                        classify(index, e)
                    })?;
            }
            Kind::Leased => {
                return Err(BatchError::Infra(Error::Config {
                    reason: format!(
                        "projection {:?} is processed by the holder of its lease, not by a runner",
                        p.name
                    ),
                }));
            }
        }
        Ok(wanted.into_iter().map(|(index, _)| index).collect())
    }

    /// Applies one batch to `slot`: the projection's effects first, outside any transaction
    /// ([`run_effects`](Self::run_effects)), then the read model's writes with the checkpoint in one short
    /// transaction, as far as the effects got; again for the rest when the effects' time ran out. Events at or
    /// below the checkpoint (committed by an earlier part of this batch) are skipped: never applied twice, and the
    /// checkpoint never moves back. Returns how many wanted events were applied.
    pub(super) async fn try_batch(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        throughput: Option<f64>,
    ) -> std::result::Result<usize, BatchError> {
        let mut offset = events.partition_point(|e| e.position <= slot.checkpoint);
        let mut applied = 0;
        while offset < events.len() {
            let rest = &events[offset..];
            let effects = self.run_effects(p, rest).await;
            if effects.done > 0 {
                applied += self
                    .commit_batch(p, slot, &rest[..effects.done], state, throughput)
                    .await
                    .map_err(|e| e.shifted(offset))?;
            }
            if let Some(failed) = effects.failed {
                return Err(failed.shifted(offset));
            }
            offset += effects.done;
        }
        Ok(applied)
    }

    /// Applies `events` to the read model in one transaction and commits it with the checkpoint (their
    /// effects are done).
    async fn commit_batch(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        throughput: Option<f64>,
    ) -> std::result::Result<usize, BatchError> {
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let mut tx = self
            .backend
            .begin(
                slot,
                self.owner,
                self.lease_ttl,
                Some(slot.checkpoint),
                false,
            )
            .await?;
        let mut buffer = DocBuffer::default();
        let wanted = self.apply_into(p, tx.as_mut(), events, &mut buffer).await?;
        let only = match wanted.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        tx.commit(Commit {
            writes: buffer.into_writes(),
            checkpoint: Some(last.position),
            state: Some(state),
            throughput,
            ..Commit::default()
        })
        .await
        .map_err(|e| commit_failure(e, only))?;
        slot.checkpoint = last.position;
        self.notify(slot);
        Ok(wanted.len())
    }
}
