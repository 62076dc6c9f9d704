//! [`ExtraPath`]: how a store's own write paths (appends in a caller's transaction, a unit of work) join a checker
//! run.

use crate::{AppendResult, ExpectedVersion, NewEvent, Result, StreamId};

/// One append a path is asked to make.
#[derive(Debug, Clone)]
pub struct PathAppend {
    /// The stream.
    pub stream: StreamId,
    /// The expected version.
    pub expected: ExpectedVersion,
    /// The events (tagged by the checker).
    pub events: Vec<NewEvent>,
}

/// What the checker asks a path to do: make these appends, in order, in one transaction of the path's, then
/// commit it or not.
#[derive(Debug, Clone)]
pub struct PathRequest {
    /// The appends, in order (at most [`ExtraPath::max_appends`]).
    pub appends: Vec<PathAppend>,
    /// Whether to commit (else roll back, or drop the transaction).
    pub commit: bool,
    /// When committing, drop the first commit future at an await (after `interrupt_yields` yields), then commit
    /// again if the path can and report that answer: a commit must be cancel-safe.
    pub interrupt_commit: bool,
    /// How many times the interrupted commit is polled before it is dropped.
    pub interrupt_yields: u32,
}

/// How a path's transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// It committed: every append that succeeded is stored.
    Committed,
    /// It was rolled back or dropped, as asked: nothing is stored.
    RolledBack,
    /// The commit was refused with a definite answer (nothing is stored), for this reason.
    Refused(String),
    /// The commit's outcome is unknown (all of it is stored or none), for this reason.
    Unknown(String),
}

/// What a path did: each append's answer (in the order asked; fewer when it stopped early) and how its
/// transaction ended.
#[derive(Debug)]
pub struct PathReport {
    /// Each append's answer.
    pub appends: Vec<Result<AppendResult>>,
    /// How the transaction ended.
    pub finish: Finish,
}

/// A store-specific write path the checker drives beside the paths every store has. The checker checks that a
/// committed transaction stores every append that succeeded in it, and that one rolled back, dropped or refused
/// stores nothing.
#[crate::async_trait]
pub trait ExtraPath: Send + Sync {
    /// The path's name, in reports.
    fn name(&self) -> &str;

    /// How many appends one transaction of the path makes at most (1 by default).
    fn max_appends(&self) -> usize {
        1
    }

    /// Runs `request` and reports what happened.
    async fn run(&self, request: PathRequest) -> PathReport;
}
