//! What a handler needs to run commands: the request's view of the accounts, and the validated `{id}` segment.

use annals::{CommandId, Executed, Metadata, Repository};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::account::{Account, AccountCommand, AccountId};
use annals_axum::{CorrelationId, IdempotencyKey};

/// The accounts, as this request sees them: commands go through the [`Repository`], carrying the request's
/// correlation id (and idempotency key) in their events' metadata, under the key's command id when it has one.
pub(super) struct Accounts {
    repository: Repository<Account>,
    metadata: Metadata,
    pub(super) command_id: Option<CommandId>,
}

impl FromRequestParts<AppState> for Accounts {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Ok(correlation) = CorrelationId::from_request_parts(parts, state).await;
        let mut metadata = correlation.metadata();
        let key = Option::<IdempotencyKey>::from_request_parts(parts, state).await?;
        let command_id = key.map(|IdempotencyKey { key, command_id }| {
            metadata = metadata.clone().with("idempotency_key", key);
            command_id
        });
        Ok(Self {
            command_id,
            repository: Repository::new(state.store.clone())
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
        let (once, metadata) = (self.command_id.as_ref(), self.metadata.clone());
        Ok((self.repository)
            .execute_under(id.stream(), once, &command, metadata)
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
