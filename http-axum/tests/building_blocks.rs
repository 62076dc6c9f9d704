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
async fn a_position_no_write_was_handed_is_refused_after_the_wait() {
    use annals::{EventStore, NewEvent};
    let store = annals_memory::MemoryStore::new();
    let event = NewEvent::new("ThingHappened", serde_json::json!({}));
    store
        .append(&stream(), ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    let wait = std::time::Duration::from_millis(20);
    let at_head = MinPosition(Some(Position(1)))
        .reachable_within(&store, wait)
        .await
        .unwrap();
    assert_eq!(at_head, MinPosition(Some(Position(1))));
    assert_eq!(
        MinPosition(None).reachable(&store).await.unwrap(),
        MinPosition(None)
    );
    let beyond = MinPosition(Some(Position(i64::MAX as u64)))
        .reachable_within(&store, wait)
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

/// A store whose gap-safe head stays below an append that is still committing (as PostgreSQL's does): positions
/// after it are handed out and stored, but not readable until it ends.
struct Gapped {
    inner: annals_memory::MemoryStore,
    /// The position of the append still committing, if any.
    in_flight: tokio::sync::watch::Sender<Option<Position>>,
    /// Signalled whenever a reader asks for the head.
    asked: tokio::sync::Notify,
}

impl Gapped {
    async fn visible_head(&self) -> annals::Result<Position> {
        use annals::EventStore;
        let head = self.inner.head().await?;
        Ok(match *self.in_flight.borrow() {
            Some(committing) => head.min(Position(committing.get() - 1)),
            None => head,
        })
    }
}

#[annals::async_trait]
impl annals::EventStore for Gapped {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<annals::NewEvent>,
    ) -> annals::Result<annals::AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<annals::RecordedEvent>> {
        self.inner.read_stream(stream, from, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> annals::Result<Vec<annals::RecordedEvent>> {
        let head = self.visible_head().await?;
        let mut events = self.inner.read_all(after, limit).await?;
        events.retain(|e| e.position <= head);
        Ok(events)
    }

    async fn head(&self) -> annals::Result<Position> {
        self.asked.notify_one();
        self.visible_head().await
    }

    // Every position the inner store gave out was handed to an append, committed or still "committing".
    async fn allocated_head(&self) -> annals::Result<Position> {
        self.inner.head().await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: std::time::Duration,
    ) -> annals::Result<Position> {
        let mut changes = self.in_flight.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let head = self.visible_head().await?;
                if head > after {
                    return Ok(head);
                }
                if changes.changed().await.is_err() {
                    return Ok(head);
                }
            }
        })
        .await;
        match waited {
            Ok(head) => head,
            Err(_) => self.visible_head().await,
        }
    }
}

#[tokio::test]
async fn a_position_handed_out_above_an_append_still_committing_is_waited_for() {
    use annals::{EventStore, NewEvent};
    let store = std::sync::Arc::new(Gapped {
        inner: annals_memory::MemoryStore::new(),
        in_flight: tokio::sync::watch::channel(None).0,
        asked: tokio::sync::Notify::new(),
    });
    let event = || vec![NewEvent::new("ThingHappened", serde_json::json!({}))];
    let committing = store
        .append(&stream(), ExpectedVersion::NoStream, event())
        .await
        .unwrap()
        .last_position;
    store.in_flight.send_replace(Some(committing));
    // A write after it returns its position, which the gap-safe head does not reach yet.
    let written = store
        .append(
            &StreamId::new("account-2").unwrap(),
            ExpectedVersion::NoStream,
            event(),
        )
        .await
        .unwrap()
        .last_position;
    assert!(store.visible_head().await.unwrap() < written);

    let reader = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move { MinPosition(Some(written)).reachable(&*store).await }
    });
    // Once the reader has seen the head below its position, the append below ends.
    store.asked.notified().await;
    store.in_flight.send_replace(None);
    assert_eq!(
        reader.await.unwrap().unwrap(),
        MinPosition(Some(written)),
        "a position a write answered with is waited for, never refused"
    );
}
