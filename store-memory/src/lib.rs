//! An in-memory [`EventStore`](annals::EventStore) for Annals.
//!
//! A real store with the same semantics as the PostgreSQL one: expected versions, idempotent appends, one
//! store-wide order, and waiting for new events without polling. It is safe to share between tasks on a
//! multi-threaded runtime (clone it: clones share the same events). Events live as long as the process.
//!
//! ```
//! use annals::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
//! use annals_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), annals::Error> {
//! let store = MemoryStore::new();
//! let stream = StreamId::new("order-7")?;
//! let event = NewEvent::new("OrderPlaced", serde_json::json!({"total": 1250}));
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! let all = store.read_all(Position::START, 100).await?;
//! assert_eq!(all[0].event_type, "OrderPlaced");
//! # Ok(())
//! # }
//! ```

mod store;

pub use store::MemoryStore;
