//! A page of events with failing events in it: finding the event that failed (the events before it are
//! committed), then retrying, parking or stopping at it by the projection's [`FailurePolicy`](crate::FailurePolicy).

use annals::RecordedEvent;
use tracing::{debug, warn};

use super::batch::BatchError;
use super::{Engine, Registered, Shutdown, sleep_or_shutdown};
use crate::backend::{Commit, Slot, parked_from};
use crate::error::{BoxError, Error, Result, is_transient_cause};
use crate::status::SlotState;

/// What became of a failing event.
enum Poison {
    /// A retry succeeded.
    Applied,
    /// Parked in the dead-letter list.
    Parked,
    /// Shutdown came during a retry's backoff; the event is not applied.
    Interrupted,
}

impl Engine {
    /// Applies `events` one wanted event per transaction (the events it does not want ride along with the
    /// next one), until one fails: returns its index and error, or `None` when every one was applied.
    async fn one_by_one(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        applied: &mut usize,
    ) -> Result<Option<(usize, BoxError)>> {
        let wanted = match self.wanted(p, events) {
            Ok(wanted) => wanted.into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
            Err((at, error)) => {
                // Upcasting failed: that event is the culprit; the ones before it are applied first.
                if at > 0 {
                    match self.try_batch(p, slot, &events[..at], state, None).await {
                        Ok(n) => *applied += n,
                        Err(BatchError::Infra(e)) => return Err(e),
                        Err(BatchError::Apply { index, error }) => {
                            return Ok(Some((index.unwrap_or(0), error)));
                        }
                    }
                }
                return Ok(Some((at, error)));
            }
        };
        let mut start = 0;
        for end in wanted
            .iter()
            .map(|i| i + 1)
            .chain(std::iter::once(events.len()))
        {
            if end <= start {
                continue;
            }
            match self
                .try_batch(p, slot, &events[start..end], state, None)
                .await
            {
                Ok(n) => *applied += n,
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { index, error }) => {
                    return Ok(Some((start + index.unwrap_or(end - 1 - start), error)));
                }
            }
            start = end;
        }
        Ok(None)
    }

    /// Applies one page of events to `slot`, handling failing events by the projection's policy.
    /// Returns `false` when `stop` interrupted a retry backoff (the page is then not complete).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn process_page(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        parked: &mut usize,
        throughput: Option<f64>,
        stop: &Shutdown,
    ) -> Result<bool> {
        let mut rest = events;
        let mut applied = 0;
        while !rest.is_empty() {
            match self.try_batch(p, slot, rest, state, throughput).await {
                Ok(n) => {
                    applied += n;
                    break;
                }
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { index, error }) => {
                    let found = match index {
                        Some(0) => Some((0, error)),
                        Some(index) => {
                            match self.try_batch(p, slot, &rest[..index], state, None).await {
                                Ok(n) => {
                                    applied += n;
                                    Some((index, error))
                                }
                                Err(BatchError::Infra(e)) => return Err(e),
                                // The events before it fail too (at commit, say): find the first one that
                                // fails, one by one.
                                Err(BatchError::Apply { .. }) => {
                                    self.one_by_one(p, slot, rest, state, &mut applied).await?
                                }
                            }
                        }
                        // Which event failed is unknown: retry them one by one; the failing one alone meets
                        // the policy.
                        None => self.one_by_one(p, slot, rest, state, &mut applied).await?,
                    };
                    let Some((index, error)) = found else {
                        break;
                    };
                    let Some(poison) = rest.get(index) else {
                        break;
                    };
                    match self
                        .handle_poison(p, slot, poison, error, state, stop)
                        .await?
                    {
                        Poison::Applied => {}
                        Poison::Parked => *parked += 1,
                        Poison::Interrupted => return Ok(false),
                    }
                    applied += 1;
                    rest = &rest[index + 1..];
                }
            }
        }
        debug!(applied, "page applied");
        Ok(true)
    }

    /// Retries, parks or stops at a failing event.
    async fn handle_poison(
        &self,
        p: &Registered,
        slot: &mut Slot,
        event: &RecordedEvent,
        first: BoxError,
        state: SlotState,
        stop: &Shutdown,
    ) -> Result<Poison> {
        let policy = p.options.failure_policy;
        let mut error = first;
        let mut attempts = 1;
        for delay in policy.pauses() {
            warn!(projection = %p.name, position = event.position.get(), attempt = attempts,
                  ?delay, error = %error, "projection failed on an event; retrying");
            if sleep_or_shutdown(delay, &mut stop.clone()).await {
                return Ok(Poison::Interrupted);
            }
            attempts += 1;
            match self
                .try_batch(p, slot, std::slice::from_ref(event), state, None)
                .await
            {
                Ok(_) => return Ok(Poison::Applied),
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { error: e, .. }) => error = e,
            }
        }
        if is_transient_cause(&*error) {
            // The store or database is down: never park or fail an event for that. The runner ends here and a
            // supervisor starts it again at this event.
            warn!(projection = %p.name, position = event.position.get(), attempts, error = %error,
                  "projection cannot apply an event for now; stopping the runner for a supervisor to restart");
            return Err(Error::Interrupted {
                projection: p.name.clone(),
                position: event.position,
                attempts,
                cause: error.to_string(),
            });
        }
        if policy.park {
            warn!(projection = %p.name, position = event.position.get(), stream = %event.stream_id,
                  event_type = %event.event_type, error = %error, "parking event");
            let tx = self
                .backend
                .begin(
                    slot,
                    self.owner,
                    self.lease_ttl,
                    Some(slot.checkpoint),
                    false,
                )
                .await?;
            tx.commit(Commit {
                checkpoint: Some(event.position),
                park: vec![parked_from(event, error.to_string(), attempts)],
                ..Commit::default()
            })
            .await?;
            slot.checkpoint = event.position;
            self.notify(slot);
            return Ok(Poison::Parked);
        }
        let failure = Error::ProjectionFailed {
            projection: p.name.clone(),
            position: event.position,
            stream: event.stream_id.clone(),
            event_type: event.event_type.clone(),
            event_id: event.event_id,
            attempts,
            cause: error.to_string(),
        };
        let message = failure.to_string();
        tracing::error!(error = %message, "projection stopped");
        self.backend.fail(slot, self.owner, &message).await?;
        Err(failure)
    }
}
