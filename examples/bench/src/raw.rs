//! The plain-sqlx baseline: the minimal events table a hand-written application would use, and the statements
//! every scenario's baseline runs on it.

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor, PgPool};

use annals::Aggregate as _;
use futures::TryStreamExt as _;

use crate::domain::{Cart, CartEvent, ITEM_ADDED, ItemAdded};
use crate::harness::Scratch;

/// The baseline's statements, bound to one scratch schema.
#[derive(Clone)]
pub(crate) struct RawTable {
    select_stream: Arc<str>,
    insert_one: Arc<str>,
    insert_batch: Arc<str>,
    copy_in: Arc<str>,
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
            copy_in: format!(
                "COPY {table} (stream_id, version, event_type, payload) FROM STDIN (FORMAT text)"
            )
            .into(),
            select_all: format!(
                "SELECT position, stream_id, version, event_type, payload FROM {table} ORDER BY position"
            )
            .into(),
        })
    }

    /// Reads a stream's events, decoded, with the stream's version.
    pub(crate) async fn load<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        stream: &str,
    ) -> anyhow::Result<(Vec<CartEvent>, i64)> {
        let rows: Vec<(i64, String, Json<ItemAdded>)> =
            sqlx::query_as(AssertSqlSafe(self.select_stream.clone()))
                .bind(stream)
                .fetch_all(executor)
                .await?;
        let mut version = 0;
        let mut events = Vec::with_capacity(rows.len());
        for (v, event_type, Json(item)) in rows {
            events.push(decode(&event_type, item)?);
            version = v;
        }
        Ok((events, version))
    }

    /// Folds a stream's events into a cart as their rows arrive (no rows or events collected first), and returns
    /// it with the stream's version.
    pub(crate) async fn fold<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        stream: &str,
    ) -> anyhow::Result<(Cart, i64)> {
        let mut rows = sqlx::query_as::<_, (i64, String, Json<ItemAdded>)>(AssertSqlSafe(
            self.select_stream.clone(),
        ))
        .bind(stream)
        .fetch(executor);
        let mut cart = Cart::default();
        let mut version = 0;
        while let Some((v, event_type, Json(item))) = rows.try_next().await? {
            cart.apply(&decode(&event_type, item)?);
            version = v;
        }
        Ok((cart, version))
    }

    /// Inserts a command's events at the versions after `after` in one autocommit statement (one row: a plain
    /// `INSERT … VALUES`; more: the multi-row insert); `Ok(false)` when another writer took a version first.
    pub(crate) async fn insert_all(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        after: i64,
        events: &[CartEvent],
    ) -> anyhow::Result<bool> {
        let inserted = match events {
            [] => return Ok(true),
            [CartEvent::ItemAdded(item)] => sqlx::query(AssertSqlSafe(self.insert_one.clone()))
                .bind(stream)
                .bind(after + 1)
                .bind(ITEM_ADDED)
                .bind(Json(item))
                .execute(&mut *conn)
                .await
                .map(drop),
            many => self.insert_batch(&mut *conn, stream, after, many).await,
        };
        match inserted {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts `events` at the versions after `after`, in one multi-row statement (one implicit transaction).
    pub(crate) async fn insert_batch<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        stream: &str,
        after: i64,
        events: &[CartEvent],
    ) -> Result<(), sqlx::Error> {
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
            .execute(executor)
            .await?;
        Ok(())
    }

    /// Writes `events` at the versions after `after` with one `COPY … FROM STDIN` (text format; one implicit
    /// transaction; the unique (stream, version) key still rejects a conflicting batch as a whole).
    pub(crate) async fn copy_batch(
        &self,
        pool: &PgPool,
        stream: &str,
        after: i64,
        events: &[CartEvent],
    ) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        let mut data = String::with_capacity(events.len() * 160);
        for (offset, CartEvent::ItemAdded(item)) in (1..).zip(events) {
            let json = serde_json::to_string(item)?;
            write!(
                data,
                "{}\t{}\t{ITEM_ADDED}\t",
                copy_text(stream),
                after + offset
            )?;
            data.push_str(&copy_text(&json));
            data.push('\n');
        }
        let mut conn = pool.acquire().await?;
        let mut copy = conn.copy_in_raw(&self.copy_in).await?;
        copy.send(data.into_bytes()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// The statement reading every event in position order.
    pub(crate) fn select_all(&self) -> Arc<str> {
        self.select_all.clone()
    }
}

/// `value` escaped for COPY's text format (backslash, tab, newline and carriage return).
fn copy_text(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '\t', '\n', '\r']) {
        return value.into();
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\t' => escaped.push_str("\\t"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

/// Turns a stored row back into the domain event, by its persisted type.
pub(crate) fn decode(event_type: &str, item: ItemAdded) -> anyhow::Result<CartEvent> {
    anyhow::ensure!(
        event_type == ITEM_ADDED,
        "unknown event type {event_type:?} in the baseline table"
    );
    Ok(CartEvent::ItemAdded(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        assert_eq!(copy_text(r#"{"a":"b"}"#), r#"{"a":"b"}"#);
        assert_eq!(copy_text("a\\b\tc\nd"), "a\\\\b\\tc\\nd");
    }
}
