//! The checker's own aggregate, [`Stock`]: a stock that refuses to ship more than it holds, whose events carry
//! the tag of the operation that wrote them.

use serde::{Deserialize, Serialize};

use crate::{Aggregate, Event, RecordedEvent};

/// A stock of one item. Its refusals depend on the state, so a decision taken on a state the stream never had
/// during the call (a stale cache) shows as a refusal nothing explains.
#[derive(Debug, Default, Clone)]
pub struct Stock {
    /// Units in stock (plain appends may ship without asking, so it can fall below zero).
    pub units: i64,
}

/// What a [`Stock`] is asked to do, with the tag its events will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockCommand {
    /// The tag of the operation (or command id) the events belong to.
    pub tag: u64,
    /// What to do.
    pub action: Action,
}

/// The actions of a [`StockCommand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add units: one event.
    Restock(u64),
    /// Add units twice: two events in one append.
    RestockTwice(u64),
    /// Take units: one event, refused when fewer are in stock.
    Ship(u64),
}

impl Action {
    /// How many events the action appends when it is accepted.
    pub fn events(self) -> usize {
        match self {
            Self::RestockTwice(_) => 2,
            Self::Restock(_) | Self::Ship(_) => 1,
        }
    }
}

/// What happened to a [`Stock`]. `op` and `i` tag the event: the operation that wrote it and its index in that
/// operation's append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    /// Units were added.
    #[serde(rename = "Restocked")]
    Restocked {
        /// How many.
        n: u64,
        /// The writing operation's tag.
        op: u64,
        /// The event's index in its append.
        i: u32,
    },
    /// Units were taken.
    #[serde(rename = "Shipped")]
    Shipped {
        /// How many.
        n: u64,
        /// The writing operation's tag.
        op: u64,
        /// The event's index in its append.
        i: u32,
    },
}
impl Event for StockEvent {}

impl StockEvent {
    /// The event's tag: (operation, index).
    pub fn tag(&self) -> Tag {
        match *self {
            Self::Restocked { op, i, .. } | Self::Shipped { op, i, .. } => Tag { op, index: i },
        }
    }

    /// The change in units.
    pub fn delta(&self) -> i64 {
        match *self {
            Self::Restocked { n, .. } => i64::try_from(n).unwrap_or(i64::MAX),
            Self::Shipped { n, .. } => -i64::try_from(n).unwrap_or(i64::MAX),
        }
    }
}

/// Which operation wrote an event, and its index in that operation's append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    /// The writing operation's tag.
    pub op: u64,
    /// The event's index in the append.
    pub index: u32,
}

impl Tag {
    /// The tag of a stored event (`None` when it is not a [`StockEvent`]).
    pub fn of(event: &RecordedEvent) -> Option<Self> {
        event.decode::<StockEvent>().ok().map(|e| e.tag())
    }
}

/// Why a [`Stock`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot ship {wanted}: {units} in stock")]
pub struct OutOfStock {
    /// Units asked for.
    pub wanted: u64,
    /// Units in stock when it refused.
    pub units: i64,
}

impl Aggregate for Stock {
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = OutOfStock;

    fn decide(&self, command: &StockCommand) -> Result<Vec<StockEvent>, OutOfStock> {
        let op = command.tag;
        match command.action {
            Action::Restock(n) => Ok(vec![StockEvent::Restocked { n, op, i: 0 }]),
            Action::RestockTwice(n) => Ok(vec![
                StockEvent::Restocked { n, op, i: 0 },
                StockEvent::Restocked { n, op, i: 1 },
            ]),
            Action::Ship(n) if i64::try_from(n).unwrap_or(i64::MAX) > self.units => {
                Err(OutOfStock {
                    wanted: n,
                    units: self.units,
                })
            }
            Action::Ship(n) => Ok(vec![StockEvent::Shipped { n, op, i: 0 }]),
        }
    }

    fn apply(&mut self, event: &StockEvent) {
        self.units = self.units.saturating_add(event.delta());
    }
}
