//! [`JsonBody`] and [`OptionalJsonBody`]: JSON request bodies whose every failure is a `400 invalid_request`
//! naming the offending field (or a `413` for an oversized body), in the service's error shape rather than
//! axum's plain-text rejections. Invalid UTF-8 and NUL bytes are refused here, before anything is stored.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::HttpError;

/// A JSON request body deserialized into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        let bytes = Bytes::from_request(request, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON request body that may be left out entirely (an empty body reads as `None`).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        let bytes = Bytes::from_request(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        parse(&bytes).map(|body| Self(Some(body)))
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError::invalid_request(
            "the request body is empty; expected a JSON object",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        HttpError::invalid_request(format!("the request body is not valid JSON: {error}"))
    })?;
    if !value.is_object() {
        return Err(HttpError::invalid_request(format!(
            "invalid request body: expected a JSON object, got {}",
            kind(&value)
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            HttpError::invalid_request(format!("invalid request body: {inner}"))
        } else {
            HttpError::invalid_request(format!("invalid field `{path}`: {inner}"))
        }
    })
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
