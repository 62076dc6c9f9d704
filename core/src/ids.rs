//! Identifiers, versions and positions: small newtypes so that a stream version is never mistaken for a
//! global position.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest stream id a store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 255;

/// The identifier of one event stream (usually one aggregate instance, for example `account-42`).
///
/// A stream id is non-empty, at most [`MAX_STREAM_ID_LEN`] bytes long and contains no control characters.
/// Anything else (quotes, unicode, SQL keywords) is kept verbatim.
///
/// ```
/// use annals::StreamId;
///
/// let id = StreamId::new("account-42").unwrap();
/// assert_eq!(id.as_str(), "account-42");
/// assert!(StreamId::new("").is_err());
/// assert!(StreamId::new("bad\nid").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    /// [`InvalidStreamId`] naming the rule that `id` breaks.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidStreamId> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some(InvalidStreamIdReason::Empty)
        } else if id.len() > MAX_STREAM_ID_LEN {
            Some(InvalidStreamIdReason::TooLong { len: id.len() })
        } else {
            id.char_indices()
                .find(|(_, c)| c.is_control())
                .map(|(at, c)| InvalidStreamIdReason::ControlCharacter { at, code: c as u32 })
        };
        match reason {
            Some(reason) => Err(InvalidStreamId { id, reason }),
            None => Ok(Self(id)),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id and returns the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for StreamId {
    type Err = InvalidStreamId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

/// A stream id that breaks one of the rules of [`StreamId::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream id {id:?}: {reason}")]
pub struct InvalidStreamId {
    /// The rejected id, verbatim.
    pub id: String,
    /// The rule it breaks.
    pub reason: InvalidStreamIdReason,
}

/// Why a stream id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStreamIdReason {
    /// The id is the empty string.
    #[error("it is empty")]
    Empty,
    /// The id is longer than [`MAX_STREAM_ID_LEN`] bytes.
    #[error("it is {len} bytes long, the limit is {MAX_STREAM_ID_LEN}")]
    TooLong {
        /// The id's length in bytes.
        len: usize,
    },
    /// The id contains a control character (newline, NUL, ...).
    #[error("it contains the control character U+{code:04X} at byte {at}")]
    ControlCharacter {
        /// Byte offset of the character.
        at: usize,
        /// The character's code point.
        code: u32,
    },
}

/// The version of a stream: the number of events in it, which is also the 1-based version of its last event.
///
/// `StreamVersion::NONE` (0) is the version of a stream that has no events yet.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// The version of a stream with no events.
    pub const NONE: Self = Self(0);
    /// The version of a stream's first event.
    pub const FIRST: Self = Self(1);

    /// The version as a plain number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A position in the store-wide (global) order of events. Positions grow with every append but may have gaps.
///
/// `Position::START` (0) lies before the first event: reading "after `START`" reads everything.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position before the first event.
    pub const START: Self = Self(0);

    /// The position as a plain number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// The unique id of one event across the whole store (a UUID v7, so ids sort roughly by creation time).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// The nil UUID: the id of no stored event (appends refuse it), which reads that leave ids out hand over
    /// instead ([`EventStore::fold_all`](crate::EventStore::fold_all),
    /// [`CommandSession::fold_stream`](crate::CommandSession::fold_stream)).
    pub const NIL: Self = Self(Uuid::nil());

    /// A fresh, time-ordered id (UUID v7).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Uuid> for EventId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_rules() {
        assert_eq!(
            StreamId::new("").unwrap_err().reason,
            InvalidStreamIdReason::Empty
        );
        let long = "x".repeat(MAX_STREAM_ID_LEN + 1);
        assert!(matches!(
            StreamId::new(long).unwrap_err().reason,
            InvalidStreamIdReason::TooLong { len: 256 }
        ));
        assert!(StreamId::new("x".repeat(MAX_STREAM_ID_LEN)).is_ok());
        let err = StreamId::new("a\u{0}b").unwrap_err();
        assert_eq!(
            err.reason,
            InvalidStreamIdReason::ControlCharacter { at: 1, code: 0 }
        );
        assert!(err.to_string().contains("U+0000"), "{err}");
        for ok in ["it's", "Ωμέγα-1", "'; DROP TABLE events; --", "a b"] {
            assert_eq!(StreamId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn stream_id_deserialize_validates() {
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<StreamId>("\"a-1\"")
                .unwrap()
                .as_str(),
            "a-1"
        );
    }
}
