//! The error type of the projections crate.

use annals::{EventId, Position, StreamId};

/// A boxed error returned by projection code (`?` converts any error into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while running, rebuilding, querying or operating projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No projection of this name is registered. Fix the name; `known` lists the registered ones.
    #[error("unknown projection {name:?}; known projections: {}", known.join(", "))]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// Every registered name.
        known: Vec<String>,
    },

    /// A projection name breaks the naming rule (1 to 40 characters of `a-z`, `0-9` and `_`, starting with a
    /// letter). Rename the projection: the name is also a checkpoint key and part of table names.
    #[error("invalid projection name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// Two registered projections share a name. Give each a unique name.
    #[error("two projections are registered under the name {name:?}")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },

    /// A SQL projection was registered on the in-memory backend. Use document projections there, or PostgreSQL.
    #[error("projection {name:?} writes SQL tables and needs the PostgreSQL backend")]
    SqlNeedsPostgres {
        /// The projection's name.
        name: String,
    },

    /// A projection could not apply an event and its failure policy says stop. Fix the projection or the data
    /// and restart, or park the event (failure policy `park`). Events before it are applied and checkpointed;
    /// nothing after it is lost.
    #[error(
        "projection {projection:?} failed at position {position} (stream {stream:?}, event type {event_type:?}, \
         event id {event_id}) after {attempts} attempt(s): {cause}"
    )]
    ProjectionFailed {
        /// The projection's name.
        projection: String,
        /// Global position of the failing event.
        position: Position,
        /// Stream of the failing event.
        stream: StreamId,
        /// Type of the failing event.
        event_type: String,
        /// Id of the failing event.
        event_id: EventId,
        /// How many times it was tried.
        attempts: u32,
        /// Why it failed (the projection's error, as text).
        cause: String,
    },

    /// Another process (or runner) owns this projection (or its rebuild) right now. Wait for it, or stop it;
    /// a dead owner's lease expires after the lease time-to-live.
    #[error("projection {projection:?} is busy: its {what} is owned by another runner")]
    Busy {
        /// The projection's name.
        projection: String,
        /// `"live read model"` or `"rebuild"`.
        what: &'static str,
    },

    /// The stored read model was built by a newer version of the projection than this process runs. Deploy the
    /// newer code here too (or reset the projection).
    #[error(
        "projection {projection:?}: the read model is at version {stored}, this process runs version {code}"
    )]
    VersionAhead {
        /// The projection's name.
        projection: String,
        /// Version of the stored read model.
        stored: u32,
        /// Version of the code in this process.
        code: u32,
    },

    /// Waiting for a read model to reach a position timed out (HTTP 504 for read-your-writes). Retry later.
    #[error(
        "projection {projection:?} has processed up to position {reached}, not yet {position}, after waiting {waited_ms} ms"
    )]
    Lagging {
        /// The projection's name.
        projection: String,
        /// The position waited for.
        position: Position,
        /// The position it had reached.
        reached: Position,
        /// How long it waited, in milliseconds.
        waited_ms: u64,
    },

    /// A document could not be serialized or deserialized. The stored JSON does not fit the type asked for
    /// (or the value cannot be JSON): fix the type or rebuild the projection.
    #[error("document {collection:?}/{key:?}: {source}")]
    Document {
        /// The document's collection.
        collection: String,
        /// The document's key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A projection's own set-up code failed: [`SqlProjection::setup`](crate::SqlProjection::setup) or the
    /// [`Projection::reset`](crate::Projection::reset) hook. Fix the projection; nothing was applied.
    #[error("projection {projection:?}: {hook} failed: {cause}")]
    Hook {
        /// The projection's name.
        projection: String,
        /// `"setup"` or `"reset"`.
        hook: &'static str,
        /// The projection's error, as text.
        cause: String,
    },

    /// Invalid configuration (schema name, batch size, ...). Fix the configuration.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// The event store failed. Usually retryable when it is [`annals::Error::Unavailable`].
    #[error(transparent)]
    Store(#[from] annals::Error),

    /// The read-model database failed. Connection problems are retried by the runner; elsewhere retry later.
    #[error("read-model database: {operation} failed: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// This runner lost ownership of the projection (its lease expired and another runner took over, or a
    /// rebuild swapped the read model). The runner re-acquires ownership by itself; elsewhere retry.
    #[error("lost ownership of projection {projection:?}")]
    LostOwnership {
        /// The projection's name.
        projection: String,
    },
}

impl Error {
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }

    /// Whether retrying the same operation later may succeed (an unavailable store or database, a lost lease).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Database { .. } | Self::LostOwnership { .. } | Self::Busy { .. } => true,
            _ => false,
        }
    }
}

/// Checks a projection name: 1 to 40 characters of `a-z`, `0-9`, `_`, starting with a letter.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 40 {
        Some("it is longer than 40 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lowercase ASCII letter")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some("only lowercase ASCII letters, digits and '_' are allowed")
    } else if name.contains("__") {
        Some("it must not contain \"__\" (reserved for generations)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_names_follow_the_rule() {
        for ok in ["balances", "history_v2", "a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Balances", "lowercase"),
            ("2fast", "start"),
            ("has-dash", "only lowercase"),
            ("a__b", "__"),
            (&"x".repeat(41), "40"),
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }
}
