//! Optimistic concurrency: what the caller believes the stream's version to be.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::StreamVersion;

/// The version a caller expects a stream to be at when appending (KurrentDB's semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's version.
    Any,
    /// The stream must not exist yet (have no events).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's current version must be exactly this; `Exact(StreamVersion::NONE)` means the same as
    /// [`ExpectedVersion::NoStream`].
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream at version `actual` satisfies this expectation.
    pub fn matches(self, actual: StreamVersion) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == StreamVersion::NONE,
            Self::StreamExists => actual > StreamVersion::NONE,
            Self::Exact(expected) => expected == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

impl From<StreamVersion> for ExpectedVersion {
    fn from(value: StreamVersion) -> Self {
        Self::Exact(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let (none, one) = (StreamVersion::NONE, StreamVersion(1));
        assert!(ExpectedVersion::Any.matches(none) && ExpectedVersion::Any.matches(one));
        assert!(ExpectedVersion::NoStream.matches(none) && !ExpectedVersion::NoStream.matches(one));
        assert!(!ExpectedVersion::StreamExists.matches(none));
        assert!(ExpectedVersion::StreamExists.matches(one));
        assert!(ExpectedVersion::Exact(one).matches(one));
        assert!(!ExpectedVersion::Exact(one).matches(none));
        assert!(ExpectedVersion::Exact(none).matches(none));
    }
}
