//! `Idempotency-Key`: a POST carrying one runs as an Annals command id, so it takes effect at most once and every
//! retry gets the original answer (see `docs/command-ids.md`). Keys are scoped per client: the command id is
//! the `X-Client-Id` header (`anonymous` without one; a gateway that authenticates clients should set it) joined
//! with the key, so one client cannot replay another's.

use annals::CommandId;
use axum::http::HeaderMap;

use super::error::ApiError;

/// The longest key (and client id) accepted, in bytes.
const MAX_LEN: usize = 255;

/// The request's idempotency key, if any, as the raw key and its scoped command id.
pub(crate) fn command_id(headers: &HeaderMap) -> Result<Option<(String, CommandId)>, ApiError> {
    let header = |name: &str| match headers.get(name).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(value)) if !value.is_empty() && value.len() <= MAX_LEN => Ok(Some(value)),
        Some(_) => Err(ApiError::invalid_request(format!(
            "the {name} header must be 1 to {MAX_LEN} visible ASCII characters"
        ))),
    };
    let Some(key) = header("Idempotency-Key")? else {
        return Ok(None);
    };
    let client = header("X-Client-Id")?.unwrap_or("anonymous");
    let id =
        CommandId::scoped(client, key).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    Ok(Some((key.to_owned(), id)))
}
