//! What the runner reports: status, parked events, rebuild progress and reports.

use std::fmt;
use std::time::Duration;

use annals::{EventId, Position, StreamId};

/// The stored state of one read-model generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    CatchingUp,
    Live,
    Rebuilding,
    Failed,
    Stopped,
}

/// How PostgreSQL and SQLite store a state (the `state` column of the slots table).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl SlotState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::CatchingUp => "catching_up",
            Self::Live => "live",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "catching_up" => Self::CatchingUp,
            "live" => Self::Live,
            "rebuilding" => Self::Rebuilding,
            "failed" => Self::Failed,
            _ => Self::Stopped,
        }
    }
}

/// What a projection is doing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum State {
    /// Never run: no read model stored yet.
    NotStarted,
    /// No runner holds it right now (the read model serves its last state).
    Stopped,
    /// A runner is applying a backlog.
    CatchingUp,
    /// A runner is following new events as they are appended.
    Live,
    /// A new version is being built (blue/green) while the current one serves reads.
    Rebuilding {
        /// The rebuild's checkpoint.
        checkpoint: Position,
        /// The version being built.
        version: u32,
    },
    /// Stopped at a failing event (failure policy stop).
    Failed {
        /// The error, naming projection, position, stream, event type and cause.
        error: String,
    },
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("not started"),
            Self::Stopped => f.write_str("stopped"),
            Self::CatchingUp => f.write_str("catching up"),
            Self::Live => f.write_str("live"),
            Self::Rebuilding {
                checkpoint,
                version,
            } => write!(f, "rebuilding v{version} (at {checkpoint})"),
            Self::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

/// The status of one projection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// The projection's name.
    pub name: String,
    /// The version of the code registered in this process.
    pub version: u32,
    /// The version of the stored (live) read model, if any.
    pub stored_version: Option<u32>,
    /// The position of the last event the live read model has processed.
    pub checkpoint: Position,
    /// The store's head position.
    pub head: Position,
    /// How many positions the read model is behind the head.
    pub lag: u64,
    /// What it is doing.
    pub state: State,
    /// Recent throughput of its runner, in events per second (0 when idle).
    pub events_per_second: f64,
    /// How many events are parked in its dead-letter list.
    pub parked: usize,
    /// What its supervised runner in this process is doing (running, restarting with the attempt, the last
    /// error and the next attempt's time, failed for good) and how often it was started again; `None` when no
    /// runner of it ran in this process.
    pub runner: Option<crate::RunnerStatus>,
}

/// An event a projection failed on and parked (failure policy park).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The event's global position.
    pub position: Position,
    /// The event's id.
    pub event_id: EventId,
    /// The event's stream.
    pub stream: StreamId,
    /// The event's type.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

/// What replaying the parked events did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Events applied and removed from the dead-letter list.
    pub replayed: usize,
    /// Events that failed again and stay parked.
    pub still_failing: usize,
}

/// Progress of a rebuild, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// The rebuild's checkpoint: positions up to here are done.
    pub done: u64,
    /// The head position when the rebuild (re)started (grows when the rebuild passes it).
    pub total: u64,
    /// Events applied so far by this run.
    pub events: u64,
    /// Time since this run started.
    pub elapsed: Duration,
}

/// How a rebuild ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebuildOutcome {
    /// The new version caught up and is now the live read model; the old one is dropped.
    Completed,
    /// Cancelled; the partial rebuild is kept and the next rebuild resumes it.
    Cancelled,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RebuildReport {
    /// The projection's name.
    pub name: String,
    /// The version built.
    pub version: u32,
    /// How it ended.
    pub outcome: RebuildOutcome,
    /// The position the rebuild had reached.
    pub checkpoint: Position,
    /// The position it resumed from (`START` for a fresh rebuild).
    pub resumed_from: Position,
    /// Events read by this run.
    pub events: u64,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// Events parked during the rebuild.
    pub parked: usize,
}

impl RebuildReport {
    /// Events per second of this run.
    pub fn events_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }
}
