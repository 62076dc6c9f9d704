//! The plain-sqlx baseline: the minimal events table a hand-written application would use, and the statements
//! every scenario's baseline runs on it.

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::{CartEvent, ITEM_ADDED, ItemAdded};
use crate::harness::Scratch;

/// The baseline's statements, bound to one scratch schema.
#[derive(Clone)]
pub(crate) struct RawTable {
    select_stream: Arc<str>,
    insert_one: Arc<str>,
    insert_batch: Arc<str>,
    select_all: Arc<str>,
}

impl RawTable {
    /// Creates the minimal table in `scratch`: a global position, the stream and its version (unique together,
    /// which is the whole of the baseline's concurrency control), the event type and the JSON payload.
    pub(crate) async fn create(pool: &PgPool, scratch: &Scratch) -> anyhow::Result<Self> {
        let table = format!("\"{}\".events", scratch.name());
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (
                position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                stream_id text NOT NULL,
                version bigint NOT NULL,
                event_type text NOT NULL,
                payload jsonb NOT NULL,
                UNIQUE (stream_id, version)
            )"
        )))
        .execute(pool)
        .await
        .context("cannot create the baseline table")?;
        Ok(Self {
            select_stream: format!(
                "SELECT version, event_type, payload FROM {table} WHERE stream_id = $1 ORDER BY version"
            )
            .into(),
            insert_one: format!(
                "INSERT INTO {table} (stream_id, version, event_type, payload) VALUES ($1, $2, $3, $4)"
            )
            .into(),
            insert_batch: format!(
                "INSERT INTO {table} (stream_id, version, event_type, payload)
                 SELECT $1, v, t, p FROM UNNEST($2::bigint[], $3::text[], $4::jsonb[]) AS e(v, t, p)"
            )
            .into(),
            select_all: format!(
                "SELECT position, stream_id, version, event_type, payload FROM {table} ORDER BY position"
            )
            .into(),
        })
    }

    /// Reads a stream's events, decoded, with the stream's version.
    pub(crate) async fn load(
        &self,
        pool: &PgPool,
        stream: &str,
    ) -> anyhow::Result<(Vec<CartEvent>, i64)> {
        let rows: Vec<(i64, String, Json<ItemAdded>)> =
            sqlx::query_as(AssertSqlSafe(self.select_stream.clone()))
                .bind(stream)
                .fetch_all(pool)
                .await?;
        let mut version = 0;
        let mut events = Vec::with_capacity(rows.len());
        for (v, event_type, Json(item)) in rows {
            events.push(decode(&event_type, item)?);
            version = v;
        }
        Ok((events, version))
    }

    /// Inserts one event at `version`; `Ok(false)` when another writer took that version first.
    pub(crate) async fn insert(
        &self,
        pool: &PgPool,
        stream: &str,
        version: i64,
        event: &CartEvent,
    ) -> anyhow::Result<bool> {
        let CartEvent::ItemAdded(item) = event;
        let inserted = sqlx::query(AssertSqlSafe(self.insert_one.clone()))
            .bind(stream)
            .bind(version)
            .bind(ITEM_ADDED)
            .bind(Json(item))
            .execute(pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts `events` at the versions after `after`, in one multi-row statement (one implicit transaction).
    pub(crate) async fn insert_batch(
        &self,
        pool: &PgPool,
        stream: &str,
        after: i64,
        events: &[CartEvent],
    ) -> anyhow::Result<()> {
        let versions: Vec<i64> = (after + 1..).take(events.len()).collect();
        let types: Vec<&str> = events.iter().map(|_| ITEM_ADDED).collect();
        let payloads: Vec<Json<&ItemAdded>> = events
            .iter()
            .map(|CartEvent::ItemAdded(item)| Json(item))
            .collect();
        sqlx::query(AssertSqlSafe(self.insert_batch.clone()))
            .bind(stream)
            .bind(versions)
            .bind(types)
            .bind(payloads)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The statement reading every event in position order.
    pub(crate) fn select_all(&self) -> Arc<str> {
        self.select_all.clone()
    }
}

/// Turns a stored row back into the domain event, by its persisted type.
pub(crate) fn decode(event_type: &str, item: ItemAdded) -> anyhow::Result<CartEvent> {
    anyhow::ensure!(
        event_type == ITEM_ADDED,
        "unknown event type {event_type:?} in the baseline table"
    );
    Ok(CartEvent::ItemAdded(item))
}
