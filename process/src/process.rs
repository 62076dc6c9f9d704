//! [`ProcessManager`]: the pure part of a process: which events it reacts to and what it decides.

use std::fmt::Debug;

use annals::{Aggregate, RecordedEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::decision::Decision;
use crate::error::BoxError;

/// A process that spans several aggregates: it reacts to events, issues commands, remembers where it is in an
/// event-sourced state of its own, and undoes earlier steps when a later one is refused.
///
/// Each instance (one transfer, one order) keeps its state in its own stream, `{category}-{instance}`, folded
/// by [`Self::State`] (an [`Aggregate`], so the application may also send commands to the instance itself, for
/// example to request or cancel it). The decision logic is pure, like an aggregate's: given the state and an
/// [`Input`] (an event from the log, a timer, or a refused command), [`decide`](Self::decide) returns the
/// process's new events, the commands to issue and the timers to set.
///
/// # Implementing
/// Three methods are required: [`name`](Self::name), [`route`](Self::route) (which events start or advance an
/// instance, and which instance: the correlation) and [`decide`](Self::decide). Record every step that issues
/// a command in an event of the decision: that is how a re-handled input is recognised (see the crate docs).
pub trait ProcessManager: Send + Sync + 'static {
    /// The instance's state, folded from its stream.
    type State: Aggregate + Send + Sync;
    /// What [`route`](Self::route) extracts from an event of the log for [`decide`](Self::decide).
    type Trigger: Debug + Send + Sync;
    /// The commands the process issues to other aggregates or services.
    type Command: Debug + Clone + Send + Sync;
    /// The payload of its timers (stored as JSON until the timer fires).
    type Timer: Debug + Clone + Serialize + DeserializeOwned + Send + Sync;

    /// The stable name: projection (checkpoint) name and timer namespace (`a-z`, `0-9`, `_`, at most 40
    /// characters). Never change it.
    fn name(&self) -> &str;

    /// The prefix of the instances' streams: `{category}-{instance}`. Defaults to [`name`](Self::name).
    fn category(&self) -> &str {
        self.name()
    }

    /// Whether `event` concerns this process, and if so which instance and with what trigger. `None` for
    /// events it ignores. Events of its own instances' streams are offered too (an event written by a command
    /// to the instance, such as a request, can start it).
    ///
    /// # Errors
    /// When a wanted event cannot be decoded; the failure policy handles it.
    fn route(&self, event: &RecordedEvent) -> Result<Option<Routed<Self::Trigger>>, BoxError>;

    /// Decides on one input to `instance`, given its state. Pure: no I/O, no clock (timers carry their own
    /// time).
    fn decide(&self, instance: &str, state: &Self::State, input: Input<'_, Self>)
    -> Decision<Self>;

    /// Whether an instance whose stream ends with `event` is finished (its status no longer counts it as open).
    /// Defaults to never.
    fn is_final(&self, event: &<Self::State as Aggregate>::Event) -> bool {
        let _ = event;
        false
    }
}

/// One input of a decision.
#[derive(Debug)]
pub enum Input<'a, P: ProcessManager + ?Sized> {
    /// An event of the log, as [`ProcessManager::route`] extracted it.
    Event(&'a P::Trigger),
    /// A timer the process set has come due.
    Timer(&'a P::Timer),
    /// A command the process issued was refused by its target (a domain error): decide how to compensate.
    Refused {
        /// The command, as issued.
        command: &'a P::Command,
        /// The target's reason (a short machine-readable code, such as `insufficient_funds`).
        reason: &'a str,
    },
}

/// Where an event of the log goes: the instance, whether it may start one, and the trigger for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<T> {
    /// The instance (its correlation, such as the transfer id).
    pub instance: String,
    /// Whether the event may start an instance whose stream is still empty; other events are ignored for an
    /// instance that has not started.
    pub starts: bool,
    /// What the decision receives.
    pub trigger: T,
}

impl<T> Routed<T> {
    /// An event that starts (or advances) `instance`.
    pub fn start(instance: impl Into<String>, trigger: T) -> Self {
        Self {
            instance: instance.into(),
            starts: true,
            trigger,
        }
    }

    /// An event that advances an instance that has started.
    pub fn advance(instance: impl Into<String>, trigger: T) -> Self {
        Self {
            instance: instance.into(),
            starts: false,
            trigger,
        }
    }
}
