//! Parked inputs: an input whose handling failed permanently ([`Error::is_permanent`](crate::Error::is_permanent))
//! is set aside with its reason, so that one instance never blocks the others; later inputs of the same
//! instance wait behind it, parked too, so an instance's inputs are still handled in order.

use annals::{Position, async_trait};
use chrono::{DateTime, Utc};

use crate::error::Result;

pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// One parked input of a process manager: an event of the log it could not handle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedInput {
    /// The event's position in the log (its key: an event is parked at most once per process).
    pub position: Position,
    /// The instance it was routed to; `None` when routing it failed.
    pub instance: Option<String>,
    /// The event's stream.
    pub stream: String,
    /// The event's type.
    pub event_type: String,
    /// Why it is parked: the error, or the earlier parked input of the same instance it waits behind.
    pub reason: String,
    /// How many times handling it failed (a retry that fails again counts).
    pub attempts: u32,
    /// When it was last parked.
    pub parked_at: DateTime<Utc>,
}

/// What [`Process::retry_parked`](crate::Process::retry_parked) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryReport {
    /// Inputs handled this time and no longer parked.
    pub handled: u64,
    /// Inputs still parked (they failed again, or wait behind one that did).
    pub still_parked: u64,
}

/// Where parked inputs are kept: beside the timers (process memory, or table `process_parked`).
#[async_trait]
pub(crate) trait ParkedStore: Send + Sync + 'static {
    /// Parks `input` for `process`; parking the same position again replaces its reason and counts an attempt.
    async fn park(&self, process: &str, input: &ParkedInput) -> Result<()>;
    /// The position of the earliest parked input of `instance`, if any (its later inputs wait behind it).
    async fn first_of(&self, process: &str, instance: &str) -> Result<Option<Position>>;
    /// Every parked input of `process`, in position order.
    async fn list(&self, process: &str) -> Result<Vec<ParkedInput>>;
    /// Removes the parked input at `position` (it was handled).
    async fn remove(&self, process: &str, position: Position) -> Result<()>;
    /// How many inputs `process` has parked.
    async fn count(&self, process: &str) -> Result<u64>;
}
