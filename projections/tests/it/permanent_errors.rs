//! Errors that retrying cannot fix go to the failure policy instead of being retried forever: a document
//! PostgreSQL refuses (a NUL character; a key longer than the index allows), the same on the memory backend,
//! and a SQL projection whose batch insert fails without saying which event (index 0), found one by one.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use annals_projections::{
    BoxError, Documents, Error, FailurePolicy, MAX_KEY_BYTES, Projection, ProjectionOptions,
    Projections, State, async_trait,
};
#[cfg(feature = "postgres")]
use annals_projections::{SqlProjection, SqlTx};
use serde_json::json;
#[cfg(feature = "postgres")]
use sqlx::{AssertSqlSafe, PgPool};

use crate::support::*;

/// Stores each event's `text` under its `key`; with `"nul": true` it appends a NUL character to the text (the
/// store refuses a NUL in an event, but projection code can still produce one).
struct Writer;

#[async_trait]
impl Projection for Writer {
    fn name(&self) -> &str {
        "writer"
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let payload = event.payload.to_value()?;
        let key = payload["key"].as_str().ok_or("no key")?;
        let mut text = payload["text"].as_str().unwrap_or_default().to_owned();
        if payload["nul"] == json!(true) {
            text.push('\0');
        }
        docs.put("docs", key, &json!({ "text": text }))?;
        Ok(())
    }
}

/// Writes good, NUL, good, long key, good; returns the positions of the two bad ones.
async fn write_bad_documents(store: &dyn EventStore) -> (Position, Position) {
    let id = StreamId::new("w-1").unwrap();
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let payloads = [
        json!({"key": "a", "text": "fine"}),
        json!({"key": "b", "text": "nul", "nul": true}),
        json!({"key": "c", "text": "fine"}),
        json!({"key": long, "text": "long key"}),
        json!({"key": "e", "text": "fine"}),
    ];
    let mut positions = Vec::new();
    for payload in payloads {
        let done = store
            .append(
                &id,
                ExpectedVersion::Any,
                vec![NewEvent::new("Wrote", payload)],
            )
            .await
            .unwrap();
        positions.push(done.last_position);
    }
    (positions[1], positions[3])
}

async fn stops_at_the_first_bad_document(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
) {
    let (nul, _) = write_bad_documents(&store).await;
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        projections.run(std::future::pending()),
    )
    .await
    .expect("a permanent error is not retried forever");
    match ended {
        Err(Error::ProjectionFailed {
            position, cause, ..
        }) => {
            assert_eq!(position, nul);
            // Memory names the NUL; PostgreSQL refuses the escape (SQLSTATE 22P05).
            assert!(
                cause.contains("NUL") || cause.contains("Unicode escape"),
                "{cause}"
            );
        }
        other => panic!("expected ProjectionFailed, got {other:?}"),
    }
    let status = projections.status().await.unwrap();
    assert!(
        matches!(&status[0].state, State::Failed { error } if error.contains(&nul.to_string())),
        "{status:?}"
    );
    // Everything before it is applied and checkpointed.
    let reader = projections.documents("writer").unwrap();
    assert_eq!(reader.position().await.unwrap(), Position(nul.get() - 1));
    assert!(
        reader
            .get::<serde_json::Value>("docs", "a")
            .await
            .unwrap()
            .is_some()
    );
}

