//! The HTTP service: routes, handlers and the layers around them.

mod correlation;
pub(crate) mod error;
mod idempotency;
mod json;
mod locks;

use std::sync::Arc;

use annals::{EventStore, Executed, Metadata, Repository};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::account::{Account, AccountCommand, AccountId, AccountStatus};
use crate::idempotency::IdempotencyKeys;
use crate::read_models::{Balance, ReadModels};
use correlation::CorrelationId;
use error::ApiError;
use idempotency::{IdempotencyKey, RequestStore};
use json::{JsonBody, OptionalJsonBody};
use locks::KeyedLocks;

/// The largest request body accepted, in bytes; larger bodies get `413`.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) idempotency: Arc<dyn IdempotencyKeys>,
    pub(crate) read_models: ReadModels,
    pub(crate) max_retries: u32,
    pub(crate) writers: KeyedLocks,
}

/// The service's routes with their layers.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/accounts", post(open))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/deposit", post(deposit))
        .route("/accounts/{id}/withdraw", post(withdraw))
        .route("/accounts/{id}/close", post(close))
        .route("/accounts/{id}/history", get(history))
        .route("/accounts/{id}/events", get(events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(middleware::from_fn(correlation::correlation))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The accounts, as this request sees them: commands go through the [`Repository`], carrying the request's
/// correlation id (and idempotency key) in their events' metadata.
struct Accounts {
    repository: Repository<Account>,
    metadata: Metadata,
    writers: KeyedLocks,
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
            repository: Repository::new(store).with_max_retries(state.max_retries),
            metadata,
            writers: state.writers.clone(),
        })
    }
}

impl Accounts {
    async fn execute(
        &self,
        id: &AccountId,
        command: AccountCommand,
    ) -> Result<Executed<Account>, ApiError> {
        let _one_writer_per_account = self.writers.lock(id.as_str()).await;
        Ok(self
            .repository
            .execute_with(id.stream(), &command, self.metadata.clone())
            .await?)
    }
}

/// The `{id}` path segment, validated.
struct AccountPath(AccountId);

impl<S: Send + Sync> FromRequestParts<S> for AccountPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        AccountId::new(id)
            .map(AccountPath)
            .map_err(|e| ApiError::invalid_request(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    id: Option<String>,
    owner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountRequest {
    amount: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {}

#[derive(Serialize)]
struct Opened {
    id: AccountId,
    owner: String,
    balance: u64,
    status: AccountStatus,
    version: u64,
    position: u64,
}

#[derive(Serialize)]
struct Changed {
    id: AccountId,
    balance: u64,
    version: u64,
    position: u64,
}

impl Changed {
    fn new(id: AccountId, done: &Executed<Account>) -> Json<Self> {
        Json(Self {
            id,
            balance: done.state.balance,
            version: done.version.get(),
            position: done.position.get(),
        })
    }
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn open(
    accounts: Accounts,
    JsonBody(request): JsonBody<OpenRequest>,
) -> Result<(StatusCode, Json<Opened>), ApiError> {
    let id = match request.id {
        Some(id) => AccountId::new(id).map_err(|e| ApiError::invalid_request(e.to_string()))?,
        None => AccountId::generate(),
    };
    let done = accounts
        .execute(
            &id,
            AccountCommand::Open {
                owner: request.owner,
            },
        )
        .await?;
    let state = done.state;
    Ok((
        StatusCode::CREATED,
        Json(Opened {
            id,
            owner: state.owner,
            balance: state.balance,
            status: state.status,
            version: done.version.get(),
            position: done.position.get(),
        }),
    ))
}

async fn deposit(
    accounts: Accounts,
    AccountPath(id): AccountPath,
    JsonBody(AmountRequest { amount }): JsonBody<AmountRequest>,
) -> Result<Json<Changed>, ApiError> {
    let done = accounts
        .execute(&id, AccountCommand::Deposit { amount })
        .await?;
    Ok(Changed::new(id, &done))
}

async fn withdraw(
    accounts: Accounts,
    AccountPath(id): AccountPath,
    JsonBody(AmountRequest { amount }): JsonBody<AmountRequest>,
) -> Result<Json<Changed>, ApiError> {
    let done = accounts
        .execute(&id, AccountCommand::Withdraw { amount })
        .await?;
    Ok(Changed::new(id, &done))
}

async fn close(
    accounts: Accounts,
    AccountPath(id): AccountPath,
    OptionalJsonBody(_): OptionalJsonBody<CloseRequest>,
) -> Result<Json<Changed>, ApiError> {
    let done = accounts.execute(&id, AccountCommand::Close).await?;
    Ok(Changed::new(id, &done))
}

/// `?min_position=N`: answer only once the read model has processed position `N`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    min_position: Option<u64>,
}

/// The query string, validated.
struct ReadParams(ReadQuery);

impl<S: Send + Sync> FromRequestParts<S> for ReadParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<ReadQuery>::from_request_parts(parts, state).await?;
        Ok(Self(query))
    }
}

async fn account(
    State(state): State<AppState>,
    AccountPath(id): AccountPath,
    ReadParams(query): ReadParams,
) -> Result<Json<Balance>, ApiError> {
    let balance = state.read_models.balance(&id, query.min_position).await?;
    balance.map(Json).ok_or_else(not_found_account)
}

async fn history(
    State(state): State<AppState>,
    AccountPath(id): AccountPath,
    ReadParams(query): ReadParams,
) -> Result<Json<Value>, ApiError> {
    let items = state.read_models.history(&id, query.min_position).await?;
    if items.is_empty() {
        return Err(not_found_account());
    }
    Ok(Json(json!({"items": items})))
}

async fn events(
    State(state): State<AppState>,
    AccountPath(id): AccountPath,
) -> Result<Json<Value>, ApiError> {
    let events = state.store.load_stream(id.stream()).await?;
    if events.is_empty() {
        return Err(not_found_account());
    }
    let items: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({
                "event_id": e.event_id,
                "type": e.event_type,
                "schema_version": e.schema_version,
                "version": e.stream_version,
                "position": e.position,
                "recorded_at": e.recorded_at,
                "payload": e.payload,
                "metadata": e.metadata,
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

fn not_found_account() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "account_not_found",
        "account not found",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see the README for the routes",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}
