//! [`ProcessStatus`]: where a process manager is.

use annals::Position;
use annals_projections::{RunnerStatus, State};

/// The status of one process manager: its runner's checkpoint and lag, its open instances and its timers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProcessStatus {
    /// The process manager's name.
    pub name: String,
    /// The position of the last event of the log it has handled.
    pub checkpoint: Position,
    /// The store's head position.
    pub head: Position,
    /// How many positions it is behind the head.
    pub lag: u64,
    /// What its runner is doing (as for a projection).
    pub state: State,
    /// Instances started and not finished (as far as the checkpoint).
    pub open_instances: u64,
    /// Timers waiting to fire.
    pub timers_pending: u64,
    /// Timers that failed to fire too often and wait for an operator.
    pub timers_parked: u64,
    /// Events parked by the runner's failure policy (see `Projections::parked`).
    pub parked_events: usize,
    /// Inputs parked because their handling failed permanently, or behind such an input of the same instance
    /// ([`Process::parked`](crate::Process::parked) lists them with their reasons,
    /// [`Process::retry_parked`](crate::Process::retry_parked) handles them again).
    pub parked_inputs: u64,
    /// What its runner (fed by the projections runner) is doing under the supervisor in this process, and how
    /// often it was started again; `None` when it did not run in this process.
    pub runner: Option<RunnerStatus>,
    /// The same for its timer poller ([`Process::run_timers_supervised`](crate::Process::run_timers_supervised)).
    pub timers_runner: Option<RunnerStatus>,
}
