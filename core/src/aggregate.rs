//! The [`Aggregate`] trait: pure, synchronous domain logic.

use crate::event::Event;

/// A consistency boundary whose state is the fold of its events.
///
/// `Default` is the state before the first event: an aggregate that does not exist yet. Deciding on a command
/// reads the state and returns new events or a domain error; applying an event evolves the state and cannot fail.
/// Neither does I/O: the [`Repository`](crate::Repository) loads, decides, appends and retries around them.
///
/// # Implementing
/// ```
/// use annals::Aggregate;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct Counter { value: u32, exists: bool }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     #[serde(rename = "CounterCreated")]
///     Created,
///     #[serde(rename = "CounterIncremented")]
///     Incremented { by: u32 },
/// }
/// impl annals::Event for CounterEvent {}
///
/// enum CounterCommand { Create, Increment(u32) }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum CounterError {
///     #[error("the counter exists already")]
///     Exists,
///     #[error("the counter does not exist")]
///     Missing,
/// }
///
/// impl Aggregate for Counter {
///     type Command = CounterCommand;
///     type Event = CounterEvent;
///     type Error = CounterError;
///
///     fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
///         match (command, self.exists) {
///             (CounterCommand::Create, false) => Ok(vec![CounterEvent::Created]),
///             (CounterCommand::Create, true) => Err(CounterError::Exists),
///             (CounterCommand::Increment(by), true) => Ok(vec![CounterEvent::Incremented { by: *by }]),
///             (CounterCommand::Increment(_), false) => Err(CounterError::Missing),
///         }
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event {
///             CounterEvent::Created => self.exists = true,
///             CounterEvent::Incremented { by } => self.value += by,
///         }
///     }
/// }
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// What callers ask the aggregate to do (imperative: `Deposit`).
    type Command: Send + Sync;
    /// What happened (past tense: `MoneyDeposited`).
    type Event: Event;
    /// Why a command was refused. A domain rejection: the caller's fault, never retried.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides what happens when `command` meets the current state: the new events (possibly none), or a
    /// domain error.
    ///
    /// # Errors
    /// The domain's reason to refuse the command.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event. Must not fail: the event already happened.
    fn apply(&mut self, event: &Self::Event);

    /// The state after `events`, starting from [`Default`].
    fn from_events<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}
