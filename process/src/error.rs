//! The error type of the process-manager crate.

use annals::StreamId;

/// A boxed error returned by application code (command senders, routing); `?` converts any error into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while handling an input of a process manager, firing its timers or reading its status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event store failed (unavailable, conflict retries exhausted, undecodable data). Transient store
    /// failures are worth retrying: the runner's failure policy does so when it is `retry`.
    #[error("process {process:?}: event store: {source}")]
    Store {
        /// The process manager's name.
        process: String,
        /// The store's error.
        #[source]
        source: annals::Error,
    },

    /// The instance's stream kept changing under the handler (other writers won every attempt). Retry later.
    #[error(
        "process {process:?}: stream {stream} kept changing; gave up after {attempts} attempts"
    )]
    Contended {
        /// The process manager's name.
        process: String,
        /// The instance's stream.
        stream: StreamId,
        /// Attempts made.
        attempts: u32,
    },

    /// The process manager's own code failed: routing an event, or a decision that breaks the rules (for
    /// example commands without an event recording them). Fix the code; the failure policy decides whether the
    /// event is retried, parked or stops the runner.
    #[error("process {process:?}: {reason}")]
    Process {
        /// The process manager's name.
        process: String,
        /// What was wrong.
        reason: String,
    },

    /// Sending a command failed for a reason other than a refusal (the target is unreachable, its store
    /// failed). The command is sent again, under the same command id, when the input is handled again.
    #[error("process {process:?}: sending command {command_id} failed: {source}")]
    Send {
        /// The process manager's name.
        process: String,
        /// The command's derived id.
        command_id: uuid::Uuid,
        /// The sender's error.
        #[source]
        source: BoxError,
    },

    /// A timer's payload could not be stored or read back (it does not serialize, or the stored JSON no longer
    /// fits the timer type). Fix the payload type or the stored row.
    #[error("process {process:?}: timer {key:?} of instance {instance:?}: {source}")]
    TimerPayload {
        /// The process manager's name.
        process: String,
        /// The instance.
        instance: String,
        /// The timer's key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The timer store failed (a database error). Transient: the poller backs off and tries again.
    #[error("timer store: {operation}: {reason}")]
    Timers {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        reason: String,
    },

    /// The projections runner underneath failed (checkpoints, leases, status).
    #[error(transparent)]
    Projections(Box<annals_projections::Error>),
}

impl From<annals_projections::Error> for Error {
    fn from(value: annals_projections::Error) -> Self {
        Self::Projections(Box::new(value))
    }
}
