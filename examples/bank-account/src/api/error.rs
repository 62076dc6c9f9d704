//! The one error shape every endpoint answers with: `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::account::AccountError;

/// An HTTP error answer: a status, a stable machine-readable code and a message for humans.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the service failed to handle the request; it may be retried",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let retry = axum::http::HeaderValue::from_static("1");
            response.headers_mut().insert("retry-after", retry);
        }
        response
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        let message = error.to_string();
        let (status, code) = match error {
            AccountError::NotFound => (StatusCode::NOT_FOUND, "account_not_found"),
            AccountError::AlreadyExists => (StatusCode::CONFLICT, "account_exists"),
            AccountError::InvalidOwner { .. }
            | AccountError::OwnerHasControlCharacter { .. }
            | AccountError::InvalidAmount { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            AccountError::InsufficientFunds { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds")
            }
            AccountError::AmountOverflow { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "amount_overflow")
            }
            AccountError::BalanceNotZero { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "balance_not_zero")
            }
            AccountError::Closed => (StatusCode::UNPROCESSABLE_ENTITY, "account_closed"),
        };
        Self::new(status, code, message)
    }
}

impl From<annals::CommandError<AccountError>> for ApiError {
    fn from(error: annals::CommandError<AccountError>) -> Self {
        match error {
            annals::CommandError::Rejected(rejection) => rejection.into(),
            annals::CommandError::Conflict { attempts, .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "the account kept changing under concurrent requests; gave up after {attempts} attempts, retry later"
                ),
            ),
            annals::CommandError::CommandIdReused { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "the Idempotency-Key was used for a different request; use a fresh key for a new request",
            ),
            annals::CommandError::OutcomeUnknown { .. } => {
                tracing::warn!(%error, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is unavailable; the request may or may not have taken effect: retry it with the same Idempotency-Key",
                )
            }
            annals::CommandError::Store(error) => error.into(),
            other => Self::internal(other),
        }
    }
}

impl From<annals::Error> for ApiError {
    fn from(error: annals::Error) -> Self {
        match error {
            annals::Error::InvalidStreamId(invalid) => Self::invalid_request(invalid.to_string()),
            // Input the domain let through but no store keeps (a NUL character in a payload): the request's fault.
            annals::Error::InvalidAppend { reason, .. } => {
                Self::invalid_request(format!("the request cannot be stored: {reason}"))
            }
            unavailable @ annals::Error::Unavailable { .. } => {
                tracing::warn!(error = %unavailable, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is unavailable; retry later",
                )
            }
            other => Self::internal(other),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is larger than the limit of {} bytes",
                    crate::api::BODY_LIMIT
                ),
            )
        } else {
            Self::invalid_request(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid_request(format!("bad path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid_request(format!("bad query string: {}", rejection.body_text()))
    }
}
