//! `?min_position=N`: read-your-writes for reads served from a read model.

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
    /// Refuses a position beyond `store`'s head at once with `422 position_beyond_head`: no event has it yet, so
    /// waiting for a read model to reach it would only hold the request (and a connection) until the timeout.
    ///
    /// # Errors
    /// `422 position_beyond_head`, or the store's error mapped by [`HttpError`].
    pub async fn reachable(self, store: &dyn annals::EventStore) -> Result<Self, HttpError> {
        let Some(wanted) = self.0 else {
            return Ok(self);
        };
        let head = store.head().await?;
        if wanted > head {
            return Err(HttpError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "position_beyond_head",
                format!(
                    "min_position {wanted} is beyond the last stored event ({head}); use a position a write answered with"
                ),
            ));
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
