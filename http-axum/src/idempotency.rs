//! `Idempotency-Key` as an Annals [`CommandId`], scoped per client.

use annals::CommandId;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::HttpError;

/// The idempotency header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The client header that scopes idempotency keys.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
/// Set on an answer that is the remembered outcome of an earlier request with the same key.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key (and client id) accepted, in bytes.
const MAX_LEN: usize = 255;

/// The request's `Idempotency-Key`, as the raw key and the command id to execute under
/// ([`Repository::execute_once`](annals::Repository::execute_once)).
///
/// Keys are scoped per client: the command id joins the `X-Client-Id` header (`anonymous` when absent; a gateway
/// that authenticates clients should set it from the principal) with the key, so one client can neither replay
/// nor block another's. Extract it as `Option<IdempotencyKey>`; a malformed header is `400 invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as sent.
    pub key: String,
    /// The scoped command id.
    pub command_id: CommandId,
}

fn header<'a>(parts: &'a Parts, name: &HeaderName) -> Result<Option<&'a str>, HttpError> {
    match parts.headers.get(name).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(value)) if !value.is_empty() && value.len() <= MAX_LEN => Ok(Some(value)),
        Some(_) => Err(HttpError::invalid_request(format!(
            "the {name} header must be 1 to {MAX_LEN} visible ASCII characters"
        ))),
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, HttpError> {
        let Some(key) = header(parts, &IDEMPOTENCY_KEY)? else {
            return Ok(None);
        };
        let client = header(parts, &CLIENT_ID)?.unwrap_or("anonymous");
        let command_id = CommandId::scoped(client, key)
            .map_err(|e| HttpError::invalid_request(e.to_string()))?;
        Ok(Some(Self {
            key: key.to_owned(),
            command_id,
        }))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| HttpError::invalid_request("the Idempotency-Key header is required"))
    }
}

/// Marks `response` with `idempotent-replayed: true` when `replayed` (see [`annals::Executed::replayed`]).
pub fn replayed(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// A JSON answer for a command's outcome, marked `idempotent-replayed: true` when the outcome was replayed.
#[derive(Debug, Clone)]
pub struct Replied<T> {
    /// The body.
    pub body: T,
    /// Whether the outcome was replayed ([`annals::Executed::replayed`]).
    pub replayed: bool,
}

impl<T> Replied<T> {
    /// `body`, answering for `done`.
    pub fn to<A: annals::Aggregate>(done: &annals::Executed<A>, body: T) -> Self {
        Self {
            body,
            replayed: done.replayed,
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Replied<T> {
    fn into_response(self) -> Response {
        replayed(axum::Json(self.body).into_response(), self.replayed)
    }
}
