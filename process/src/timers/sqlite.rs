//! Timers in the SQLite store's file: table `process_timers` (migration 0003 of `annals-sqlite`).
//!
//! Claims need no `SKIP LOCKED`: SQLite lets one writer in at a time, so a claim (one `UPDATE ... RETURNING`
//! statement) sees every earlier claim, and pollers in several processes claim disjoint timers. Writes go
//! through the store's writer connection (they queue with this process's appends), reads through its readers.

use std::time::Duration;

use annals::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::{Timer, TimerCounts, TimerStore};
use crate::error::{Error, Result};

/// When a timer may next be claimed: its due time, or the end of its claim when that is later. Spelt exactly as
/// in the index `process_timers_wake`, so the poll's statements read the index as a range.
const WAKE: &str = "max(due_at, coalesce(claimed_until, due_at))";

/// The timers of one store file.
#[derive(Debug)]
pub(crate) struct SqliteTimers {
    writer: SqlitePool,
    readers: SqlitePool,
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::Timers {
        operation,
        reason: e.to_string(),
    }
}

fn corrupt(column: &str, reason: impl std::fmt::Display) -> Error {
    Error::Timers {
        operation: "read a timer",
        reason: format!("table process_timers, column {column}: {reason}"),
    }
}

/// A time as stored: microseconds since the Unix epoch.
fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(column: &str, value: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| corrupt(column, format!("{value} is no time")))
}

fn later(d: Duration) -> i64 {
    micros(Utc::now()).saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2))
}

fn column<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    name: &'static str,
) -> Result<T> {
    row.try_get(name).map_err(|e| corrupt(name, e))
}

fn timer_from(process: &str, row: &SqliteRow) -> Result<Timer> {
    let fire_id: String = column(row, "fire_id")?;
    let payload: String = column(row, "payload")?;
    let attempts: i64 = column(row, "attempts")?;
    Ok(Timer {
        process: process.to_owned(),
        instance: column(row, "instance")?,
        key: column(row, "timer_key")?,
        fire_id: fire_id.parse().map_err(|e| corrupt("fire_id", e))?,
        due_at: from_micros("due_at", column(row, "due_at")?)?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", e))?,
        correlation_id: column(row, "correlation_id")?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts", attempts))?,
    })
}

/// Claims up to `?2` due timers of process `?1` (due by `?5`, fewer than `?4` attempts) until `?3`.
fn claim_statement() -> String {
    format!(
        "UPDATE process_timers SET claimed_until = ?3, attempts = attempts + 1 \
         WHERE rowid IN (SELECT rowid FROM process_timers \
                         WHERE process = ?1 AND {WAKE} <= ?5 AND attempts < ?4 ORDER BY {WAKE} LIMIT ?2) \
         RETURNING instance, timer_key, fire_id, due_at, payload, correlation_id, attempts"
    )
}

/// When the next claimable timer of process `?1` (fewer than `?2` attempts) may be claimed.
fn next_due_statement() -> String {
    format!(
        "SELECT {WAKE} FROM process_timers WHERE process = ?1 AND attempts < ?2 ORDER BY {WAKE} LIMIT 1"
    )
}

impl SqliteTimers {
    pub(crate) fn new(writer: SqlitePool, readers: SqlitePool) -> Self {
        Self { writer, readers }
    }
}

#[async_trait]
impl TimerStore for SqliteTimers {
    async fn schedule(&self, timer: &Timer) -> Result<()> {
        sqlx::query(
            "INSERT INTO process_timers (process, instance, timer_key, fire_id, due_at, payload, correlation_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (process, instance, timer_key) DO UPDATE SET fire_id = excluded.fire_id, \
             due_at = excluded.due_at, payload = excluded.payload, correlation_id = excluded.correlation_id, \
             claimed_until = NULL, attempts = 0, last_error = NULL \
             WHERE process_timers.fire_id <> excluded.fire_id",
        )
        .bind(&timer.process)
        .bind(&timer.instance)
        .bind(&timer.key)
        .bind(timer.fire_id.to_string())
        .bind(micros(timer.due_at))
        .bind(timer.payload.to_string())
        .bind(&timer.correlation_id)
        .execute(&self.writer)
        .await
        .map_err(db("schedule a timer"))?;
        Ok(())
    }

