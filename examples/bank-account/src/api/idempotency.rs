//! The `Idempotency-Key` middleware: every POST carrying the header runs at most once per key.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::error::{ApiError, Transient};
use crate::idempotency::{Begun, StoredResponse};

/// The idempotency header.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Set on a response replayed from an earlier request with the same key.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted, in bytes.
const MAX_KEY_LEN: usize = 255;

/// The request's idempotency key, available to handlers as a request extension (recorded in event metadata).
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey(pub(crate) String);

pub(crate) async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match run(state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(state: AppState, request: Request, next: Next) -> Result<Response, Response> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = request.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(next.run(request).await);
    };
    let key = match key.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => key.to_owned(),
        _ => {
            return Err(ApiError::invalid_request(format!(
                "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
            .into_response());
        }
    };
    let (parts, body) = request.into_parts();
    let fingerprint = format!("{} {}", parts.method, parts.uri.path());
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(IdempotencyKey(key.clone()));
    // Buffer the body (honouring the body limit) to compare it with the key's earlier request.
    let (parts, body) = request.into_parts();
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), &())
        .await
        .map_err(|rejection| ApiError::from(rejection).into_response())?;
    let request_form = format!("{fingerprint} {}", canonical_body(&bytes));

    let reservation = match state.idempotency.begin(&key, &request_form).await {
        Ok(Begun::Owner(reservation)) => reservation,
        Ok(Begun::Replay(stored)) => return Ok(replay(stored)),
        Ok(Begun::Reused) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "the Idempotency-Key {key:?} was used for a different request; use a fresh key for a new request"
                ),
            )
            .into_response());
        }
        Err(error) => return Err(error.into_response()),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    if let Some(store) = reservation.store() {
        request.extensions_mut().insert(RequestStore(store));
    }
    // The work runs in its own task so that a client hanging up cannot stop it between the effect and the
    // recording of its response.
    let work = tokio::spawn(async move {
        let response = next.run(request).await;
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(body) => body,
            Err(error) => {
                reservation.release().await;
                return ApiError::internal(error).into_response();
            }
        };
        if parts.extensions.get::<Transient>().is_some() {
            reservation.release().await;
        } else {
            let stored = StoredResponse {
                status: parts.status.as_u16(),
                body: body.to_vec(),
            };
            if let Err(error) = reservation.complete(&stored).await {
                return error.into_response();
            }
        }
        Response::from_parts(parts, Body::from(body))
    });
    work.await
        .map_err(|error| ApiError::internal(error).into_response())
}

/// The store a request's commands append to, when the idempotency backend needs the events in its transaction.
#[derive(Clone)]
pub(crate) struct RequestStore(pub(crate) std::sync::Arc<dyn annals::EventStore>);

/// The body as canonical JSON (sorted keys, no whitespace) when it is JSON, so that formatting does not make
/// two identical requests differ; verbatim otherwise.
fn canonical_body(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => value.to_string(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
