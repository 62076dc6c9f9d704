//! The recorded history: every operation's client, kind, stream, expected version, what it wrote, when it started
//! and ended on one logical clock, and what it returned.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::{ExpectedVersion, Position, StreamId, StreamVersion};

use super::stock::{Action, Tag};

/// The end of an operation that never answered (its future was dropped, or its outcome is unknown): it may take
/// effect at any later time.
pub const NEVER: u64 = u64::MAX;

/// The outcome of an operation that has not answered yet.
pub(crate) const PENDING: &str = "pending: no answer yet";

/// The outcome of an operation whose future the harness dropped at an await.
pub(crate) const CANCELLED: &str = "cancelled: the future was dropped at an await";

/// Which path an operation went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `EventStore::append`.
    Append,
    /// A `CommandSession`'s read (`fold_stream` when `lean`, else `visit_stream`).
    SessionRead {
        /// Whether the read was `fold_stream`.
        lean: bool,
    },
    /// A `CommandSession`'s append after its read.
    SessionAppend,
    /// `Repository::execute`.
    Execute,
    /// `Repository::execute_once` under a command id (`repeat`: an id the client used before).
    ExecuteOnce {
        /// The command id.
        id: String,
        /// Whether the client used the id before, with the same command.
        repeat: bool,
    },
    /// `CachedRepository::execute`, on the client's own cache.
    Cached,
    /// An append through a store-specific path, in a transaction shared with the other appends of `group`.
    Path {
        /// The path's name.
        name: String,
        /// The transaction (all appends of one run of the path).
        group: u64,
        /// Whether the run meant to commit.
        commit: bool,
    },
}

/// What an operation meant to write: the tag its events carry and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The tag every event of the write carries (`Tag::op`); attempts of one write share it.
    pub tag: u64,
    /// How many events an accepted write appends.
    pub events: usize,
    /// The command, when an aggregate decides the events.
    pub action: Option<Action>,
}

/// The fault the harness injected into an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None.
    None,
    /// The next `n` appends commit, then report `Unavailable` (lost acknowledgements).
    LostAcks(u32),
    /// The next `n` appends fail with `Unavailable` before reaching the store.
    Unreachable(u32),
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An append was acknowledged.
    Appended {
        /// The stream's version after it.
        version: StreamVersion,
        /// Its first event's position.
        first: Position,
        /// Its last event's position.
        last: Position,
    },
    /// A command was executed.
    Executed {
        /// The stream's version after it.
        version: StreamVersion,
        /// The position of its last event.
        position: Position,
        /// How many events it reported.
        events: usize,
        /// Whether it replayed an earlier outcome of its command id.
        replayed: bool,
    },
    /// A stream read found `version`, with these events' tags in order.
    Read {
        /// The version read.
        version: StreamVersion,
        /// The tags of the events read.
        tags: Vec<Option<Tag>>,
    },
    /// The store answered `Conflict`, naming the stream's version.
    Conflict {
        /// The version the conflict names.
        actual: StreamVersion,
    },
    /// A command kept conflicting until its retries ran out (nothing stored).
    GaveUp,
    /// The aggregate refused (nothing stored), on a state of `units`.
    Refused {
        /// Units asked for.
        wanted: u64,
        /// Units the refusal saw.
        units: i64,
    },
    /// A definite failure: nothing was stored (rejected input, a rolled-back or refused transaction, a command's
    /// store error before or without its append).
    Failed(String),
    /// An append succeeded inside a transaction whose commit has no answer: stored wholly at these versions, or
    /// not at all, together with the rest of its transaction.
    InDoubt {
        /// The stream's version after it, inside the transaction.
        version: StreamVersion,
        /// Its first event's position.
        first: Position,
        /// Its last event's position.
        last: Position,
    },
    /// The outcome is unknown: stored wholly or not at all (a dropped future, `Unavailable`,
    /// `OutcomeUnknown`, a commit without an answer).
    Unknown(String),
    /// An answer the contract does not allow on this path.
    Unexpected(String),
}

impl Outcome {
    /// Whether the write (if any) is certainly stored.
    pub fn acknowledged(&self) -> bool {
        matches!(self, Self::Appended { .. } | Self::Executed { .. })
    }

    /// Whether the write (if any) is certainly not stored.
    pub fn definitely_failed(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::GaveUp | Self::Refused { .. } | Self::Failed(_)
        )
    }
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Op {
    /// Its number, unique in the run.
    pub id: u64,
    /// The client that issued it.
    pub client: usize,
    /// The path it went through.
    pub kind: Kind,
    /// The stream.
    pub stream: StreamId,
    /// The expected version it appended with, if it appended with one it chose.
    pub expected: Option<ExpectedVersion>,
    /// What it meant to write, if anything.
    pub write: Option<Write>,
    /// The fault injected into it.
    pub fault: Fault,
    /// The logical time it started.
    pub start: u64,
    /// The logical time it answered ([`NEVER`] while it has not).
    pub end: u64,
    /// What it returned.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} client {} {:?} {}",
            self.id, self.client, self.kind, self.stream
        )?;
        if let Some(expected) = self.expected {
            write!(f, " expecting {expected:?}")?;
        }
        if let Some(write) = &self.write {
            write!(f, " writes tag {} ×{}", write.tag, write.events)?;
            if let Some(action) = write.action {
                write!(f, " ({action:?})")?;
            }
        }
        if self.fault != Fault::None {
            write!(f, " fault {:?}", self.fault)?;
        }
        let end = if self.end == NEVER {
            "never".to_owned()
        } else {
            self.end.to_string()
        };
        write!(f, " [{}..{end}] → {:?}", self.start, self.outcome)
    }
}

/// The history of a run, shared by its clients: a logical clock and the operations.
#[derive(Debug, Default)]
pub(crate) struct History {
    clock: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl History {
    /// The next tick of the logical clock; every call returns a larger number than every earlier call.
    pub(crate) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A fresh number for an operation or a tag.
    pub(crate) fn next_id(&self) -> u64 {
        self.tick()
    }

    /// Records the start of an operation. Until [`finish`](History::finish) it reads as pending (an unknown
    /// outcome); a future dropped at an await leaves it so, and [`cancelled`](History::cancelled) says why.
    pub(crate) fn begin(&self, mut op: Op) -> u64 {
        op.start = self.tick();
        op.end = NEVER;
        op.outcome = Outcome::Unknown(PENDING.to_owned());
        let id = op.id;
        self.lock().push(op);
        id
    }

    /// Records the answer of the operation `id`.
    pub(crate) fn finish(&self, id: u64, outcome: Outcome) {
        let end = self.tick();
        let mut ops = self.lock();
        if let Some(op) = ops.iter_mut().rev().find(|op| op.id == id) {
            // An unknown outcome may still take effect later: it never "ends" for the checks.
            op.end = if matches!(outcome, Outcome::Unknown(_) | Outcome::InDoubt { .. }) {
                NEVER
            } else {
                end
            };
            op.outcome = outcome;
        }
    }

    /// Marks the pending operations of `client` cancelled: the harness dropped the future of its step.
    pub(crate) fn cancelled(&self, client: usize) {
        for op in self.lock().iter_mut().rev().take(4096) {
            if op.client == client && op.outcome == Outcome::Unknown(PENDING.to_owned()) {
                op.outcome = Outcome::Unknown(CANCELLED.to_owned());
            }
        }
    }

    /// The operations that never answered (their client was stopped while they waited).
    pub(crate) fn pending(&self) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown(PENDING.to_owned()))
            .map(|op| op.id)
            .collect()
    }

    /// The operations recorded so far, in the order they started.
    pub(crate) fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
