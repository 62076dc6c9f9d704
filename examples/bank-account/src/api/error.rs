//! The one error shape every endpoint answers with: `{"error": {"code", "message"}}`.

use axum::http::StatusCode;

use crate::account::AccountError;

/// The one error answer of every endpoint, from `annals-axum` (which maps the framework's errors too).
pub(crate) use annals_axum::HttpError as ApiError;

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
