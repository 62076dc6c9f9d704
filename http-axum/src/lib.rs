//! HTTP building blocks for Annals services on [axum]: the concerns every service shares, tested once.
//!
//! - [`HttpError`]: one error shape, `{"error": {"code", "message"}}`, and the mapping of the framework's errors
//!   (a rejected command through your own `From<YourError>`, conflicts exhausted or a store's `Conflict` →
//!   `409 conflict`, a reused idempotency key → `422 idempotency_key_reused`, store unavailable or outcome unknown
//!   → `503 unavailable` with `Retry-After`, anything else → `500 internal`, naming nothing internal).
//! - [`correlate`] and [`CorrelationId`]: `X-Correlation-Id` taken from the request (or generated), echoed on the
//!   response, and put into the events' [`Metadata`](annals::Metadata).
//! - [`IdempotencyKey`]: `Idempotency-Key`, scoped per client by `X-Client-Id`, as an [`annals::CommandId`] for
//!   [`Repository::execute_once`](annals::Repository::execute_once).
//! - [`JsonBody`] / [`OptionalJsonBody`]: JSON bodies whose every failure is a `400 invalid_request` naming the field.
//! - [`MinPosition`]: `?min_position=N` for read-your-writes ([`MinPosition::reachable`] waits, bounded, for the
//!   store's head to reach it, and refuses a position still beyond it after the wait), and [`HttpError::lagging`] for the `504`; with the feature `projections`,
//!   `MinPosition::wait_for` waits on an `annals-projections` read model in one call, and that crate's errors
//!   map onto [`HttpError`] (a lagging read model → `504 projection_lagging`).
//! - [`no_route`] / [`method_not_allowed`]: the router's fallbacks, in the same error shape; [`EventJson`]: a stored
//!   event as an API shows it.
//!
//! ```
//! use annals_axum::{CorrelationId, HttpError, IdempotencyKey, JsonBody, correlate};
//! use axum::{Router, middleware, routing::post};
//!
//! #[derive(serde::Deserialize)]
//! struct Deposit { amount: u64 }
//!
//! async fn deposit(
//!     correlation: CorrelationId,
//!     key: Option<IdempotencyKey>,
//!     JsonBody(body): JsonBody<Deposit>,
//! ) -> Result<String, HttpError> {
//!     let metadata = correlation.metadata();
//!     let _ = (metadata, key.map(|k| k.command_id));
//!     Ok(format!("deposited {}", body.amount))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/deposit", post(deposit))
//!     .layer(middleware::from_fn(correlate));
//! # let _ = app;
//! ```

mod correlation;
mod error;
mod event_json;
mod fallback;
mod idempotency;
mod json;
mod min_position;
#[cfg(feature = "projections")]
mod read_your_writes;

pub use correlation::{CORRELATION_ID, CorrelationId, correlate};
pub use error::HttpError;
pub use event_json::EventJson;
pub use fallback::{method_not_allowed, no_route};
pub use idempotency::{CLIENT_ID, IDEMPOTENCY_KEY, IdempotencyKey, REPLAYED, Replied, replayed};
pub use json::{JsonBody, OptionalJsonBody};
pub use min_position::MinPosition;
