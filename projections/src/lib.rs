//! Projections for Annals: read models built from the event log, with checkpoints committed together with the
//! read-model writes, exclusive runners, failure policies, blue/green rebuilds and a CLI to operate them.
//!
//! Write a [`Projection`] against [`Documents`] (JSON documents addressed by collection and key) and it runs
//! unchanged in memory and on PostgreSQL (an [`EventProjection`] over one event type gets its events decoded, with
//! their envelope, and wants exactly that type's); or write a [`SqlProjection`] that owns its PostgreSQL tables
//! ([`EventSqlProjection`], typed). Register projections in a [`Projections`] set, [`run`](Projections::run) it
//! next to your service, query through a [`DocumentReader`], and mount [`ProjectionsCommand`] into your CLI.
//!
//! ```
//! use std::time::Duration;
//! use annals::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
//! use annals_memory::MemoryStore;
//! use annals_projections::{BoxError, Documents, Projection, Projections, async_trait};
//!
//! /// Counts events per stream.
//! struct Counts;
//!
//! #[async_trait]
//! impl Projection for Counts {
//!     fn name(&self) -> &str { "counts" }
//!
//!     async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
//!         let n = docs.get::<u64>("streams", &event.stream_id).await?.unwrap_or(0);
//!         docs.put("streams", &event.stream_id, &(n + 1))?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let projections = Projections::memory(store.clone()).with(Counts);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let runner = tokio::spawn({
//!     let projections = projections.clone();
//!     async move { projections.run(async { let _ = stopped.await; }).await }
//! });
//!
//! let stream = StreamId::new("order-1")?;
//! let event = NewEvent::new("OrderPlaced", serde_json::json!({}));
//! let appended = store.append(&stream, ExpectedVersion::Any, vec![event]).await?;
//!
//! let counts = projections.documents("counts")?;
//! counts.wait_for_position(appended.last_position, Duration::from_secs(5)).await?;
//! assert_eq!(counts.get::<u64>("streams", "order-1").await?, Some(1));
//!
//! let _ = stop.send(());
//! runner.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `postgres` (default): the PostgreSQL backend ([`Projections::postgres`]), [`SqlProjection`] and [`SqlTx`].
//! - `sqlite`: the SQLite backend ([`Projections::sqlite`]), in the file of an `annals_sqlite::SqliteStore`.
//! - `cli` (default): [`ProjectionsCommand`], the operator subcommands, with a progress bar.
//!
//! Without them (`default-features = false`) the crate is the engine and the in-memory backend, and depends on
//! neither sqlx nor clap (`docs/adr/0005-lean-projections-crate.md`).
//!
//! The [guide] covers writing, running, querying, rebuilding and operating projections; the design decisions are
//! in `docs/adr/0002-projections.md`.

// The docs link to the PostgreSQL, SQLite and CLI items, which exist only with those features (on by default, and on
// docs.rs): a build of the docs without them leaves those links as plain text.
#![cfg_attr(
    not(all(feature = "postgres", feature = "sqlite", feature = "cli")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod backend;
#[cfg(feature = "cli")]
mod cli;
mod documents;
mod error;
mod lease;
mod policy;
mod projection;
mod projections;
mod read_ahead;
mod reader;
mod runner;
#[cfg(feature = "postgres")]
mod sql;
mod stateful;
mod status;
mod supervisor;
mod typed;
#[cfg(feature = "postgres")]
mod typed_sql;

#[cfg(feature = "cli")]
pub use cli::{LogWriter, ProjectionsCommand, exit, exit_code, log_writer};
pub use documents::{Documents, MAX_KEY_BYTES};
pub use error::{BoxError, Error, Result, is_transient_cause};
#[cfg(feature = "postgres")]
pub use error::{is_transient_sqlstate, is_transient_sqlx};
pub use lease::Lease;
pub use policy::{DEFAULT_READ_AHEAD, FailurePolicy, ProjectionOptions};
pub use projection::Projection;
#[cfg(feature = "postgres")]
pub use projection::SqlProjection;
pub use projections::{Projections, RebuildOptions};
pub use reader::{DEFAULT_MAX_WAIT, DocumentReader};

/// The lease time-to-live of [`Projections::sqlite`] (1 s): with no session to end when the owner dies, the TTL
/// alone bounds a takeover, so it is short, and runners renew it about three times per period.
#[cfg(feature = "sqlite")]
pub const SQLITE_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
#[cfg(feature = "postgres")]
pub use sql::SqlTx;
pub use stateful::{STATE_COLLECTION, Snapshot, Snapshots, StatefulProjection};
pub use status::{
    ParkedEvent, Progress, RebuildOutcome, RebuildReport, ReplayReport, State, Status,
};
pub use supervisor::{DEFAULT_RESTARTS, RunnerStatus, Stop, Supervised, Supervisor};
pub use typed::EventProjection;
#[cfg(feature = "postgres")]
pub use typed_sql::EventSqlProjection;

#[doc = include_str!("../../docs/projections.md")]
pub mod guide {}

/// Re-exported so projections implement the traits with the same `async_trait`.
pub use annals::async_trait;
