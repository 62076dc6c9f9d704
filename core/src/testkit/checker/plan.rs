//! [`Plan`]: every random choice of one client step, drawn up front in a fixed number of draws, so that a seed
//! replays the same sequence of choices whatever the answers of the store were.

use super::history::Fault;
use super::rng::Rng;
use super::stock::Action;

/// The paths a step can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    Append,
    Session,
    Execute,
    ExecuteOnce,
    Cached,
    Extra,
}

/// One append's random choices: stream, expected-version kind, offset from the last version seen, events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendPlan {
    pub(crate) stream: usize,
    /// 0 `Any`, 1 `NoStream`, 2 `StreamExists`, else `Exact`.
    pub(crate) expected: u64,
    /// `Exact(seen + offset - 1)`: one below, equal, one above.
    pub(crate) offset: u64,
    pub(crate) events: usize,
    pub(crate) amount: u64,
    /// Whether the events ship (else they restock).
    pub(crate) ship: bool,
}

/// Every choice of one step.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) path: Path,
    pub(crate) first: AppendPlan,
    pub(crate) second: AppendPlan,
    pub(crate) action: Action,
    pub(crate) fault: Fault,
    /// Drop the operation's future at an await.
    pub(crate) cancel: bool,
    /// Cancel after this many yields (when `cancel_micros` is 0) …
    pub(crate) cancel_yields: u32,
    /// … or after this many microseconds.
    pub(crate) cancel_micros: u64,
    /// Repeat an earlier command id (when the client has one), picked with `pick`.
    pub(crate) repeat: bool,
    pub(crate) pick: u64,
    /// A session's read is `fold_stream` (else `visit_stream`).
    pub(crate) lean: bool,
    /// A session appends a second time after its first append.
    pub(crate) again: bool,
    /// An append of unknown outcome is sent again with the same event ids.
    pub(crate) resend: bool,
    /// The append is malformed (a NUL character in its event type): every store must refuse it.
    pub(crate) malformed: bool,
    /// An extra path's choices: which path, how many appends, commit or not, an interrupted commit.
    pub(crate) extra: u64,
    pub(crate) appends: u64,
    pub(crate) commit: bool,
    pub(crate) interrupt_commit: bool,
}

impl AppendPlan {
    fn draw(rng: &mut Rng, streams: usize) -> Self {
        Self {
            stream: usize::try_from(rng.below(streams as u64)).unwrap_or_default(),
            expected: rng.below(6),
            offset: rng.below(3),
            events: usize::try_from(rng.between(1, 3)).unwrap_or(1),
            amount: rng.between(1, 5),
            ship: rng.percent(60),
        }
    }
}

impl Plan {
    /// Draws a step's choices: always the same number of draws.
    pub(crate) fn draw(rng: &mut Rng, streams: usize, extra_paths: bool) -> Self {
        let roll = rng.below(100);
        let path = match roll {
            0..25 => Path::Append,
            25..45 => Path::Session,
            45..60 => Path::Execute,
            60..75 => Path::ExecuteOnce,
            75..88 => Path::Cached,
            _ if extra_paths => Path::Extra,
            _ => Path::Append,
        };
        let first = AppendPlan::draw(rng, streams);
        let second = AppendPlan::draw(rng, streams);
        let amount = rng.between(1, 6);
        let action = match rng.below(10) {
            0..4 => Action::Ship(amount),
            4..8 => Action::Restock(amount),
            _ => Action::RestockTwice(amount),
        };
        let fault_roll = rng.below(100);
        let fault_n = u32::try_from(rng.between(1, 3)).unwrap_or(1);
        let fault = match fault_roll {
            0..8 => Fault::LostAcks(fault_n),
            8..12 => Fault::Unreachable(fault_n),
            _ => Fault::None,
        };
        let micros = rng.between(50, 3_000);
        let timed = rng.percent(50);
        Self {
            path,
            first,
            second,
            action,
            fault,
            cancel: rng.percent(10),
            cancel_yields: u32::try_from(rng.below(40)).unwrap_or_default(),
            cancel_micros: if timed { micros } else { 0 },
            repeat: rng.percent(25),
            pick: rng.next_u64(),
            lean: rng.percent(50),
            again: rng.percent(25),
            resend: rng.percent(50),
            malformed: rng.percent(2),
            extra: rng.next_u64(),
            appends: rng.next_u64(),
            commit: rng.percent(75),
            interrupt_commit: rng.percent(20),
        }
    }
}
