//! Handling one input once in effect: recognise an input handled before, decide, append, set timers, send.

use annals::{
    Aggregate, Error as StoreError, EventId, ExpectedVersion, Metadata, NewEvent, RecordedEvent,
    StreamId, StreamVersion,
};
use uuid::Uuid;

use crate::command::{CommandContext, Sent};
use crate::decision::TimerRequest;
use crate::error::{Error, Result};
use crate::ids;
use crate::process::{Input, ProcessManager};
use crate::runner::Inner;
use crate::timers::Timer;

/// An input owned by the handling loop.
pub(crate) enum Owned<'a, P: ProcessManager> {
    Event(&'a P::Trigger),
    Timer(P::Timer),
    Refused(P::Command, String),
}

impl<P: ProcessManager> Owned<'_, P> {
    fn input(&self) -> Input<'_, P> {
        match self {
            Self::Event(trigger) => Input::Event(*trigger),
            Self::Timer(payload) => Input::Timer(payload),
            Self::Refused(command, reason) => Input::Refused { command, reason },
        }
    }
}

/// One input to handle: what caused it (its id names everything the handling does) and its correlation id.
pub(crate) struct Work<'a, P: ProcessManager> {
    pub(crate) instance: &'a str,
    pub(crate) starts: bool,
    pub(crate) cause: Uuid,
    pub(crate) correlation: String,
    pub(crate) input: Owned<'a, P>,
}

/// A command that was refused, to be decided on next.
struct Refusal<P: ProcessManager> {
    command_id: Uuid,
    command: P::Command,
    reason: String,
}

impl<P: ProcessManager> Inner<P> {
    pub(crate) fn stream_of(&self, instance: &str) -> Result<StreamId> {
        StreamId::new(format!("{}-{instance}", self.pm.category())).map_err(|e| Error::Process {
            process: self.name.clone(),
            reason: format!("instance {instance:?} makes no valid stream id: {e}"),
        })
    }

    fn store_error(&self, source: StoreError) -> Error {
        Error::Store {
            process: self.name.clone(),
            source,
        }
    }

    /// Handles `work` and then every refusal it leads to, up to the configured number of steps.
    pub(crate) async fn handle(&self, work: Work<'_, P>) -> Result<()> {
        let instance = work.instance;
        let correlation = work.correlation.clone();
        let mut refusals = self.handle_one(work).await?;
        let mut steps = 1;
        while !refusals.is_empty() {
            let mut next = Vec::new();
            for refusal in refusals {
                steps += 1;
                if steps > self.options.max_steps {
                    return Err(Error::Process {
                        process: self.name.clone(),
                        reason: format!(
                            "instance {instance:?}: more than {} decisions chained through refused commands",
                            self.options.max_steps
                        ),
                    });
                }
                next.extend(
                    self.handle_one(Work {
                        instance,
                        starts: false,
                        cause: ids::child(refusal.command_id, "refused", 0),
                        correlation: correlation.clone(),
                        input: Owned::Refused(refusal.command, refusal.reason),
                    })
                    .await?,
                );
            }
            refusals = next;
        }
        Ok(())
    }