    async fn cancel(&self, process: &str, instance: &str, key: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM process_timers WHERE process = ?1 AND instance = ?2 AND timer_key = ?3",
        )
        .bind(process)
        .bind(instance)
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(db("cancel a timer"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn claim_due(
        &self,
        process: &str,
        limit: usize,
        claim_for: Duration,
        max_attempts: u32,
    ) -> Result<Vec<Timer>> {
        let now = micros(Utc::now());
        let rows = sqlx::query(sqlx::AssertSqlSafe(claim_statement()))
            .bind(process)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(later(claim_for))
            .bind(i64::from(max_attempts))
            .bind(now)
            .fetch_all(&self.writer)
            .await
            .map_err(db("claim due timers"))?;
        let mut timers = rows
            .iter()
            .map(|row| timer_from(process, row))
            .collect::<Result<Vec<_>>>()?;
        // RETURNING gives no order: earliest first, as the other stores.
        timers.sort_by_key(|t| t.due_at);
        Ok(timers)
    }

    async fn complete(&self, timer: &Timer) -> Result<()> {
        sqlx::query(
            "DELETE FROM process_timers WHERE process = ?1 AND instance = ?2 AND timer_key = ?3 AND fire_id = ?4",
        )
        .bind(&timer.process)
        .bind(&timer.instance)
        .bind(&timer.key)
        .bind(timer.fire_id.to_string())
        .execute(&self.writer)
        .await
        .map_err(db("complete a timer"))?;
        Ok(())
    }

    async fn release(&self, timer: &Timer, retry_in: Duration, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE process_timers SET claimed_until = ?5, last_error = ?6 \
             WHERE process = ?1 AND instance = ?2 AND timer_key = ?3 AND fire_id = ?4",
        )
        .bind(&timer.process)
        .bind(&timer.instance)
        .bind(&timer.key)
        .bind(timer.fire_id.to_string())
        .bind(later(retry_in))
        .bind(error)
        .execute(&self.writer)
        .await
        .map_err(db("release a timer"))?;
        Ok(())
    }

    async fn next_due(&self, process: &str, max_attempts: u32) -> Result<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(next_due_statement()))
            .bind(process)
            .bind(i64::from(max_attempts))
            .fetch_optional(&self.readers)
            .await
            .map_err(db("find the next due timer"))?;
        due.map(|due| from_micros("due_at", due)).transpose()
    }

    async fn unpark(&self, process: &str, max_attempts: u32) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE process_timers SET attempts = 0, claimed_until = NULL WHERE process = ?1 AND attempts >= ?2",
        )
        .bind(process)
        .bind(i64::from(max_attempts))
        .execute(&self.writer)
        .await
        .map_err(db("unpark timers"))?;
        Ok(done.rows_affected())
    }

    async fn counts(&self, process: &str, max_attempts: u32) -> Result<TimerCounts> {
        let (pending, parked): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE attempts < ?2), count(*) FILTER (WHERE attempts >= ?2) \
             FROM process_timers WHERE process = ?1",
        )
        .bind(process)
        .bind(i64::from(max_attempts))
        .fetch_one(&self.readers)
        .await
        .map_err(db("count timers"))?;
        Ok(TimerCounts {
            pending: u64::try_from(pending).unwrap_or(0),
            parked: u64::try_from(parked).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// SQLite's plan of `statement`, one line per step.
    async fn plan(pool: &SqlitePool, statement: &str) -> String {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {statement}"
        )))
        .bind("jobs")
        .bind(10_i64)
        .bind(0_i64)
        .bind(3_i64)
        .bind(0_i64)
        .fetch_all(pool)
        .await
        .unwrap();
        rows.iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn the_due_poll_reads_the_wake_index_as_a_range() {
        let dir = std::env::temp_dir().join(format!("annals-timers-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = annals_sqlite::SqliteStore::open(dir.join("events.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        for statement in [claim_statement(), next_due_statement()] {
            let plan = plan(store.reader_pool(), &statement).await;
            assert!(
                plan.contains("USING INDEX process_timers_wake (process=? AND <expr><?)")
                    || plan.contains("USING INDEX process_timers_wake (process=?)"),
                "{statement}\n{plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE"),
                "sorted apart from the index:\n{plan}"
            );
        }
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
