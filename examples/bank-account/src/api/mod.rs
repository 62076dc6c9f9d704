//! The HTTP service: routes, handlers and the layers around them.

mod accounts;
pub(crate) mod error;
mod handlers;
mod transfers;

use std::sync::Arc;

use annals::{EventStore, StreamLocks};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Router, middleware};
use transfers as transfer_routes;

use crate::read_models::ReadModels;
use handlers::{account, close, deposit, events, health, history, open, withdraw};

/// The largest request body accepted, in bytes; larger bodies get `413`.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) read_models: ReadModels,
    pub(crate) max_retries: u32,
    /// One writer at a time per account within this process (see [`StreamLocks`]).
    pub(crate) writers: StreamLocks,
}

/// The service's routes with their layers.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/accounts", post(open))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/deposit", post(deposit))
        .route("/accounts/{id}/withdraw", post(withdraw))
        .route("/accounts/{id}/close", post(close))
        .route("/accounts/{id}/history", get(history))
        .route("/accounts/{id}/events", get(events))
        .route("/transfers", post(transfer_routes::request))
        .route(
            "/transfers/{id}",
            get(transfer_routes::show).delete(transfer_routes::cancel),
        )
        .route(
            "/transfers/{id}/retry-refund",
            post(transfer_routes::retry_refund),
        )
        .fallback(annals_axum::no_route)
        .method_not_allowed_fallback(annals_axum::method_not_allowed)
        .layer(middleware::from_fn(annals_axum::correlate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
