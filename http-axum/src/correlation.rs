//! `X-Correlation-Id`: taken from the request (or generated), echoed on the response, recorded in events.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::HttpError;

/// The correlation header.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The longest correlation id accepted, in bytes.
const MAX_LEN: usize = 200;

/// The request's correlation id: put there by [`correlate`], or generated when that layer is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

impl CorrelationId {
    /// Event metadata carrying this correlation id.
    pub fn metadata(&self) -> annals::Metadata {
        annals::Metadata::correlated(self.0.clone())
    }
}

/// Middleware (`axum::middleware::from_fn(correlate)`): reads `X-Correlation-Id` (1 to 200 visible ASCII
/// characters; `400 invalid_request` otherwise) or generates one, hands it to handlers as [`CorrelationId`], and
/// echoes it on the response.
pub async fn correlate(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&CORRELATION_ID) {
        None => uuid::Uuid::now_v7().to_string(),
        Some(value) => match value.to_str() {
            Ok(id) if !id.is_empty() && id.len() <= MAX_LEN => id.to_owned(),
            _ => {
                return HttpError::invalid_request(format!(
                    "the X-Correlation-Id header must be 1 to {MAX_LEN} visible ASCII characters"
                ))
                .into_response();
            }
        },
    };
    let echoed = HeaderValue::from_str(&id);
    request.extensions_mut().insert(CorrelationId(id));
    let mut response = next.run(request).await;
    if let Ok(value) = echoed {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self(uuid::Uuid::now_v7().to_string())))
    }
}
