//! The error type of the event feed.

use annals::Position;

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while relaying events to JetStream or consuming them through an inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration (subject prefix, stream name, window, consumer name). Fix the configuration.
    #[error("invalid event-feed configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// The NATS server cannot be reached or did not answer in time. Transient: retry later (the relay and the
    /// inbox do so by themselves, with backoff).
    #[error("NATS{}: {operation} failed: {cause}", at(url))]
    Unavailable {
        /// The server URL (no credentials); empty where the client does not say which server it was talking to.
        url: String,
        /// What was being done.
        operation: &'static str,
        /// The client's error, as text.
        cause: String,
    },

    /// JetStream refused a request in a way retrying does not fix (stream missing, subjects not bound, message
    /// too large, permission denied). Fix the broker's configuration or the relay's; nothing was checkpointed
    /// past the failing event.
    #[error("JetStream refused {operation}: {cause}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// The server's or client's reason.
        cause: String,
    },

    /// The existing JetStream stream does not fit the relay's configuration (its subjects do not cover the
    /// relay's, or its duplicate window differs). Update the stream (`nats stream edit`) or the relay's
    /// configuration; the relay never changes a stream it did not create.
    #[error("JetStream stream {stream:?} does not match the relay's configuration: {reason}")]
    StreamMismatch {
        /// The stream's name.
        stream: String,
        /// What differs.
        reason: String,
    },

    /// Publishing a batch did not complete: some events were not acknowledged within the attempts allowed.
    /// Transient when `transient` is set (the relay retries from its checkpoint); nothing at or after
    /// `position` was checkpointed.
    #[error("publishing position {position} did not complete after {attempts} attempt(s): {cause}")]
    Publish {
        /// The first event (in position order) that was not acknowledged.
        position: Position,
        /// How many times it was sent.
        attempts: u32,
        /// Whether a later retry may succeed (timeouts, lost connections) or not (refused).
        transient: bool,
        /// The last error.
        cause: String,
    },

    /// The relay's checkpoint database (the projections backend) did not answer in time: the lease renewal, the
    /// checkpoint commit or the acquisition was abandoned. Transient: the relay stops publishing before its lease
    /// could have expired and tries again with backoff.
    #[error("the relay's {operation} did not finish within {after:?}")]
    TimedOut {
        /// What was being done.
        operation: &'static str,
        /// How long the relay waited.
        after: std::time::Duration,
    },

    /// The event store failed. Usually retryable when it is [`annals::Error::Unavailable`].
    #[error(transparent)]
    Store(#[from] annals::Error),

    /// The projections machinery (checkpoint, lease) failed; see its variants.
    #[error(transparent)]
    Projections(Box<annals_projections::Error>),

    /// An inbox handler failed in a way that retrying may fix: its error is, or was caused by, a transient
    /// database error (a deadlock, a serialization failure, a lock or statement timeout, a lost connection; see
    /// `docs/event-feed.md`). The inbox hands the message back to the broker and retries it for as long as the
    /// failure lasts, without parking it; elsewhere retry later.
    #[error("the inbox handler failed transiently: {source}")]
    HandlerTransient {
        /// The handler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The consumer's PostgreSQL database failed. Connection problems are retried by the inbox; elsewhere retry
    /// later.
    #[error("inbox database: {operation} failed: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl From<annals_projections::Error> for Error {
    fn from(e: annals_projections::Error) -> Self {
        Self::Projections(Box::new(e))
    }
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. }
            | Self::Database { .. }
            | Self::HandlerTransient { .. }
            | Self::TimedOut { .. } => true,
            Self::Publish { transient, .. } => *transient,
            Self::Store(e) => e.is_retryable(),
            Self::Projections(e) => e.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }
}

/// ` at <url>` when the server is known, else nothing (never a dangling "NATS at :").
fn at(url: &str) -> String {
    if url.is_empty() {
        String::new()
    } else {
        format!(" at {url}")
    }
}
