//! The SQLite [`EventStore`](annals::EventStore) for Annals: durable and embedded, in one file, safe to share
//! between processes on one machine, with the same contract as the memory and PostgreSQL stores and a global
//! order that never skips an event (ADR 0008).
//!
//! ```
//! use annals::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
//! use annals_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("annals-sqlite-doc-{}", uuid::Uuid::now_v7()));
//! # std::fs::create_dir(&dir)?;
//! let store = SqliteStore::open(dir.join("events.db")).await?;
//! store.migrate().await?;
//! let stream = StreamId::new("order-7")?;
//! let event = NewEvent::new("OrderPlaced", serde_json::json!({"total": 1250}));
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! let page = store.read_all(Position::START, 100).await?;
//! assert_eq!(page[0].event_type, "OrderPlaced");
//! # store.close().await;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! The [guide] covers the PRAGMA profile, what survives a crash or a power loss, several processes on one
//! file, and what is not done yet.

mod append;
mod command_records;
mod error;
mod failure;
mod migrate;
mod open;
mod read;
mod row;
mod settings;
mod store;
mod wait;
mod writer;

pub use error::{Error, Result};
pub use failure::FileError;
pub use settings::{
    DEFAULT_BUSY_RETRIES, DEFAULT_BUSY_TIMEOUT, DEFAULT_POLL_INTERVAL, DEFAULT_READERS, Settings,
    Synchronous,
};
pub use store::SqliteStore;

#[doc = include_str!("../../docs/sqlite.md")]
pub mod guide {}