async fn parks_both_bad_documents(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
) {
    let (nul, long) = write_bad_documents(&store).await;
    let (stop, handle) = spawn_run(&projections);
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("writer", head, Duration::from_secs(30))
        .await
        .expect("the good events are applied, the bad ones parked");
    let parked = projections.parked("writer").await.unwrap();
    assert_eq!(
        parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        vec![nul, long]
    );
    assert!(parked[1].error.contains("bytes"), "{}", parked[1].error);
    let reader = projections.documents("writer").unwrap();
    let keys: Vec<String> = reader
        .list::<serde_json::Value>("docs", "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["a", "c", "e"]);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

fn park() -> ProjectionOptions {
    ProjectionOptions::new().failure_policy(FailurePolicy::park())
}

#[tokio::test]
async fn memory_refused_document_stops_the_projection_with_its_reason() {
    let store = memory_store();
    let projections = Projections::memory(store.clone()).with(Writer);
    stops_at_the_first_bad_document(store, projections).await;
}

#[tokio::test]
async fn memory_refused_documents_are_parked() {
    let store = memory_store();
    let projections = Projections::memory(store.clone()).with_options(Writer, park());
    parks_both_bad_documents(store, projections).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_nul_in_a_document_stops_the_projection_instead_of_retrying_forever(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool).with(Writer);
    stops_at_the_first_bad_document(store, projections).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_refused_documents_are_parked(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool).with_options(Writer, park());
    parks_both_bad_documents(store, projections).await;
}

/// Inserts every event's `key` into an indexed table with one statement per batch; on failure it cannot tell
/// which event was at fault and returns index 0, as the contract allows.
struct Keys;

#[cfg(feature = "postgres")]
#[async_trait]
impl SqlProjection for Keys {
    fn name(&self) -> &str {
        "keys"
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        let table = tx.table("keys");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (key text PRIMARY KEY, position bigint NOT NULL)"
        )))
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    async fn apply(&self, event: &RecordedEvent, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        self.apply_batch(&[event], tx).await.map_err(|(_, e)| e)
    }

    async fn apply_batch(
        &self,
        events: &[&RecordedEvent],
        tx: &mut SqlTx<'_>,
    ) -> Result<(), (usize, BoxError)> {
        let mut keys = Vec::new();
        let mut positions = Vec::new();
        for event in events {
            let payload = event.payload.to_value().map_err(|e| (0, e.into()))?;
            keys.push(payload["key"].as_str().unwrap_or_default().to_owned());
            positions.push(i64::try_from(event.position.get()).unwrap_or(i64::MAX));
        }
        let table = tx.table("keys");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (key, position) SELECT * FROM unnest($1::text[], $2::bigint[])"
        )))
        .bind(&keys)
        .bind(&positions)
        .execute(tx.conn())
        .await
        .map_err(|e| (0, e.into()))?;
        Ok(())
    }
}

/// An incompressible key far beyond the B-tree entry limit (SQLSTATE 54000 on insert).
fn huge_key() -> String {
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..12_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}

/// Ten keys in one batch; the 7th is too long for the index.
async fn write_keys(store: &dyn EventStore) -> Position {
    let id = StreamId::new("k-1").unwrap();
    let events = (0..10)
        .map(|i| {
            let key = if i == 6 {
                huge_key()
            } else {
                format!("key-{i}")
            };
            NewEvent::new("Keyed", json!({ "key": key }))
        })
        .collect();
    let done = store
        .append(&id, ExpectedVersion::Any, events)
        .await
        .unwrap();
    Position(done.last_position.get() - 3)
}

#[cfg(feature = "postgres")]
async fn stored_keys(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM rm_keys.keys ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_batch_failing_at_unknown_index_is_retried_one_by_one_and_only_the_culprit_stops(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    let culprit = write_keys(&store).await;
    let projections = Projections::postgres(store.clone(), pool.clone()).with_sql(Keys);
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        projections.run(std::future::pending()),
    )
    .await
    .expect("a program-limit error (54000) is not retried forever");
    match ended {
        Err(Error::ProjectionFailed { position, .. }) => assert_eq!(position, culprit),
        other => panic!("expected ProjectionFailed, got {other:?}"),
    }
    // The six events before the culprit were applied one by one; nothing after it.
    assert_eq!(
        stored_keys(&pool).await,
        (0..6).map(|i| format!("key-{i}")).collect::<Vec<_>>()
    );
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_batch_failing_at_unknown_index_parks_only_the_culprit(pool: PgPool) {
    let store = pg_store(&pool).await;
    let culprit = write_keys(&store).await;
    let projections =
        Projections::postgres(store.clone(), pool.clone()).with_sql_options(Keys, park());
    let (stop, handle) = spawn_run(&projections);
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("keys", head, Duration::from_secs(30))
        .await
        .unwrap();
    let parked = projections.parked("keys").await.unwrap();
    assert_eq!(
        parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        vec![culprit]
    );
    let expected: Vec<String> = (0..10)
        .filter(|i| *i != 6)
        .map(|i| format!("key-{i}"))
        .collect();
    assert_eq!(stored_keys(&pool).await, expected);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}
