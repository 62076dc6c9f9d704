//! Parked inputs in the SQLite store's file: table `process_parked` (migration 0003 of `annals-sqlite`).

use annals::{Position, async_trait};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::{ParkedInput, ParkedStore};
use crate::error::{Error, Result};

/// The parked inputs of one store file: written through its writer, read through its readers.
#[derive(Debug)]
pub(crate) struct SqliteParked {
    writer: SqlitePool,
    readers: SqlitePool,
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::Parked {
        operation,
        reason: e.to_string(),
    }
}

fn corrupt(column: &str, reason: impl std::fmt::Display) -> Error {
    Error::Parked {
        operation: "read a parked input",
        reason: format!("table process_parked, column {column}: {reason}"),
    }
}

fn position(value: i64) -> Result<Position> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| corrupt("position", format!("negative value {value}")))
}

fn stored(position: Position) -> i64 {
    i64::try_from(position.get()).unwrap_or(i64::MAX)
}

fn column<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    name: &'static str,
) -> Result<T> {
    row.try_get(name).map_err(|e| corrupt(name, e))
}

fn input_from(row: &SqliteRow) -> Result<ParkedInput> {
    let attempts: i64 = column(row, "attempts")?;
    let parked_at: i64 = column(row, "parked_at")?;
    Ok(ParkedInput {
        position: position(column(row, "position")?)?,
        instance: column(row, "instance")?,
        stream: column(row, "stream_id")?,
        event_type: column(row, "event_type")?,
        reason: column(row, "reason")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        parked_at: DateTime::from_timestamp_micros(parked_at)
            .ok_or_else(|| corrupt("parked_at", format!("{parked_at} is no time")))?,
    })
}

impl SqliteParked {
    pub(crate) fn new(writer: SqlitePool, readers: SqlitePool) -> Self {
        Self { writer, readers }
    }
}

#[async_trait]
impl ParkedStore for SqliteParked {
    async fn park(&self, process: &str, input: &ParkedInput) -> Result<()> {
        sqlx::query(
            "INSERT INTO process_parked (process, position, instance, stream_id, event_type, reason, parked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (process, position) DO UPDATE SET reason = excluded.reason, \
             attempts = process_parked.attempts + 1, parked_at = excluded.parked_at",
        )
        .bind(process)
        .bind(stored(input.position))
        .bind(&input.instance)
        .bind(&input.stream)
        .bind(&input.event_type)
        .bind(&input.reason)
        .bind(Utc::now().timestamp_micros())
        .execute(&self.writer)
        .await
        .map_err(db("park an input"))?;
        Ok(())
    }

    async fn first_of(&self, process: &str, instance: &str) -> Result<Option<Position>> {
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT min(position) FROM process_parked WHERE process = ?1 AND instance = ?2",
        )
        .bind(process)
        .bind(instance)
        .fetch_one(&self.readers)
        .await
        .map_err(db("find a parked input of an instance"))?;
        first.map(position).transpose()
    }

    async fn list(&self, process: &str) -> Result<Vec<ParkedInput>> {
        let rows = sqlx::query(
            "SELECT position, instance, stream_id, event_type, reason, attempts, parked_at FROM process_parked \
             WHERE process = ?1 ORDER BY position",
        )
        .bind(process)
        .fetch_all(&self.readers)
        .await
        .map_err(db("list parked inputs"))?;
        rows.iter().map(input_from).collect()
    }

    async fn remove(&self, process: &str, position: Position) -> Result<()> {
        sqlx::query("DELETE FROM process_parked WHERE process = ?1 AND position = ?2")
            .bind(process)
            .bind(stored(position))
            .execute(&self.writer)
            .await
            .map_err(db("remove a parked input"))?;
        Ok(())
    }

    async fn count(&self, process: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM process_parked WHERE process = ?1")
            .bind(process)
            .fetch_one(&self.readers)
            .await
            .map_err(db("count parked inputs"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
