//! Parking: an input whose handling failed permanently ([`Error::is_permanent`]) is set aside with its reason and
//! the runner goes on, so a failure that belongs to one instance never blocks the others. Later inputs of that
//! instance are parked behind it (an instance's inputs stay in order); [`Process::retry_parked`] handles them
//! again, in position order.

use std::collections::HashSet;

use annals::{Position, RecordedEvent};

use crate::error::{Error, Result};
use crate::handling::{Owned, Work};
use crate::parked::{ParkedInput, RetryReport};
use crate::process::{ProcessManager, Routed};
use crate::runner::{Inner, Process};

impl<P: ProcessManager> Inner<P> {
    /// Routes `event`: the instance it is for, if any. A routing error is the process's own ([`Error::Process`]).
    pub(crate) fn route_event(&self, event: &RecordedEvent) -> Result<Option<Routed<P::Trigger>>> {
        self.pm.route(event).map_err(|e| Error::Process {
            process: self.name.clone(),
            reason: format!(
                "routing event {} ({} at {}): {e}",
                event.event_type, event.stream_id, event.position
            ),
        })
    }

    /// Handles `event`, routed to `routed`'s instance.
    pub(crate) async fn handle_routed(
        &self,
        event: &RecordedEvent,
        routed: &Routed<P::Trigger>,
    ) -> Result<()> {
        let correlation = event
            .metadata
            .correlation_id
            .clone()
            .unwrap_or_else(|| event.event_id.to_string());
        self.handle(Work {
            instance: &routed.instance,
            starts: routed.starts,
            cause: event.event_id.0,
            correlation,
            input: Owned::Event(&routed.trigger),
        })
        .await
    }

    /// What the runner does with an event of the log: handles it, or parks it when its handling fails
    /// permanently or an earlier input of its instance is parked. Transient failures are returned (the runner's
    /// failure policy retries them).
    pub(crate) async fn handle_or_park(&self, event: &RecordedEvent) -> Result<()> {
        let routed = match self.route_event(event) {
            Ok(Some(routed)) => routed,
            Ok(None) => return Ok(()),
            Err(error) => return self.park(event, None, error.to_string()).await,
        };
        let instance = routed.instance.as_str();
        match self.timers.parked.first_of(&self.name, instance).await? {
            // Parked already (handled again after a restart): it stays parked.
            Some(first) if first == event.position => return Ok(()),
            Some(first) if first < event.position => {
                let reason = format!(
                    "waits behind the parked input at position {first} of instance {instance:?}"
                );
                return self.park(event, Some(instance), reason).await;
            }
            _ => {}
        }
        match self.handle_routed(event, &routed).await {
            Err(error) if error.is_permanent() => {
                self.park(event, Some(instance), error.to_string()).await
            }
            outcome => outcome,
        }
    }

    async fn park(
        &self,
        event: &RecordedEvent,
        instance: Option<&str>,
        reason: String,
    ) -> Result<()> {
        tracing::error!(process = %self.name, position = %event.position, stream = %event.stream_id,
            event_type = %event.event_type, instance, %reason, "an input is parked; the others go on");
        let input = ParkedInput {
            position: event.position,
            instance: instance.map(str::to_owned),
            stream: event.stream_id.to_string(),
            event_type: event.event_type.clone(),
            reason,
            attempts: 1,
            parked_at: chrono::Utc::now(),
        };
        self.timers.parked.park(&self.name, &input).await
    }

    /// The event at `position`.
    async fn event_at(&self, position: Position) -> Result<RecordedEvent> {
        let before = Position(position.get().saturating_sub(1));
        let events = self
            .store
            .read_all(before, 1)
            .await
            .map_err(|source| Error::Store {
                process: self.name.clone(),
                source,
            })?;
        events
            .into_iter()
            .find(|e| e.position == position)
            .ok_or_else(|| Error::Process {
                process: self.name.clone(),
                reason: format!(
                    "the parked input at position {position} is not in the store's log"
                ),
            })
    }
}

impl<P: ProcessManager> Process<P> {
    /// The inputs this process manager parked, in position order, with their reasons.
    ///
    /// # Errors
    /// [`Error::Parked`] when the store of parked inputs fails.
    pub async fn parked(&self) -> Result<Vec<ParkedInput>> {
        self.inner.timers.parked.list(&self.inner.name).await
    }

    /// Makes the parked timers (those that failed to fire `timer_attempts` times) due again at once, their
    /// attempts counted from zero, after the cause was fixed; returns how many. A running
    /// [`run_timers`](Self::run_timers) fires them at once; the firing is once in effect as always.
    ///
    /// # Errors
    /// [`Error::Timers`] when the timer store fails.
    pub async fn retry_parked_timers(&self) -> Result<u64> {
        let inner = &self.inner;
        let unparked = inner
            .timers
            .store
            .unpark(&inner.name, inner.options.timer_attempts)
            .await?;
        inner.timers.wake.notify_waiters();
        Ok(unparked)
    }

    /// Handles the parked inputs again, in position order (after the cause was fixed: the code, the data, a
    /// configuration), and unparks each one that succeeds. An input that fails permanently again stays parked
    /// with the new reason, and so do the later inputs of its instance. Safe while the runner runs and after
    /// any crash: handling is once in effect. Inputs the runner parks meanwhile wait for the next retry.
    ///
    /// # Errors
    /// A transient failure (the store or a command's target unavailable) stops the retry; the inputs not yet
    /// handled stay parked. [`Error::Parked`] when the store of parked inputs fails.
    pub async fn retry_parked(&self) -> Result<RetryReport> {
        let inner = &self.inner;
        let mut report = RetryReport::default();
        let mut failed = HashSet::new();
        for parked in inner.timers.parked.list(&inner.name).await? {
            if parked.instance.as_ref().is_some_and(|i| failed.contains(i)) {
                report.still_parked += 1;
                continue;
            }
            let event = inner.event_at(parked.position).await?;
            let outcome = match inner.route_event(&event) {
                Ok(Some(routed)) => inner.handle_routed(&event, &routed).await,
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {
                    inner
                        .timers
                        .parked
                        .remove(&inner.name, parked.position)
                        .await?;
                    report.handled += 1;
                }
                Err(error) if error.is_permanent() => {
                    let instance = parked.instance.as_deref();
                    inner.park(&event, instance, error.to_string()).await?;
                    failed.extend(parked.instance);
                    report.still_parked += 1;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(report)
    }
}
