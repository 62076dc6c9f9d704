//! What a handler needs to run commands: the request's view of the accounts, and the validated `{id}` segment.

use annals::{Executed, Metadata, Repository};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::AppState;
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::idempotency::{IdempotencyKey, RequestStore};
use crate::account::{Account, AccountCommand, AccountId};

/// The accounts, as this request sees them: commands go through the [`Repository`], carrying the request's
/// correlation id (and idempotency key) in their events' metadata.
pub(super) struct Accounts {
    repository: Repository<Account>,
    metadata: Metadata,
}

impl FromRequestParts<AppState> for Accounts {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let store = parts
            .extensions
            .get::<RequestStore>()
            .map_or_else(|| state.store.clone(), |s| s.0.clone());
        let mut metadata = Metadata::default();
        if let Some(CorrelationId(id)) = parts.extensions.get() {
            metadata.correlation_id = Some(id.clone());
        }
        if let Some(IdempotencyKey(key)) = parts.extensions.get() {
            metadata = metadata.with("idempotency_key", key.clone());
        }
        Ok(Self {
            repository: Repository::new(store)
                .with_max_retries(state.max_retries)
                .with_stream_locks(state.writers.clone()),
            metadata,
        })
    }
}

impl Accounts {
    pub(super) async fn execute(
        &self,
        id: &AccountId,
        command: AccountCommand,
    ) -> Result<Executed<Account>, ApiError> {
        Ok(self
            .repository
            .execute_with(id.stream(), &command, self.metadata.clone())
            .await?)
    }
}

/// The `{id}` path segment, validated.
pub(super) struct AccountPath(pub(super) AccountId);

impl<S: Send + Sync> FromRequestParts<S> for AccountPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        AccountId::new(id)
            .map(AccountPath)
            .map_err(|e| ApiError::invalid_request(e.to_string()))
    }
}
