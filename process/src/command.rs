//! [`CommandSender`]: how a process manager's commands reach their targets.

use annals::{Metadata, async_trait};
use uuid::Uuid;

use crate::error::BoxError;

/// Delivers a process manager's commands (to a [`Repository`](annals::Repository), another service, ...).
///
/// # Implementing
/// One method. Execute the command *under its command id* ([`CommandContext::command_id`]): the same id may
/// arrive again after a crash, and must then have no second effect (execute it through the repository's
/// command ids, or make the target's decision recognise it). Record [`CommandContext::metadata`] on the events
/// the command appends, so correlation ids flow through.
///
/// # Errors
/// A domain refusal is not an error: return [`Sent::Refused`]. Return an error for anything else (the target is
/// unreachable, its store failed); the input is then handled again, by the failure policy, and the command is
/// sent again under the same id.
#[async_trait]
pub trait CommandSender<C>: Send + Sync + 'static {
    /// Executes `command`.
    async fn send(&self, command: &C, context: &CommandContext) -> Result<Sent, BoxError>;
}

/// What a command is sent with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandContext {
    /// Derived from what caused it (the triggering event, timer or refusal) and its place in the decision: the
    /// same on every re-send.
    pub command_id: Uuid,
    /// The process manager's name.
    pub process: String,
    /// The instance.
    pub instance: String,
    /// For the command's events: the correlation id of the input, the cause's id as causation id, and the
    /// command id under `extra["command_id"]`.
    pub metadata: Metadata,
}

/// How the target answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Carried out (or recognised as carried out before). Its events reach the process through the log.
    Accepted,
    /// Refused by the target's rules; the process decides on [`Input::Refused`](crate::Input::Refused).
    Refused {
        /// A short machine-readable code (such as `insufficient_funds`).
        reason: String,
    },
}
