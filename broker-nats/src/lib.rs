//! The Annals event feed on NATS JetStream: every committed event, in order, to other services, and an inbox
//! that applies each one exactly once on their side.
//!
//! - [`Relay`] follows the event log from a checkpoint and publishes each event to JetStream (the event log is
//!   the outbox: an event is published if and only if its append committed). It publishes each page outside any
//!   database transaction, then commits the checkpoint under a projections lease: the checkpoint moves only past
//!   events the broker acknowledged, one relay publishes at a time across processes (a relay stops sending before
//!   its lease could expire), and a dead relay's lease is taken over once it expires.
//! - [`Inbox`] (feature `inbox`) consumes a durable pull consumer and runs a [`Handler`] inside the
//!   consumer's own PostgreSQL transaction, which also records the event id; redeliveries and re-publishes are
//!   acknowledged without running the handler again, malformed messages are parked and terminated.
//! - [`FeedCommand`] (feature `cli`) is the operator's `run` / `status` / `republish`.
//!
//! ```no_run
//! use annals_nats::{Relay, RelayOptions};
//! use annals_postgres::PostgresStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1/postgres").await?;
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//!
//! // Publishes `account-42`'s events to `bank.account.account-42` in the JetStream stream `BANK`.
//! let relay = Relay::new(store, pool, client, RelayOptions::new("bank", "BANK")?)?;
//! relay.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The consistency model (what is atomic, what is at-least-once, where duplicates are absorbed) is in the
//! [guide]; the design decision in `docs/adr/0004-event-feed.md`.

#[cfg(feature = "cli")]
mod cli;
mod error;
mod headers;
#[cfg(feature = "inbox")]
mod inbox;
mod options;
mod publisher;
mod relay;
mod relay_loop;
mod relay_page;
mod relay_stats;
mod stream;
mod subject;

#[cfg(feature = "cli")]
pub use cli::{FeedCommand, shutdown_signal};
pub use error::{Error, Result};
pub use headers::{
    CAUSATION_ID, CORRELATION_ID, EVENT_ID, EVENT_TYPE, FeedHeaders, MSG_ID, POSITION, RECORDED_AT,
    SCHEMA_VERSION, STREAM_ID, STREAM_VERSION, decode_value, encode_value,
};
#[cfg(feature = "inbox")]
pub use inbox::{Delivery, Handler, HandlerError, Inbox, InboxOptions, Outcome, Parked};
pub use options::RelayOptions;
pub use publisher::{Page, Published, Publisher};
pub use relay::{Relay, RelayStatus, Retrying};
pub use relay_stats::STATS_COLLECTION;
pub use stream::FeedStream;
pub use subject::{Subjects, escape_token, unescape_token};

/// Re-exported so consumers implement [`Handler`] with the same `async_trait`.
pub use annals::async_trait;
/// Re-exported: the NATS client the relay and inbox take.
pub use async_nats;

#[doc = include_str!("../../docs/event-feed.md")]
pub mod guide {}
