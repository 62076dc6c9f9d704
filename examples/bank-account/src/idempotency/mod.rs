//! Idempotency keys: the first request with a key does the work and its response is stored under the key; a
//! retry with the same key and request gets that response back without a second effect, even when the retries
//! race each other.
//!
//! Two backends: [`MemoryKeys`] for the embedded default, and [`PostgresKeys`], a table in the application's
//! schema whose rows are written in the same transaction as the request's events.

mod memory;
mod postgres;

use std::sync::Arc;

use annals::EventStore;

pub(crate) use memory::MemoryKeys;
pub(crate) use postgres::PostgresKeys;

use crate::api::error::ApiError;

/// A response stored under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// What became of an attempt to reserve a key.
pub(crate) enum Begun {
    /// The key is new (or its earlier owner gave up): this request does the work.
    Owner(Box<dyn Reservation>),
    /// The key's request finished before: answer with its response.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Reused,
}

/// A place for idempotency keys.
#[annals::async_trait]
pub(crate) trait IdempotencyKeys: Send + Sync {
    /// Reserves `key` for `request` (a canonical form of method, path and body), waiting while another request
    /// holding the same key is in progress.
    async fn begin(&self, key: &str, request: &str) -> Result<Begun, ApiError>;
}

/// A reserved key, held while its request runs.
#[annals::async_trait]
pub(crate) trait Reservation: Send {
    /// The store the request's commands must append to so that the events and the key's response commit
    /// together, when the backend needs one (`None`: the shared store).
    fn store(&self) -> Option<Arc<dyn EventStore>>;

    /// Stores `response` under the key, committing the request's events with it.
    async fn complete(self: Box<Self>, response: &StoredResponse) -> Result<(), ApiError>;

    /// Gives the key up without storing anything: the outcome was transient, a retry must do the work again.
    async fn release(self: Box<Self>);
}

/// How long a retry waits for a racing request with the same key before giving up with `409 conflict`.
pub(crate) const WAIT_FOR_OWNER: std::time::Duration = std::time::Duration::from_secs(10);
