//! Event sourcing for Rust.
//!
//! Every change is an immutable event appended to a stream; an aggregate's state is the fold of its events;
//! a [`Repository`] loads an aggregate, lets it decide on a command, and appends the new events with optimistic
//! concurrency. Stores implement one small trait, [`EventStore`], and prove themselves against one conformance
//! suite ([`testkit`], feature `testkit`).
//!
//! ```
//! use annals::{Aggregate, Event, Repository, StreamId};
//! use annals_memory::MemoryStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default)]
//! struct Counter { value: u64 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum CounterEvent {
//!     #[serde(rename = "CounterIncremented")]
//!     Incremented { by: u64 },
//! }
//! impl Event for CounterEvent {}
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("cannot increment by zero")]
//! struct ZeroIncrement;
//!
//! impl Aggregate for Counter {
//!     type Command = u64;
//!     type Event = CounterEvent;
//!     type Error = ZeroIncrement;
//!
//!     fn decide(&self, by: &u64) -> Result<Vec<CounterEvent>, ZeroIncrement> {
//!         if *by == 0 { return Err(ZeroIncrement) }
//!         Ok(vec![CounterEvent::Incremented { by: *by }])
//!     }
//!
//!     fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) {
//!         self.value += by;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let counters = Repository::<Counter>::new(MemoryStore::new());
//! let id = StreamId::new("counter-1")?;
//! counters.execute(&id, &2).await?;
//! let done = counters.execute(&id, &3).await?;
//! assert_eq!(done.state.value, 5);
//! assert_eq!(done.version.get(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! The guide in `docs/` walks through aggregates, testing, stores and projections; `ARCHITECTURE.md` maps the
//! workspace.

mod aggregate;
mod cache;
mod category;
mod command_id;
mod command_record;
mod envelope;
mod error;
mod event;
mod event_types;
mod expected;
mod ids;
mod payload;
mod repository;
mod retry;
mod session;
mod storable;
mod store;
mod stream_locks;
pub mod testing;
#[cfg(feature = "testkit")]
pub mod testkit;
mod typed_id;

pub use aggregate::Aggregate;
pub use cache::CachedRepository;
pub use category::{Category, ForeignStream, StreamKey};
pub use command_id::{CommandId, InvalidCommandId, MAX_COMMAND_ID_LEN};
pub use command_record::{CommandOutcome, CommandRecord};
pub use envelope::Recorded;
pub use error::{BoxError, Error, Result};
pub use event::{Event, Metadata, NewEvent, RecordedEvent};
pub use expected::ExpectedVersion;
pub use ids::{
    EventId, InvalidStreamId, InvalidStreamIdReason, MAX_STREAM_ID_LEN, Position, StreamId,
    StreamVersion,
};
pub use payload::Payload;
pub use repository::{
    CommandError, DEFAULT_MAX_RETRIES, DEFAULT_UNAVAILABLE_BACKOFF, DEFAULT_UNAVAILABLE_RETRIES,
    Executed, Loaded, Repository,
};
pub use retry::{Pauses, RetryPolicy};
pub use session::{CommandSession, StoreSession};
pub use storable::MAX_SCHEMA_VERSION;
pub use store::{AppendResult, EventStore, VISIT_ALL_PAGE, check_append, resolve_replayed_append};
pub use stream_locks::{StreamGuard, StreamLocks};
pub use typed_id::{Id, IdKind, InvalidId};

/// Re-exported so that store implementations and users name the same `async_trait`.
pub use async_trait::async_trait;

// The guide's pages are compiled and run as doc tests, so their code cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../docs/getting-started.md")]
struct GuideGettingStarted;

#[cfg(doctest)]
#[doc = include_str!("../../docs/testing.md")]
struct GuideTesting;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct Readme;

#[cfg(doctest)]
#[doc = include_str!("../../docs/command-ids.md")]
struct GuideCommandIds;

#[cfg(doctest)]
#[doc = include_str!("../../docs/event-versioning.md")]
struct GuideEventVersioning;
