//! The answers of a router to a request no route takes: `404 not_found` and `405 method_not_allowed`, in the one
//! error shape.

use axum::http::StatusCode;

use crate::error::HttpError;

/// `404 not_found`: no route matches the path. Mount it with `Router::fallback(annals_axum::no_route)`.
pub async fn no_route() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see the service's documentation for its routes",
    )
}

/// `405 method_not_allowed`: the path exists, not with this method. Mount it with
/// `Router::method_not_allowed_fallback(annals_axum::method_not_allowed)`.
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}
