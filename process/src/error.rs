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

    /// A decision scheduled a timer due outside [`timer_due_range`](crate::timer_due_range), which no timer
    /// store keeps the same way (PostgreSQL cannot hold year -5000 at all). Permanent for this input: the
    /// runner parks it. Check due times where they enter (an API answers `400`).
    #[error(
        "process {process:?}: timer {key:?} of instance {instance:?} is due at {due_at}, outside the accepted range \
         {range}"
    )]
    DueOutOfRange {
        /// The process manager's name.
        process: String,
        /// The instance.
        instance: String,
        /// The timer's key.
        key: String,
        /// The refused due time.
        due_at: chrono::DateTime<chrono::Utc>,
        /// The accepted range, as text.
        range: String,
    },

    /// The timer store failed (a database error). Transient: the poller backs off and tries again.
    #[error("timer store: {operation}: {reason}")]
    Timers {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        reason: String,
    },

    /// The store of parked inputs failed (a database error). Transient: the runner retries the input.
    #[error("parked inputs: {operation}: {reason}")]
    Parked {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        reason: String,
    },

    /// The projections runner underneath failed (checkpoints, leases, status).
    #[error(transparent)]
    Projections(Box<annals_projections::Error>),
}

impl Error {
    /// Whether the failure belongs to the one input being handled and handling it again cannot help: a
    /// decision that breaks the rules, a routing (decoding) error, a timer payload or due time no store keeps,
    /// an event of the instance that does not decode or cannot be stored. The runner parks such an input
    /// and goes on with the others.
    ///
    /// Everything else is worth retrying or is not the input's fault (the store or the timer store
    /// unavailable, a contended stream, a failed send, a misconfigured backend): the runner's failure policy
    /// retries it and it never parks.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Store { source, .. } => matches!(
                source,
                annals::Error::InvalidStreamId(_)
                    | annals::Error::EventIdReused { .. }
                    | annals::Error::InvalidAppend { .. }
                    | annals::Error::Encode { .. }
                    | annals::Error::Decode { .. }
                    | annals::Error::CommandIdUsed { .. }
            ),
            Self::Process { .. } | Self::TimerPayload { .. } | Self::DueOutOfRange { .. } => true,
            _ => false,
        }
    }
}

impl From<annals_projections::Error> for Error {
    fn from(value: annals_projections::Error) -> Self {
        Self::Projections(Box::new(value))
    }
}
