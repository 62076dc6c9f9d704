//! `?min_position=N`: read-your-writes for reads served from a read model.

use std::time::{Duration, Instant};

use annals::Position;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::HttpError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    min_position: Option<u64>,
}

/// The read's `?min_position=N` (the `position` a write answered with), validated: any other query parameter, or
/// a value that is not a non-negative integer, is `400 invalid_request`. Wait for the read model to reach it (for
/// example `DocumentReader::wait_for_position`) and answer [`HttpError::lagging`] when it does not in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinPosition(pub Option<Position>);

impl MinPosition {
    /// How long [`reachable`](Self::reachable) waits for the store's head: 5 s, as a read model's default wait.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

    /// [`reachable_within`](Self::reachable_within) [`DEFAULT_WAIT`](Self::DEFAULT_WAIT).
    ///
    /// # Errors
    /// `422 position_beyond_head`, `504 position_pending`, or the store's error mapped by [`HttpError`].
    pub async fn reachable(self, store: &dyn annals::EventStore) -> Result<Self, HttpError> {
        self.reachable_within(store, Self::DEFAULT_WAIT).await
    }

    /// Refuses at once, with `422 position_beyond_head`, a position the store never handed out (beyond its
    /// [`allocated_head`](annals::EventStore::allocated_head)); waits, at most `max_wait`, until the store's
    /// head reaches one it did.
    ///
    /// The head is gap-safe: a position a write just answered with can be beyond it while an append that took a
    /// lower position is still committing, so such a position is waited for, never refused; when the wait ends
    /// first, the answer is `504 position_pending` (retry later).
    ///
    /// # Errors
    /// `422 position_beyond_head`, `504 position_pending`, or the store's error mapped by [`HttpError`].
    pub async fn reachable_within(
        self,
        store: &dyn annals::EventStore,
        max_wait: Duration,
    ) -> Result<Self, HttpError> {
        let Some(wanted) = self.0 else {
            return Ok(self);
        };
        let deadline = Instant::now() + max_wait;
        let mut head = store.head().await?;
        if head >= wanted {
            return Ok(self);
        }
        let allocated = store.allocated_head().await?;
        if wanted > allocated {
            return Err(HttpError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "position_beyond_head",
                format!(
                    "min_position {wanted} is beyond the last position the store handed out ({allocated}); use a \
                     position a write answered with"
                ),
            ));
        }
        while head < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HttpError::new(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    "position_pending",
                    format!(
                        "min_position {wanted} was handed out, but an append below it is still committing (the \
                         readable head is {head}); retry later"
                    ),
                ));
            }
            head = store.wait_for_events(head, left).await?;
        }
        Ok(self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Query(params) = Query::<Params>::from_request_parts(parts, state).await?;
        Ok(Self(params.min_position.map(Position)))
    }
}
