//! The handlers: request bodies in, domain commands through [`Accounts`], response bodies out.

use annals::{Executed, Position};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::accounts::{AccountPath, Accounts};
use super::error::ApiError;
use crate::account::{Account, AccountCommand, AccountId, AccountStatus};
use crate::read_models::{Balance, MAX_HISTORY_PAGE};
use annals_axum::{EventJson, JsonBody, MinPosition, OptionalJsonBody, Replied};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenRequest {
    id: Option<String>,
    owner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AmountRequest {
    amount: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseRequest {}

#[derive(Serialize)]
pub(super) struct Opened {
    id: AccountId,
    owner: String,
    balance: u64,
    status: AccountStatus,
    version: u64,
    position: u64,
}

#[derive(Serialize)]
pub(super) struct Changed {
    id: AccountId,
    balance: u64,
    version: u64,
    position: u64,
}

impl Changed {
    fn new(id: AccountId, done: &Executed<Account>) -> Replied<Self> {
        let body = Self {
            id,
            balance: done.state.balance,
            version: done.version.get(),
            position: done.position.get(),
        };
        Replied::to(done, body)
    }
}

pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn open(
    accounts: Accounts,
    JsonBody(request): JsonBody<OpenRequest>,
) -> Result<(StatusCode, Replied<Opened>), ApiError> {
    let id = match (request.id, &accounts.command_id) {
        (Some(id), _) => {
            AccountId::new(id).map_err(|e| ApiError::invalid_request(e.to_string()))?
        }
        // A retry with the same key must reach the same account.
        (None, Some(command_id)) => AccountId::derived(command_id),
        (None, None) => AccountId::generate(),
    };
    let done = accounts
        .execute(
            &id,
            AccountCommand::Open {
                owner: request.owner,
            },
        )
        .await?;
    let opened = Opened {
        id,
        owner: done.state.owner.clone(),
        balance: done.state.balance,
        status: done.state.status,
        version: done.version.get(),
        position: done.position.get(),
    };
    Ok((StatusCode::CREATED, Replied::to(&done, opened)))
}

pub(super) async fn deposit(
    accounts: Accounts,
    AccountPath(id): AccountPath,
    JsonBody(AmountRequest { amount }): JsonBody<AmountRequest>,
) -> Result<Replied<Changed>, ApiError> {
    let done = accounts
        .execute(&id, AccountCommand::Deposit { amount })
        .await?;
    Ok(Changed::new(id, &done))
}

pub(super) async fn withdraw(
    accounts: Accounts,
    AccountPath(id): AccountPath,
    JsonBody(AmountRequest { amount }): JsonBody<AmountRequest>,
) -> Result<Replied<Changed>, ApiError> {
    let done = accounts
        .execute(&id, AccountCommand::Withdraw { amount })
        .await?;
    Ok(Changed::new(id, &done))
}

pub(super) async fn close(
    accounts: Accounts,
    AccountPath(id): AccountPath,
    OptionalJsonBody(_): OptionalJsonBody<CloseRequest>,
) -> Result<Replied<Changed>, ApiError> {
    let done = accounts.execute(&id, AccountCommand::Close).await?;
    Ok(Changed::new(id, &done))
}

pub(super) async fn account(
    State(state): State<AppState>,
    AccountPath(id): AccountPath,
    min_position: MinPosition,
) -> Result<Json<Balance>, ApiError> {
    min_position
        .wait_for(&*state.store, &state.read_models.balances)
        .await?;
    let balance = state.read_models.balance(&id).await?;
    balance.map(Json).ok_or_else(not_found_account)
}

/// `?min_position=N&after=P&limit=L` on the history: read-your-writes, then one page of at most `L` entries
/// (default and most [`MAX_HISTORY_PAGE`]) after the entry at position `P`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    min_position: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn history(
    State(state): State<AppState>,
    AccountPath(id): AccountPath,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(MAX_HISTORY_PAGE);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "limit: {limit} is not between 1 and {MAX_HISTORY_PAGE}"
        )));
    }
    MinPosition(query.min_position.map(Position))
        .wait_for(&*state.store, &state.read_models.history)
        .await?;
    let page = state
        .read_models
        .history_page(&id, query.after, limit)
        .await?;
    // An empty page is a 404 only for an account with no history at all, asked of the same read model (the
    // `balances` one may lag behind it).
    let first = || state.read_models.history_page(&id, None, 1);
    if page.items.is_empty() && (query.after.is_none() || first().await?.items.is_empty()) {
        return Err(not_found_account());
    }
    Ok(Json(json!({"items": page.items, "next": page.next})))
}

pub(super) async fn events(
    State(state): State<AppState>,
    AccountPath(id): AccountPath,
) -> Result<Json<Value>, ApiError> {
    let events = state.store.load_stream(id.stream()).await?;
    if events.is_empty() {
        return Err(not_found_account());
    }
    let items: Vec<EventJson> = events.into_iter().map(EventJson).collect();
    Ok(Json(json!({"items": items})))
}

fn not_found_account() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "account_not_found",
        "account not found",
    )
}
