//! Parked inputs in the PostgreSQL store's schema: table `process_parked` (migration 0012 of `annals-postgres`).

use annals::{Position, async_trait};
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::{ParkedInput, ParkedStore};
use crate::error::{Error, Result};

/// The statements, with the schema's table name filled in once.
#[derive(Debug)]
pub(crate) struct PostgresParked {
    pool: PgPool,
    park: String,
    first_of: String,
    list: String,
    remove: String,
    count: String,
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::Parked {
        operation,
        reason: e.to_string(),
    }
}

fn position(value: i64) -> Result<Position> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| Error::Parked {
            operation: "read a parked input",
            reason: format!("table process_parked, column position: negative value {value}"),
        })
}

fn stored(position: Position) -> i64 {
    i64::try_from(position.get()).unwrap_or(i64::MAX)
}

fn column<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r sqlx::postgres::PgRow,
    name: &'static str,
) -> Result<T> {
    row.try_get(name).map_err(|e| Error::Parked {
        operation: "read a parked input",
        reason: format!("table process_parked, column {name}: {e}"),
    })
}

impl PostgresParked {
    pub(crate) fn new(pool: PgPool, schema: &str) -> Self {
        let table = format!("\"{}\".process_parked", schema.replace('"', "\"\""));
        Self {
            pool,
            park: format!(
                "INSERT INTO {table} AS t (process, position, instance, stream_id, event_type, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (process, position) DO UPDATE SET reason = excluded.reason, \
                 attempts = t.attempts + 1, parked_at = now()"
            ),
            first_of: format!(
                "SELECT min(position) AS position FROM {table} WHERE process = $1 AND instance = $2"
            ),
            list: format!(
                "SELECT position, instance, stream_id, event_type, reason, attempts, parked_at FROM {table} \
                 WHERE process = $1 ORDER BY position"
            ),
            remove: format!("DELETE FROM {table} WHERE process = $1 AND position = $2"),
            count: format!("SELECT count(*) AS n FROM {table} WHERE process = $1"),
        }
    }
}

#[async_trait]
impl ParkedStore for PostgresParked {
    async fn park(&self, process: &str, input: &ParkedInput) -> Result<()> {
        sqlx::query(AssertSqlSafe(self.park.as_str()))
            .bind(process)
            .bind(stored(input.position))
            .bind(&input.instance)
            .bind(&input.stream)
            .bind(&input.event_type)
            .bind(&input.reason)
            .execute(&self.pool)
            .await
            .map_err(db("park an input"))?;
        Ok(())
    }

    async fn first_of(&self, process: &str, instance: &str) -> Result<Option<Position>> {
        let row = sqlx::query(AssertSqlSafe(self.first_of.as_str()))
            .bind(process)
            .bind(instance)
            .fetch_one(&self.pool)
            .await
            .map_err(db("find a parked input of an instance"))?;
        column::<Option<i64>>(&row, "position")?
            .map(position)
            .transpose()
    }

    async fn list(&self, process: &str) -> Result<Vec<ParkedInput>> {
        let rows = sqlx::query(AssertSqlSafe(self.list.as_str()))
            .bind(process)
            .fetch_all(&self.pool)
            .await
            .map_err(db("list parked inputs"))?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = column(row, "attempts")?;
                Ok(ParkedInput {
                    position: position(column(row, "position")?)?,
                    instance: column(row, "instance")?,
                    stream: column(row, "stream_id")?,
                    event_type: column(row, "event_type")?,
                    reason: column(row, "reason")?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    parked_at: column(row, "parked_at")?,
                })
            })
            .collect()
    }

    async fn remove(&self, process: &str, position: Position) -> Result<()> {
        sqlx::query(AssertSqlSafe(self.remove.as_str()))
            .bind(process)
            .bind(stored(position))
            .execute(&self.pool)
            .await
            .map_err(db("remove a parked input"))?;
        Ok(())
    }

    async fn count(&self, process: &str) -> Result<u64> {
        let row = sqlx::query(AssertSqlSafe(self.count.as_str()))
            .bind(process)
            .fetch_one(&self.pool)
            .await
            .map_err(db("count parked inputs"))?;
        let n: i64 = column(&row, "n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
