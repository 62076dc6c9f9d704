//! `POST /transfers`, `GET /transfers/{id}`, `DELETE /transfers/{id}`, `POST /transfers/{id}/retry-refund`:
//! requests, cancellations and an operator's retry of a refused refund are commands to the transfer; the
//! transfer process does the rest, after the request is answered (`202`).

use std::sync::Arc;

use annals::{CommandId, EventStore, Metadata, Repository};
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::account::{Account, AccountId, AccountStatus, MAX_AMOUNT};
use crate::transfer::{Transfer, TransferCommand, TransferError, TransferId, TransferStatus};
use annals_axum::{CorrelationId, IdempotencyKey, JsonBody};
use annals_process::timer_due_range;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferRequest {
    id: Option<String>,
    from: String,
    to: String,
    amount: u64,
    execute_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
pub(super) struct Accepted {
    id: String,
    status: TransferStatus,
}

#[derive(Serialize)]
pub(super) struct TransferView {
    id: String,
    from: String,
    to: String,
    amount: u64,
    status: TransferStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Why the source refused the refund (status `refund_failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_refused: Option<String>,
    /// The money the transfer holds (debited, neither credited nor refunded yet); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execute_at: Option<DateTime<Utc>>,
}

impl TransferView {
    fn new(id: &TransferId, transfer: Transfer) -> Json<Self> {
        let held = Some(transfer.held()).filter(|held| *held > 0);
        Json(Self {
            id: id.as_str().to_owned(),
            held,
            refund_refused: transfer.refund_refused,
            from: transfer.from,
            to: transfer.to,
            amount: transfer.amount,
            status: transfer.status,
            reason: transfer.reason,
            execute_at: transfer.execute_at,
        })
    }
}

/// The transfers as this request sees them: the store, the request's metadata, and the command id of its
/// `Idempotency-Key` when it has one.
pub(super) struct Transfers {
    store: Arc<dyn EventStore>,
    metadata: Metadata,
    command_id: Option<CommandId>,
    max_retries: u32,
}

impl FromRequestParts<AppState> for Transfers {
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
            store: state.store.clone(),
            metadata,
            command_id,
            max_retries: state.max_retries,
        })
    }
}

impl Transfers {
    fn repository(&self) -> Repository<Transfer> {
        Repository::new(Arc::clone(&self.store)).with_max_retries(self.max_retries)
    }

    /// The id of a transfer requested without one: derived from the idempotency key's command id, so a retry of
    /// the same request names the same transfer; fresh otherwise.
    fn new_id(&self) -> TransferId {
        self.command_id
            .as_ref()
            .and_then(|once| TransferId::new(format!("tr-{}", once.event_id(usize::MAX))).ok())
            .unwrap_or_else(TransferId::generate)
    }

    async fn execute(
        &self,
        id: &TransferId,
        command: TransferCommand,
    ) -> Result<Transfer, ApiError> {
        let done = self
            .repository()
            .execute_under(
                id.stream(),
                self.command_id.as_ref(),
                &command,
                self.metadata.clone(),
            )
            .await?;
        Ok(done.state)
    }
}

impl From<TransferError> for ApiError {
    fn from(error: TransferError) -> Self {
        let (status, code) = match error {
            TransferError::AlreadyExists => (StatusCode::CONFLICT, "transfer_exists"),
            TransferError::NotFound => (StatusCode::NOT_FOUND, "transfer_not_found"),
            TransferError::NotCancellable { .. } => {
                (StatusCode::CONFLICT, "transfer_not_cancellable")
            }
            TransferError::NothingToRefund { .. } => {
                (StatusCode::CONFLICT, "transfer_refund_not_failed")
            }
        };
        Self::new(status, code, error.to_string())
    }
}

fn account(field: &str, id: String) -> Result<AccountId, ApiError> {
    AccountId::new(id).map_err(|e| ApiError::invalid_request(format!("{field}: {e}")))
}

/// `execute_at` must be a due time every timer store keeps ([`timer_due_range`]): one outside it would be
/// accepted here and refused by the transfer process later.
fn check_execute_at(at: DateTime<Utc>) -> Result<(), ApiError> {
    let range = timer_due_range();
    if range.contains(&at) {
        return Ok(());
    }
    let show = |at: &DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    Err(ApiError::invalid_request(format!(
        "execute_at: must be between {} and {}, got {}",
        show(range.start()),
        show(range.end()),
        at.to_rfc3339()
    )))
}

pub(super) async fn request(
    transfers: Transfers,
    JsonBody(request): JsonBody<TransferRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let id = match request.id {
        Some(id) => {
            TransferId::new(id).map_err(|e| ApiError::invalid_request(format!("id: {e}")))?
        }
        None => transfers.new_id(),
    };
    let from = account("from", request.from)?;
    let to = account("to", request.to)?;
    if from == to {
        return Err(ApiError::invalid_request(
            "to: a transfer needs two different accounts; from and to are the same",
        ));
    }
    if request.amount == 0 || request.amount > MAX_AMOUNT {
        return Err(ApiError::invalid_request(format!(
            "amount: must be between 1 and {MAX_AMOUNT} minor units, got {}",
            request.amount
        )));
    }
    if let Some(at) = request.execute_at {
        check_execute_at(at)?;
    }
    let source = Repository::<Account>::new(Arc::clone(&transfers.store))
        .load(from.stream())
        .await?;
    if source.state.status == AccountStatus::Unopened {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            format!("the source account {from} does not exist"),
        ));
    }
    let transfer = transfers
        .execute(
            &id,
            TransferCommand::Request {
                from,
                to,
                amount: request.amount,
                execute_at: request.execute_at,
            },
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: id.as_str().to_owned(),
            status: transfer.status,
        }),
    ))
}

/// The `{id}` path segment, validated.
pub(super) struct TransferPath(TransferId);

impl<S: Send + Sync> FromRequestParts<S> for TransferPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        TransferId::new(id)
            .map(TransferPath)
            .map_err(|e| ApiError::invalid_request(e.to_string()))
    }
}

pub(super) async fn show(
    State(state): State<AppState>,
    TransferPath(id): TransferPath,
) -> Result<Json<TransferView>, ApiError> {
    let loaded = Repository::<Transfer>::new(Arc::clone(&state.store))
        .load(id.stream())
        .await?;
    if loaded.state.status == TransferStatus::Unknown {
        return Err(TransferError::NotFound.into());
    }
    Ok(TransferView::new(&id, loaded.state))
}

pub(super) async fn cancel(
    transfers: Transfers,
    TransferPath(id): TransferPath,
) -> Result<Json<TransferView>, ApiError> {
    let transfer = transfers.execute(&id, TransferCommand::Cancel).await?;
    Ok(TransferView::new(&id, transfer))
}

/// An operator's retry of a refused refund (status `refund_failed`), once the source has room again: `202` with
/// the transfer; the process sends the refund again.
pub(super) async fn retry_refund(
    transfers: Transfers,
    TransferPath(id): TransferPath,
) -> Result<(StatusCode, Json<TransferView>), ApiError> {
    let transfer = transfers.execute(&id, TransferCommand::RetryRefund).await?;
    Ok((StatusCode::ACCEPTED, TransferView::new(&id, transfer)))
}
