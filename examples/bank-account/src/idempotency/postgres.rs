//! Idempotency keys in PostgreSQL: a table in the application's schema, written in the same transaction as the
//! request's events, so a key is never stored without its effect nor an effect without its key.
//!
//! A key is reserved by inserting a pending row (`INSERT .. ON CONFLICT DO NOTHING`, committed at once) with a
//! lease; the owner appends its events and stores the response in one transaction. A racing retry finds the row
//! and waits for the response; a row whose owner died (lease expired, nothing committed) is taken over.

use std::sync::Arc;
use std::time::Duration;

use annals::EventStore;
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::memory::still_in_progress;
use super::{Begun, IdempotencyKeys, Reservation, StoredResponse, WAIT_FOR_OWNER};
use crate::api::error::ApiError;
use annals_postgres::UnitOfWork;

/// How long an owner may work on a request before a retry may take its key over.
const LEASE_SECONDS: i32 = 30;

/// The idempotency-key table of one schema.
#[derive(Clone)]
pub(crate) struct PostgresKeys {
    pool: PgPool,
    table: String,
    store: annals_postgres::PostgresStore,
}

impl PostgresKeys {
    /// Keys in `"{schema}".idempotency_keys`, appending events through `store`.
    pub(crate) fn new(store: annals_postgres::PostgresStore, schema: &str) -> Self {
        Self {
            pool: store.pool().clone(),
            table: format!("\"{schema}\".idempotency_keys"),
            store,
        }
    }

    /// Creates the table when it does not exist.
    pub(crate) async fn migrate(&self) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        // Serialise concurrent starts: `CREATE .. IF NOT EXISTS` alone can race.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bank-account migrations'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                key text PRIMARY KEY,
                request text NOT NULL,
                token uuid NOT NULL,
                locked_until timestamptz NOT NULL,
                status smallint,
                body bytea,
                created_at timestamptz NOT NULL DEFAULT now(),
                completed_at timestamptz
            )",
            self.table
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    async fn try_reserve(&self, key: &str, request: &str) -> sqlx::Result<Attempt> {
        let token = uuid::Uuid::now_v7();
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (key, request, token, locked_until)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (key) DO NOTHING",
            self.table
        )))
        .bind(key)
        .bind(request)
        .bind(token)
        .bind(LEASE_SECONDS)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Attempt::Owner(token));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT request, status, body, locked_until < now() AS expired FROM {} WHERE key = $1",
            self.table
        )))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Released between our insert and our read: try again.
            return Ok(Attempt::Again);
        };
        if row.try_get::<String, _>("request")? != request {
            return Ok(Attempt::Reused);
        }
        if let Some(status) = row.try_get::<Option<i16>, _>("status")? {
            let body: Vec<u8> = row
                .try_get::<Option<Vec<u8>>, _>("body")?
                .unwrap_or_default();
            let status = u16::try_from(status).unwrap_or(500);
            return Ok(Attempt::Replay(StoredResponse { status, body }));
        }
        if row.try_get::<bool, _>("expired")? {
            let taken = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {} SET token = $2, locked_until = now() + make_interval(secs => $3)
                 WHERE key = $1 AND status IS NULL AND locked_until < now()",
                self.table
            )))
            .bind(key)
            .bind(token)
            .bind(LEASE_SECONDS)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if taken == 1 {
                tracing::warn!(
                    key,
                    "took over an idempotency key whose owner never finished"
                );
                return Ok(Attempt::Owner(token));
            }
        }
        Ok(Attempt::Wait)
    }
}

enum Attempt {
    Owner(uuid::Uuid),
    Replay(StoredResponse),
    Reused,
    Wait,
    Again,
}

#[annals::async_trait]
impl IdempotencyKeys for PostgresKeys {
    async fn begin(&self, key: &str, request: &str) -> Result<Begun, ApiError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OWNER;
        let mut pause = Duration::from_millis(2);
        loop {
            match self
                .try_reserve(key, request)
                .await
                .map_err(ApiError::internal)?
            {
                Attempt::Owner(token) => {
                    return Ok(Begun::Owner(Box::new(PostgresReservation {
                        keys: self.clone(),
                        key: key.to_owned(),
                        token,
                        store: Arc::new(self.store.unit_of_work()),
                        finished: false,
                    })));
                }
                Attempt::Replay(response) => return Ok(Begun::Replay(response)),
                Attempt::Reused => return Ok(Begun::Reused),
                Attempt::Again => continue,
                Attempt::Wait => {
                    // The owner holds no lock a waiter could block on, so waiting is a short poll of the row.
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(still_in_progress());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

struct PostgresReservation {
    keys: PostgresKeys,
    key: String,
    token: uuid::Uuid,
    store: Arc<UnitOfWork>,
    finished: bool,
}

#[annals::async_trait]
impl Reservation for PostgresReservation {
    fn store(&self) -> Option<Arc<dyn EventStore>> {
        Some(self.store.clone())
    }

    async fn complete(mut self: Box<Self>, response: &StoredResponse) -> Result<(), ApiError> {
        self.finished = true;
        let sql = format!(
            "UPDATE {} SET status = $3, body = $4, completed_at = now()
             WHERE key = $1 AND token = $2 AND status IS NULL",
            self.keys.table
        );
        let status = i16::try_from(response.status).unwrap_or(i16::MAX);
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.key)
            .bind(self.token)
            .bind(status)
            .bind(&response.body);
        let updated = {
            let mut transaction = self.store.transaction().await.map_err(ApiError::internal)?;
            query
                .execute(&mut **transaction)
                .await
                .map_err(ApiError::internal)?
                .rows_affected()
        };
        if updated == 1 {
            self.store.commit().await.map_err(ApiError::internal)?;
        } else {
            self.store.rollback().await;
        }
        if updated == 1 {
            Ok(())
        } else {
            // Our lease expired and another request took the key over; our events (if any) were rolled back.
            Err(still_in_progress())
        }
    }

    async fn release(mut self: Box<Self>) {
        self.finished = true;
        self.store.rollback().await;
        if let Err(error) = release(&self.keys, &self.key, self.token).await {
            tracing::warn!(%error, key = self.key, "could not release an idempotency key; it frees itself when its lease ends");
        }
    }
}

async fn release(keys: &PostgresKeys, key: &str, token: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {} WHERE key = $1 AND token = $2 AND status IS NULL",
        keys.table
    )))
    .bind(key)
    .bind(token)
    .execute(&keys.pool)
    .await?;
    Ok(())
}

impl Drop for PostgresReservation {
    fn drop(&mut self) {
        if !self.finished {
            // The request was abandoned (a panic): free the key now rather than when its lease ends.
            let (keys, key, token) = (self.keys.clone(), self.key.clone(), self.token);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { drop(release(&keys, &key, token).await) });
            }
        }
    }
}
