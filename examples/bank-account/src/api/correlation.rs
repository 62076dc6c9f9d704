//! `X-Correlation-Id`: taken from the request (or generated), recorded in every event the request appends, and
//! echoed on the response.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;

/// The correlation header.
pub(crate) const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The longest correlation id accepted, in bytes.
const MAX_LEN: usize = 200;

/// The request's correlation id, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub(crate) struct CorrelationId(pub(crate) String);

pub(crate) async fn correlation(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&CORRELATION_ID) {
        None => uuid::Uuid::now_v7().to_string(),
        Some(value) => match value.to_str() {
            Ok(id) if !id.is_empty() && id.len() <= MAX_LEN => id.to_owned(),
            _ => {
                return ApiError::invalid_request(format!(
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
