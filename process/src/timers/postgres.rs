//! Timers in the PostgreSQL store's schema: table `process_timers` (migration 0006 of `annals-postgres`).

use std::time::Duration;

use annals::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::{Timer, TimerCounts, TimerStore};
use crate::error::{Error, Result};

/// When a timer may next be claimed: its due time, or the end of its claim when that is later. Indexed with the
/// process (`process_timers_wake`, migration 0012): the poll's claim and next-due statements read it as a range.
const WAKE: &str = "greatest(due_at, coalesce(claimed_until, due_at))";

/// The statements, with the schema's table name filled in once.
#[derive(Debug)]
pub(crate) struct PostgresTimers {
    pool: PgPool,
    schedule: String,
    cancel: String,
    claim: String,
    complete: String,
    release: String,
    next_due: String,
    unpark: String,
    counts: String,
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::Timers {
        operation,
        reason: e.to_string(),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn column<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r sqlx::postgres::PgRow,
    name: &'static str,
) -> Result<T> {
    row.try_get(name).map_err(|e| Error::Timers {
        operation: "read a timer",
        reason: format!("table process_timers, column {name}: {e}"),
    })
}

impl PostgresTimers {
    pub(crate) fn new(pool: PgPool, schema: &str) -> Self {
        let table = format!("\"{}\".process_timers", schema.replace('"', "\"\""));
        Self {
            pool,
            schedule: format!(
                "INSERT INTO {table} AS t (process, instance, timer_key, fire_id, due_at, payload, correlation_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (process, instance, timer_key) DO UPDATE SET fire_id = excluded.fire_id, \
                 due_at = excluded.due_at, payload = excluded.payload, correlation_id = excluded.correlation_id, \
                 claimed_until = NULL, attempts = 0, last_error = NULL \
                 WHERE t.fire_id <> excluded.fire_id"
            ),
            cancel: format!(
                "DELETE FROM {table} WHERE process = $1 AND instance = $2 AND timer_key = $3"
            ),
            claim: format!(
                "UPDATE {table} AS t SET claimed_until = now() + make_interval(secs => $3::bigint / 1000.0), \
                 attempts = t.attempts + 1 \
                 FROM (SELECT process, instance, timer_key FROM {table} \
                       WHERE process = $1 AND {WAKE} <= now() AND attempts < $4 \
                       ORDER BY {WAKE} LIMIT $2 FOR UPDATE SKIP LOCKED) AS due \
                 WHERE t.process = due.process AND t.instance = due.instance AND t.timer_key = due.timer_key \
                 RETURNING t.instance, t.timer_key, t.fire_id, t.due_at, t.payload, t.correlation_id, t.attempts"
            ),
            complete: format!(
                "DELETE FROM {table} WHERE process = $1 AND instance = $2 AND timer_key = $3 AND fire_id = $4"
            ),
            release: format!(
                "UPDATE {table} SET claimed_until = now() + make_interval(secs => $5::bigint / 1000.0), \
                 last_error = $6 WHERE process = $1 AND instance = $2 AND timer_key = $3 AND fire_id = $4"
            ),
            next_due: format!(
                "SELECT {WAKE} AS due FROM {table} WHERE process = $1 AND attempts < $2 \
                 ORDER BY {WAKE} LIMIT 1"
            ),
            unpark: format!(
                "UPDATE {table} SET attempts = 0, claimed_until = NULL WHERE process = $1 AND attempts >= $2"
            ),
            counts: format!(
                "SELECT count(*) FILTER (WHERE attempts < $2) AS pending, \
                        count(*) FILTER (WHERE attempts >= $2) AS parked \
                 FROM {table} WHERE process = $1"
            ),
        }
    }
}

#[async_trait]
impl TimerStore for PostgresTimers {
    async fn schedule(&self, timer: &Timer) -> Result<()> {
        sqlx::query(AssertSqlSafe(self.schedule.as_str()))
            .bind(&timer.process)
            .bind(&timer.instance)
            .bind(&timer.key)
            .bind(timer.fire_id)
            .bind(timer.due_at)
            .bind(&timer.payload)
            .bind(&timer.correlation_id)
            .execute(&self.pool)
            .await
            .map_err(db("schedule a timer"))?;
        Ok(())
    }

    async fn cancel(&self, process: &str, instance: &str, key: &str) -> Result<bool> {
        let done = sqlx::query(AssertSqlSafe(self.cancel.as_str()))
            .bind(process)
            .bind(instance)
            .bind(key)
            .execute(&self.pool)
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
        let rows = sqlx::query(AssertSqlSafe(self.claim.as_str()))
            .bind(process)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(millis(claim_for))
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db("claim due timers"))?;
        let mut timers = Vec::with_capacity(rows.len());
        for row in &rows {
            let attempts: i32 = column(row, "attempts")?;
            timers.push(Timer {
                process: process.to_owned(),
                instance: column(row, "instance")?,
                key: column(row, "timer_key")?,
                fire_id: column(row, "fire_id")?,
                due_at: column(row, "due_at")?,
                payload: column(row, "payload")?,
                correlation_id: column(row, "correlation_id")?,
                attempts: u32::try_from(attempts).map_err(|_| Error::Timers {
                    operation: "read a timer",
                    reason: format!(
                        "table process_timers, column attempts: negative value {attempts}"
                    ),
                })?,
            });
        }
        Ok(timers)
    }

    async fn complete(&self, timer: &Timer) -> Result<()> {
        sqlx::query(AssertSqlSafe(self.complete.as_str()))
            .bind(&timer.process)
            .bind(&timer.instance)
            .bind(&timer.key)
            .bind(timer.fire_id)
            .execute(&self.pool)
            .await
            .map_err(db("complete a timer"))?;
        Ok(())
    }

    async fn release(&self, timer: &Timer, retry_in: Duration, error: &str) -> Result<()> {
        sqlx::query(AssertSqlSafe(self.release.as_str()))
            .bind(&timer.process)
            .bind(&timer.instance)
            .bind(&timer.key)
            .bind(timer.fire_id)
            .bind(millis(retry_in))
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(db("release a timer"))?;
        Ok(())
    }

    async fn next_due(&self, process: &str, max_attempts: u32) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(AssertSqlSafe(self.next_due.as_str()))
            .bind(process)
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("find the next due timer"))?;
        row.map(|row| column(&row, "due")).transpose()
    }

    async fn unpark(&self, process: &str, max_attempts: u32) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(self.unpark.as_str()))
            .bind(process)
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .execute(&self.pool)
            .await
            .map_err(db("unpark timers"))?;
        Ok(done.rows_affected())
    }

    async fn counts(&self, process: &str, max_attempts: u32) -> Result<TimerCounts> {
        let row = sqlx::query(AssertSqlSafe(self.counts.as_str()))
            .bind(process)
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(db("count timers"))?;
        let count = |name: &'static str| -> Result<u64> {
            let n: i64 = column(&row, name)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(TimerCounts {
            pending: count("pending")?,
            parked: count("parked")?,
        })
    }
}