    /// Decides on one input and carries the decision out. An input handled before (its cause id is the
    /// causation id of events in the instance's stream) is decided again on the state it was decided on, so the
    /// same commands and timers come out; they are sent and set again under the same ids, and nothing is
    /// appended.
    async fn handle_one(&self, work: Work<'_, P>) -> Result<Vec<Refusal<P>>> {
        let stream = self.stream_of(work.instance)?;
        let cause = work.cause.to_string();
        let mut attempt = 0;
        let decision = loop {
            attempt += 1;
            let events = self
                .store
                .load_stream(&stream)
                .await
                .map_err(|e| self.store_error(e))?;
            if events.is_empty() && !work.starts {
                tracing::debug!(process = %self.name, instance = work.instance, "input for an instance that has not started; ignored");
                return Ok(Vec::new());
            }
            let (state, handled, version) =
                fold::<P>(&events, &cause).map_err(|e| self.store_error(e))?;
            let decision = self.pm.decide(work.instance, &state, work.input.input());
            if handled || decision.events.is_empty() {
                if !handled && !decision.commands.is_empty() {
                    return Err(Error::Process {
                        process: self.name.clone(),
                        reason: format!(
                            "instance {:?}: a decision issues commands without an event recording the step",
                            work.instance
                        ),
                    });
                }
                break decision;
            }
            let metadata = Metadata {
                correlation_id: Some(work.correlation.clone()),
                causation_id: Some(cause.clone()),
                ..Default::default()
            };
            let new_events = decision
                .events
                .iter()
                .enumerate()
                .map(|(index, event)| {
                    NewEvent::from_event(event).map(|new| {
                        new.with_id(EventId(ids::child(work.cause, "event", index)))
                            .with_metadata(metadata.clone())
                    })
                })
                .collect::<annals::Result<Vec<_>>>()
                .map_err(|e| self.store_error(e))?;
            match self
                .store
                .append(&stream, ExpectedVersion::Exact(version), new_events)
                .await
            {
                Ok(_) => break decision,
                Err(StoreError::Conflict { .. } | StoreError::Unavailable { .. })
                    if attempt <= self.options.conflict_retries =>
                {
                    tracing::debug!(process = %self.name, %stream, attempt, "instance changed or store unavailable; deciding again");
                    tokio::time::sleep(DECIDE_AGAIN.pause(attempt - 1)).await;
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(Error::Contended {
                        process: self.name.clone(),
                        stream,
                        attempts: attempt,
                    });
                }
                Err(other) => return Err(self.store_error(other)),
            }
        };

        for request in decision.timers {
            self.apply_timer(work.instance, work.cause, &work.correlation, request)
                .await?;
        }
        let mut refusals = Vec::new();
        for (index, command) in decision.commands.into_iter().enumerate() {
            let command_id = ids::child(work.cause, "command", index);
            let context = CommandContext {
                command_id,
                process: self.name.clone(),
                instance: work.instance.to_owned(),
                metadata: Metadata {
                    correlation_id: Some(work.correlation.clone()),
                    causation_id: Some(cause.clone()),
                    ..Default::default()
                }
                .with("command_id", command_id.to_string()),
            };
            match self.sender.send(&command, &context).await {
                Ok(Sent::Accepted) => {}
                Ok(Sent::Refused { reason }) => {
                    tracing::debug!(process = %self.name, instance = work.instance, %reason, "command refused");
                    refusals.push(Refusal {
                        command_id,
                        command,
                        reason,
                    });
                }
                Err(source) => {
                    return Err(Error::Send {
                        process: self.name.clone(),
                        command_id,
                        source,
                    });
                }
            }
        }
        Ok(refusals)
    }

    async fn apply_timer(
        &self,
        instance: &str,
        cause: Uuid,
        correlation: &str,
        request: TimerRequest<P::Timer>,
    ) -> Result<()> {
        match request {
            TimerRequest::Schedule { key, at, payload } => {
                let payload =
                    serde_json::to_value(&payload).map_err(|source| Error::TimerPayload {
                        process: self.name.clone(),
                        instance: instance.to_owned(),
                        key: key.clone(),
                        source,
                    })?;
                let timer = Timer {
                    process: self.name.clone(),
                    instance: instance.to_owned(),
                    fire_id: ids::timer_firing(
                        cause,
                        &self.name,
                        instance,
                        &key,
                        at.timestamp_micros(),
                    ),
                    key,
                    due_at: at,
                    payload,
                    correlation_id: Some(correlation.to_owned()),
                    attempts: 0,
                };
                self.timers.schedule(&timer).await?;
            }
            TimerRequest::Cancel { key } => {
                self.timers.store.cancel(&self.name, instance, &key).await?;
            }
        }
        Ok(())
    }
}

/// Folds the instance's events into its state, stopping before the first event caused by `cause` (the state that
/// input was decided on). Returns the state, whether `cause` was handled, and the stream's version.
fn fold<P: ProcessManager>(
    events: &[RecordedEvent],
    cause: &str,
) -> annals::Result<(P::State, bool, StreamVersion)> {
    let mut state = P::State::default();
    let version = events
        .last()
        .map_or(StreamVersion::NONE, |e| e.stream_version);
    for event in events {
        if event.metadata.causation_id.as_deref() == Some(cause) {
            return Ok((state, true, version));
        }
        let decoded: <P::State as Aggregate>::Event = event.decode()?;
        state.apply(&decoded);
    }
    Ok((state, false, version))
}

/// The pauses before deciding again after a conflict or an unavailable store: up to 1 ms, doubling to at most
/// 128 ms, jittered; how many decisions there are is the options' `conflict_retries`.
const DECIDE_AGAIN: annals::RetryPolicy = annals::RetryPolicy::new(
    std::time::Duration::from_millis(1),
    std::time::Duration::from_millis(128),
    0,
);
