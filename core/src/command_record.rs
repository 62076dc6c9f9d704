//! [`CommandRecord`]: what a store remembers about a command id whose outcome appended nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command_id::CommandId;
use crate::ids::{Position, StreamId, StreamVersion};

/// The outcome of a command under a [`CommandId`] that appended no events: a refusal, or a decision that
/// nothing needed to change. (Outcomes with events need no record: the events carry ids derived from the command
/// id, and the store already recognises stored ids.)
///
/// Stores keep these in a small record of their own ([`EventStore::record_command`](crate::EventStore::record_command));
/// the [`Repository`](crate::Repository) writes and reads them, applications never do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The command id.
    pub command_id: CommandId,
    /// The stream the command ran against.
    pub stream: StreamId,
    /// The stream's version when the command was decided: a repeat decides again on the state as of this
    /// version, which gives back the original answer.
    pub version: StreamVersion,
    /// Position of the stream's last event at that version ([`Position::START`] when it had none).
    pub position: Position,
    /// What the command decided.
    pub outcome: CommandOutcome,
    /// When the outcome was recorded (set by the store). Records may expire after a retention period; see
    /// `docs/command-ids.md`.
    pub recorded_at: DateTime<Utc>,
}

/// What a command that appended nothing decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CommandOutcome {
    /// The aggregate refused the command; `reason` is the refusal's message, which a repeat must reproduce.
    Refused {
        /// The refusal's `Display` text.
        reason: String,
    },
    /// The aggregate accepted the command and decided that no event was needed.
    Unchanged,
}

impl CommandOutcome {
    /// The outcome's kind as stored (`"refused"` or `"unchanged"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::Unchanged => "unchanged",
        }
    }

    /// The refusal's reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Refused { reason } => Some(reason),
            Self::Unchanged => None,
        }
    }

    /// Rebuilds an outcome from its stored kind and reason.
    ///
    /// # Errors
    /// A message naming the kind when it is unknown or a refusal has no reason.
    pub fn from_stored(kind: &str, reason: Option<String>) -> Result<Self, String> {
        match (kind, reason) {
            ("refused", Some(reason)) => Ok(Self::Refused { reason }),
            ("unchanged", _) => Ok(Self::Unchanged),
            (kind, _) => Err(format!("unknown command outcome {kind:?}")),
        }
    }
}
