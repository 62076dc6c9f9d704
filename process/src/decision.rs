//! [`Decision`]: what a process manager decided on one input.

use std::fmt;

use annals::Aggregate;
use chrono::{DateTime, Utc};

use crate::process::ProcessManager;

/// The process's own new events, the commands to issue and the timers to set or cancel.
pub struct Decision<P: ProcessManager + ?Sized> {
    /// Appended to the instance's stream, in order.
    pub events: Vec<<P::State as Aggregate>::Event>,
    /// Sent after the events are stored, in order; a refusal comes back as [`Input::Refused`](crate::Input).
    pub commands: Vec<P::Command>,
    /// Timers to schedule or cancel.
    pub timers: Vec<TimerRequest<P::Timer>>,
}

/// A change to one of the instance's timers, identified by its key within the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerRequest<T> {
    /// Wake the instance at `at` with `payload` (replaces a pending timer of the same key).
    Schedule {
        /// The timer's key within the instance.
        key: String,
        /// When it fires.
        at: DateTime<Utc>,
        /// What [`Input::Timer`](crate::Input::Timer) receives.
        payload: T,
    },
    /// Drop the pending timer of this key, if any.
    Cancel {
        /// The timer's key within the instance.
        key: String,
    },
}

impl<P: ProcessManager + ?Sized> Default for Decision<P> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            commands: Vec::new(),
            timers: Vec::new(),
        }
    }
}

impl<P: ProcessManager + ?Sized> fmt::Debug for Decision<P>
where
    <P::State as Aggregate>::Event: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("events", &self.events)
            .field("commands", &self.commands)
            .field("timers", &self.timers)
            .finish()
    }
}

impl<P: ProcessManager + ?Sized> Decision<P> {
    /// Nothing to do.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds an event.
    pub fn event(mut self, event: <P::State as Aggregate>::Event) -> Self {
        self.events.push(event);
        self
    }

    /// Adds a command.
    pub fn command(mut self, command: P::Command) -> Self {
        self.commands.push(command);
        self
    }

    /// Schedules timer `key` at `at` with `payload`.
    pub fn schedule(
        mut self,
        key: impl Into<String>,
        at: DateTime<Utc>,
        payload: P::Timer,
    ) -> Self {
        self.timers.push(TimerRequest::Schedule {
            key: key.into(),
            at,
            payload,
        });
        self
    }

    /// Cancels timer `key`.
    pub fn cancel(mut self, key: impl Into<String>) -> Self {
        self.timers.push(TimerRequest::Cancel { key: key.into() });
        self
    }

    /// Whether it does nothing at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.commands.is_empty() && self.timers.is_empty()
    }
}
