//! The building blocks over real axum routing: error mapping, correlation ids, idempotency keys, JSON bodies,
//! min_position.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use annals::{CommandError, CommandId, Error, ExpectedVersion, Position, StreamId, StreamVersion};
use annals_axum::{CorrelationId, HttpError, IdempotencyKey, JsonBody, MinPosition, correlate};
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use tower::ServiceExt;

async fn body_of(response: Response) -> serde_json::Value {
    serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap()).unwrap()
}

fn stream() -> StreamId {
    StreamId::new("account-1").unwrap()
}

#[derive(Debug)]
struct Refused;
impl From<Refused> for HttpError {
    fn from(_: Refused) -> Self {
        HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", "no")
    }
}

#[tokio::test]
async fn framework_errors_map_to_their_statuses() {
    let conflict = Error::Conflict {
        stream: stream(),
        expected: ExpectedVersion::Exact(StreamVersion(1)),
        actual: StreamVersion(2),
    };
    let cases: Vec<(CommandError<Refused>, u16, &str)> = vec![
        (CommandError::Rejected(Refused), 422, "refused"),
        (
            CommandError::Conflict {
                stream: stream(),
                attempts: 9,
                last: conflict,
            },
            409,
            "conflict",
        ),
        (
            CommandError::CommandIdReused {
                command_id: CommandId::new("k").unwrap(),
                stream: stream(),
            },
            422,
            "idempotency_key_reused",
        ),
        (
            CommandError::OutcomeUnknown {
                stream: stream(),
                command_id: None,
                attempts: 6,
                last: Error::Unavailable {
                    operation: "append",
                    source: "reset".into(),
                },
            },
            503,
            "unavailable",
        ),
        (
            CommandError::Store(Error::Unavailable {
                operation: "load",
                source: "reset".into(),
            }),
            503,
            "unavailable",
        ),
        // A store-level conflict reaching a handler (an append outside the repository's retries) is the
        // same concurrency conflict: 409, never 500.
        (
            CommandError::Store(Error::Conflict {
                stream: stream(),
                expected: ExpectedVersion::NoStream,
                actual: StreamVersion(1),
            }),
            409,
            "conflict",
        ),
    ];
    for (error, status, code) in cases {
        let response = HttpError::from(error).into_response();
        assert_eq!(response.status().as_u16(), status, "{code}");
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        assert_eq!(body_of(response).await["error"]["code"], code);
    }
    let response = HttpError::from(Error::Conflict {
        stream: stream(),
        expected: ExpectedVersion::Exact(StreamVersion(1)),
        actual: StreamVersion(2),
    })
    .into_response();
    assert_eq!(response.status().as_u16(), 409);
    assert_eq!(body_of(response).await["error"]["code"], "conflict");
    let decode = Error::Decode {
        stream: stream(),
        version: StreamVersion(3),
        position: Position(9),
        event_type: "SecretInternalEvent".into(),
        schema_version: 1,
        source: "payload table_name.column".into(),
    };
    let response = HttpError::from(CommandError::<Refused>::Store(decode)).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = body_of(response).await.to_string();
    assert!(
        !text.contains("SecretInternalEvent") && !text.contains("table_name"),
        "{text}"
    );
}

async fn echo(
    correlation: CorrelationId,
    key: Option<IdempotencyKey>,
    MinPosition(min): MinPosition,
) -> String {
    format!(
        "{} {} {:?}",
        correlation.0,
        key.map(|k| k.command_id.to_string()).unwrap_or_default(),
        min.map(Position::get)
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Amount {
    #[allow(dead_code)]
    amount: u64,
}

async fn take(JsonBody(_): JsonBody<Amount>) -> &'static str {
    "ok"
}

fn app() -> Router {
    Router::new()
        .route("/echo", get(echo))
        .route("/take", post(take))
        .layer(middleware::from_fn(correlate))
}

async fn call(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn correlation_ids_and_keys_reach_the_handler() {
    let request = Request::get("/echo?min_position=7")
        .header("x-correlation-id", "corr-1")
        .header("idempotency-key", "k-1")
        .header("x-client-id", "client-a")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-correlation-id"], "corr-1", "echoed");
    let scoped = CommandId::scoped("client-a", "k-1").unwrap();
    assert_eq!(body, format!("corr-1 {scoped} Some(7)"));
    // Another client's key is another command id.
    let request = Request::get("/echo")
        .header("idempotency-key", "k-1")
        .header("x-client-id", "client-b")
        .body(Body::empty())
        .unwrap();
    let (_, headers, body) = call(request).await;
    assert!(!body.contains(&scoped.to_string()), "{body}");
    assert!(body.ends_with("None"), "{body}");
    assert!(!headers["x-correlation-id"].is_empty(), "generated");
}

#[tokio::test]
async fn bad_headers_queries_and_bodies_are_400() {
    for request in [
        Request::get("/echo").header("idempotency-key", "k".repeat(256)),
        Request::get("/echo").header("x-correlation-id", "c".repeat(201)),
        Request::get("/echo?min_position=-1"),
        Request::get("/echo?colour=red"),
    ] {
        let (status, _, body) = call(request.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("invalid_request"), "{body}");
    }
    for bad in [
        &b"\xff\xfe"[..],
        b"{\"amount\": \"\0\"}",
        b"\0",
        b"[1]",
        b"{\"amount\": 1, \"x\": 2}",
    ] {
        let request = Request::post("/take")
            .body(Body::from(bad.to_vec()))
            .unwrap();
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
}

#[tokio::test]
async fn a_position_beyond_the_head_is_refused_at_once() {
    use annals::{EventStore, NewEvent};
    let store = annals_memory::MemoryStore::new();
    let event = NewEvent::new("ThingHappened", serde_json::json!({}));
    store
        .append(&stream(), ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    let at_head = MinPosition(Some(Position(1)))
        .reachable(&store)
        .await
        .unwrap();
    assert_eq!(at_head, MinPosition(Some(Position(1))));
    assert_eq!(
        MinPosition(None).reachable(&store).await.unwrap(),
        MinPosition(None)
    );
    let beyond = MinPosition(Some(Position(i64::MAX as u64)))
        .reachable(&store)
        .await
        .unwrap_err();
    assert_eq!(
        (beyond.status.as_u16(), beyond.code),
        (422, "position_beyond_head")
    );
}

#[tokio::test]
async fn unrouted_requests_get_the_error_shape() {
    let app = Router::new()
        .route("/here", get(|| async { "ok" }))
        .fallback(annals_axum::no_route)
        .method_not_allowed_fallback(annals_axum::method_not_allowed);
    for (method, path, status, code) in [
        ("GET", "/nowhere", 404, "not_found"),
        ("POST", "/here", 405, "method_not_allowed"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty());
        let response = app.clone().oneshot(request.unwrap()).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body = body_of(response).await;
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}
