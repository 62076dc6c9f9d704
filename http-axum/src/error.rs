//! [`HttpError`]: the one error answer, and the mapping of Annals' errors onto it.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error answer: a status, a stable machine-readable code and a message for humans, sent as
/// `{"error": {"code": ..., "message": ...}}`. A `503` carries `Retry-After: 1`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct HttpError {
    /// The status.
    pub status: StatusCode,
    /// The stable code clients match on, for example `"insufficient_funds"`.
    pub code: &'static str,
    /// What was wrong, for humans.
    pub message: String,
}

impl HttpError {
    /// An answer with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 invalid_request`: the caller's input is wrong; `message` names what.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// `500 internal`, naming nothing internal to the client; `error` is logged.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the service failed to handle the request; it may be retried",
        )
    }

    /// `503 unavailable` (with `Retry-After`); `error` is logged.
    pub fn unavailable(error: impl std::fmt::Display, message: impl Into<String>) -> Self {
        tracing::warn!(%error, "store unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// `504 projection_lagging`: the read model `projection` reached `reached`, not `wanted`, in time.
    pub fn lagging(
        projection: &str,
        reached: impl std::fmt::Display,
        wanted: impl std::fmt::Display,
    ) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "projection_lagging",
            format!(
                "the {projection} read model has processed position {reached}, not yet {wanted}; retry later"
            ),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let retry = HeaderValue::from_static("1");
            response.headers_mut().insert("retry-after", retry);
        }
        response
    }
}

impl<E: Into<HttpError>> From<annals::CommandError<E>> for HttpError {
    fn from(error: annals::CommandError<E>) -> Self {
        use annals::CommandError;
        match error {
            CommandError::Rejected(rejection) => rejection.into(),
            CommandError::Conflict { attempts, .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "the resource kept changing under concurrent requests; gave up after {attempts} attempts, retry later"
                ),
            ),
            CommandError::CommandIdReused { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "the Idempotency-Key was used for a different request; use a fresh key for a new request",
            ),
            CommandError::OutcomeUnknown { stream, last, .. } => Self::unavailable(
                format_args!("outcome unknown on stream {stream:?}: {last}"),
                "the store is unavailable; the request may or may not have taken effect: retry it with the same Idempotency-Key",
            ),
            CommandError::Store(error) => error.into(),
            _ => Self::internal("an unknown kind of command error"),
        }
    }
}

impl From<annals::Error> for HttpError {
    fn from(error: annals::Error) -> Self {
        match error {
            annals::Error::InvalidStreamId(invalid) => Self::invalid_request(invalid.to_string()),
            // Input the domain let through but no store keeps (a NUL character in a payload): the request's fault.
            annals::Error::InvalidAppend { reason, .. } => {
                Self::invalid_request(format!("the request cannot be stored: {reason}"))
            }
            // The repository retries conflicts itself; one that reaches an answer is still the caller's race.
            annals::Error::Conflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the resource changed under a concurrent request; retry the request",
            ),
            unavailable @ annals::Error::Unavailable { .. } => {
                Self::unavailable(unavailable, "the store is unavailable; retry later")
            }
            other => Self::internal(other),
        }
    }
}

impl From<BytesRejection> for HttpError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the service's limit",
            )
        } else {
            Self::invalid_request(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

impl From<PathRejection> for HttpError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid_request(format!("bad path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid_request(format!("bad query string: {}", rejection.body_text()))
    }
}
