//! [`Handler`]: what a consumer does with each event, and the [`Delivery`] it is handed.

use annals::{Event, async_trait};
use sqlx::PgConnection;

use crate::headers::FeedHeaders;

/// A boxed error from a handler.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// An event received from the feed and decoded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<E> {
    /// The envelope, from the message's headers.
    pub headers: FeedHeaders,
    /// The decoded (and upcast) event.
    pub event: E,
    /// The JetStream stream sequence of the message.
    pub sequence: u64,
}

/// What a consumer does with each event, inside its own transaction.
///
/// # Implementing
/// One method: [`handle`](Handler::handle). Write your effects through `conn` (it is inside the transaction
/// that also records the event in the inbox); return an error to roll them back, and never swallow a failed
/// statement: it leaves the transaction aborted, which the inbox finds before committing and counts as a
/// failure.
///
/// # Errors
/// An error that is, or was caused by (anywhere in its `source` chain), a transient database error (a
/// deadlock, a serialization failure, a lock or statement timeout, a lost connection: see `docs/event-feed.md`)
/// is retried with capped, jittered backoff for as long as it lasts and never parks the message. Any other
/// error is the handler's own: retried with backoff up to [`InboxOptions::attempts`](super::InboxOptions),
/// then the message is parked.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The event type the feed carries (decoded with its upcasters, so old payloads arrive current).
    type Event: Event;

    /// Applies one event.
    async fn handle(
        &self,
        delivery: &Delivery<Self::Event>,
        conn: &mut PgConnection,
    ) -> std::result::Result<(), HandlerError>;
}
