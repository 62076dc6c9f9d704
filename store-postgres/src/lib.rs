//! The PostgreSQL [`EventStore`](annals::EventStore) for Annals: durable, shared by many processes, one
//! round trip per append, and a global order that never skips an event (ADR 0001).
//!
//! ```no_run
//! use annals::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
//! use annals_postgres::PostgresStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/postgres")
//!     .await?
//!     .with_schema("orders")?;
//! store.migrate().await?;
//! let stream = StreamId::new("order-7")?;
//! let event = NewEvent::new("OrderPlaced", serde_json::json!({"total": 1250}));
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! let page = store.read_all(Position::START, 100).await?;
//! assert_eq!(page.last().map(|e| e.stream_id.as_str()), Some("order-7"));
//! # Ok(())
//! # }
//! ```
//!
//! The [guide] covers connecting, schemas per tenant, migrations, appending inside your own transaction,
//! waiting for events, the ordering guarantee and which failures are retryable.

mod append;
mod append_next;
mod append_one;
mod command_records;
mod connect;
mod connection;
mod error;
mod failure;
mod fast_append;
mod group_batch;
mod group_commit;
mod migrate;
mod read;
mod safe_bound;
mod schema;
mod session;
mod store;
mod transaction;
mod unit_of_work;
mod wait;

pub use error::{Error, Result};
pub use group_commit::{GroupCommit, GroupCommitStore};
pub use migrate::LOCK_PROTOCOL;
pub use schema::DEFAULT_SCHEMA;
pub use sqlx::PgPool;
pub use store::{DEFAULT_POLL_INTERVAL, PostgresStore};
pub use unit_of_work::{UnitOfWork, UnitState, UnitTransaction};
pub use wait::DEFAULT_NOTIFY_COALESCE;

#[doc = include_str!("../../docs/postgres.md")]
pub mod guide {}
