//! The PostgreSQL backend.
//!
//! Metadata lives in one schema (default `annals_projections`): `slots` (one row per generation of each
//! projection: checkpoint, state, lease) and `dead_letters`. Each generation's read model has its own schema:
//! `<prefix><name>` for the live one, `<prefix><name>__g<generation>` for a rebuild in progress; a swap drops the
//! live schema and renames the rebuilt one, in the transaction that marks it live. Document projections keep
//! their documents in the table `documents` of that schema.
//!
//! Every batch runs in one transaction that first locks its slot row (`FOR UPDATE`, checking this runner still
//! holds the lease and the checkpoint is the one it read), then applies the events, writes the documents and
//! moves the checkpoint. The row lock fences out any other runner; the lease (owner and expiry) says who may
//! take the row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use annals::{EventId, Position, StreamId, async_trait};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};
use tracing::info;
use uuid::Uuid;

use super::owner_session::{OwnerSession, lock_key};
use super::{Acquired, Backend, BatchTx, Commit, Slot, Target};
use crate::documents::DocSource;
use crate::error::{Error, Result};
use crate::sql::{SqlTx, quote_ident};
use crate::status::{ParkedEvent, SlotState};

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub(crate) struct PostgresBackend {
    pool: PgPool,
    /// Quoted metadata schema.
    meta: String,
    /// Unquoted metadata schema (for error messages).
    meta_name: String,
    /// Unquoted prefix of read-model schemas.
    prefix: String,
    /// Each owner's session (in practice one: the owner of the `Projections` this backend belongs to).
    sessions: Arc<Mutex<HashMap<Uuid, Arc<OwnerSession>>>>,
}

fn secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

fn to_i64(p: Position) -> i64 {
    i64::try_from(p.get()).unwrap_or(i64::MAX)
}

/// Reads `column` of a row of `table`, naming both when it is missing or of another type.
fn column<'r, T>(row: &'r PgRow, table: &str, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(|e| Error::StoredValue {
        table: table.to_owned(),
        column,
        reason: e.to_string(),
    })
}

/// A stored non-negative integer (position, generation, count): negative values are corrupt, never 0.
fn non_negative(v: i64, table: &str, column: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::StoredValue {
        table: table.to_owned(),
        column,
        reason: format!("{v} is negative"),
    })
}

fn non_negative_u32(v: i32, table: &str, column: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::StoredValue {
        table: table.to_owned(),
        column,
        reason: format!("{v} is negative"),
    })
}

impl PostgresBackend {
    pub(crate) fn new(pool: PgPool, schema: &str, prefix: &str) -> Self {
        Self {
            pool,
            meta: quote_ident(schema),
            meta_name: schema.to_owned(),
            prefix: prefix.to_owned(),
            sessions: Arc::default(),
        }
    }

    /// `owner`'s session (created on first use; it connects when first ensured).
    fn session(&self, owner: Uuid) -> Arc<OwnerSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(sessions.entry(owner).or_insert_with(|| {
            Arc::new(OwnerSession::new(
                (*self.pool.connect_options()).clone(),
                owner,
            ))
        }))
    }

    fn slots_table(&self) -> String {
        format!("{}.slots", self.meta_name)
    }

    fn dead_letters_table(&self) -> String {
        format!("{}.dead_letters", self.meta_name)
    }

    /// The unquoted schema of a generation.
    fn schema(&self, name: &str, generation: u64, live: bool) -> String {
        if live {
            format!("{}{name}", self.prefix)
        } else {
            format!("{}{name}__g{generation}", self.prefix)
        }
    }

    fn slot_from(&self, row: &PgRow, fresh: bool) -> Result<Slot> {
        let t = &self.slots_table();
        Ok(Slot {
            name: column(row, t, "name")?,
            generation: non_negative(column(row, t, "generation")?, t, "generation")?,
            version: non_negative_u32(column(row, t, "version")?, t, "version")?,
            live: column(row, t, "live")?,
            checkpoint: Position(non_negative(
                column(row, t, "checkpoint")?,
                t,
                "checkpoint",
            )?),
            state: SlotState::parse(column::<&str>(row, t, "state")?),
            error: column(row, t, "error")?,
            throughput: column(row, t, "throughput")?,
            owned: column(row, t, "owned")?,
            fresh,
            fence: 0,
        })
    }

    /// A stored checkpoint, refused when negative.
    fn checkpoint_of(&self, row: &PgRow) -> Result<Position> {
        let t = &self.slots_table();
        Ok(Position(non_negative(
            column(row, t, "checkpoint")?,
            t,
            "checkpoint",
        )?))
    }

    fn columns(&self) -> &'static str {
        "name, generation, version, live, checkpoint, state, error, throughput, \
         (owner IS NOT NULL AND lease_until > clock_timestamp()) AS owned"
    }

    /// Creates a generation's storage inside `tx`.
    async fn create_storage(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        p: Target<'_>,
        schema: &str,
    ) -> Result<()> {
        let q = quote_ident(schema);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {q} CASCADE; CREATE SCHEMA {q};"
        )))
        .execute(&mut **tx)
        .await
        .map_err(Error::db("create read-model schema"))?;
        match p.sql {
            None => {
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE TABLE {q}.documents (collection text COLLATE \"C\" NOT NULL, \
                     key text COLLATE \"C\" NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (collection, key))"
                )))
                .execute(&mut **tx)
                .await
                .map_err(Error::db("create documents table"))?;
            }
            Some(projection) => {
                let mut sql = SqlTx { conn: tx, schema };
                projection.setup(&mut sql).await.map_err(|e| Error::Hook {
                    projection: p.name.to_owned(),
                    hook: "setup",
                    cause: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    async fn acquire(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
        live: bool,
        after_expiry: bool,
    ) -> Result<Acquired> {
        let meta = &self.meta;
        let t = &self.slots_table();
        let mut tx = self.pool.begin().await.map_err(Error::db("begin"))?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT generation, version, owner, lease_until > clock_timestamp() AS unexpired \
             FROM {meta}.slots WHERE name = $1 AND live = $2 FOR UPDATE"
        )))
        .bind(p.name)
        .bind(live)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db("acquire"))?;
        let mut fresh = false;
        let generation = match row {
            Some(row) => {
                let generation: i64 = column(&row, t, "generation")?;
                let version: i32 = column(&row, t, "version")?;
                let current: Option<Uuid> = column(&row, t, "owner")?;
                let unexpired: Option<bool> = column(&row, t, "unexpired")?;
                if let Some(other) = current.filter(|o| *o != owner)
                    && unexpired == Some(true)
                {
                    if after_expiry {
                        return Ok(Acquired::Busy);
                    }
                    // The lease is unexpired: the owner keeps it while its session (and lock) lives.
                    let (class, key) = lock_key(other);
                    let gone: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
                        .bind(class)
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(Error::db("check the owner's session"))?;
                    if !gone {
                        return Ok(Acquired::Busy);
                    }
                    info!(projection = %p.name, previous = %other, live,
                          "the previous owner's session has ended; taking over before its lease expires");
                }
                if !live && i64::from(p.version) != i64::from(version) {
                    // A rebuild of another version: drop it and start a new one.
                    let schema =
                        self.schema(p.name, non_negative(generation, t, "generation")?, false);
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_ident(&schema)
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("drop stale rebuild"))?;
                    sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM {meta}.slots WHERE name = $1 AND generation = $2"
                    )))
                    .bind(p.name)
                    .bind(generation)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("drop stale rebuild"))?;
                    None
                } else {
                    Some(generation)
                }
            }
            None => None,
        };
        let generation = match generation {
            Some(g) => g,
            None => {
                let inserted = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {meta}.slots (name, generation, version, live, state) \
                     SELECT $1, coalesce(max(generation), 0) + 1, $2, $3, $4 FROM {meta}.slots WHERE name = $1 \
                     ON CONFLICT DO NOTHING RETURNING generation"
                )))
                .bind(p.name)
                .bind(i32::try_from(p.version).unwrap_or(i32::MAX))
                .bind(live)
                .bind(if live { "catching_up" } else { "rebuilding" })
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::db("create slot"))?;
                let Some(row) = inserted else {
                    return Ok(Acquired::Busy);
                };
                let generation: i64 = column(&row, t, "generation")?;
                let schema = self.schema(p.name, non_negative(generation, t, "generation")?, live);
                self.create_storage(&mut tx, p, &schema).await?;
                fresh = true;
                generation
            }
        };
        // Hold the owner lock before anyone can see this lease, so a contender never mistakes us for dead.
        self.session(owner).ensure().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {meta}.slots SET owner = $3, lease_until = clock_timestamp() + make_interval(secs => $4), \
             state = CASE WHEN live THEN (CASE WHEN state = 'failed' THEN 'catching_up' ELSE state END) \
             ELSE 'rebuilding' END, error = NULL, updated_at = now() \
             WHERE name = $1 AND generation = $2 RETURNING {}",
            self.columns()
        )))
        .bind(p.name)
        .bind(generation)
        .bind(owner)
        .bind(secs(ttl))
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::db("take lease"))?;
        let slot = self.slot_from(&row, fresh)?;
        tx.commit().await.map_err(Error::db("take lease"))?;
        Ok(Acquired::Slot(slot))
    }
}

/// Whether `e` says a table or schema does not exist (nothing migrated or built yet: reads as empty).
fn missing(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("42P01" | "3F000")))
}

/// `idle_in_transaction_session_timeout` for a batch: the lease TTL, in milliseconds (at least 1 s).
fn idle_timeout(ttl: Duration) -> String {
    let ms = ttl.as_millis().max(1_000);
    format!("{ms}ms")
}

fn i64_gen(g: u64) -> i64 {
    i64::try_from(g).unwrap_or(i64::MAX)
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn migrate(&self) -> Result<()> {
        let meta = &self.meta;
        let mut tx = self.pool.begin().await.map_err(Error::db("migrate"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('annals_projections_migrate'))")
            .execute(&mut *tx)
            .await
            .map_err(Error::db("migrate"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {meta};
             CREATE TABLE IF NOT EXISTS {meta}.slots (
                 name text NOT NULL,
                 generation bigint NOT NULL,
                 version integer NOT NULL,
                 live boolean NOT NULL,
                 checkpoint bigint NOT NULL DEFAULT 0,
                 state text NOT NULL,
                 error text,
                 throughput double precision NOT NULL DEFAULT 0,
                 owner uuid,
                 lease_until timestamptz,
                 updated_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (name, generation)
             );
             CREATE UNIQUE INDEX IF NOT EXISTS slots_one_live ON {meta}.slots (name) WHERE live;
             CREATE UNIQUE INDEX IF NOT EXISTS slots_one_rebuild ON {meta}.slots (name) WHERE NOT live;
             CREATE TABLE IF NOT EXISTS {meta}.dead_letters (
                 name text NOT NULL,
                 generation bigint NOT NULL,
                 position bigint NOT NULL,
                 event_id uuid NOT NULL,
                 stream_id text NOT NULL,
                 event_type text NOT NULL,
                 error text NOT NULL,
                 attempts integer NOT NULL,
                 parked_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (name, generation, position)
             );"
        )))
        .execute(&mut *tx)
        .await
        .map_err(Error::db("migrate"))?;
        tx.commit().await.map_err(Error::db("migrate"))
    }

    async fn acquire_live(&self, p: Target<'_>, owner: Uuid, ttl: Duration) -> Result<Acquired> {
        self.acquire(p, owner, ttl, true, false).await
    }

    async fn acquire_live_after_expiry(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<Acquired> {
        self.acquire(p, owner, ttl, true, true).await
    }

    async fn acquire_building(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<Acquired> {
        self.acquire(p, owner, ttl, false, false).await
    }

    async fn release(&self, slot: &Slot, owner: Uuid) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {}.slots SET owner = NULL, lease_until = NULL, throughput = 0, \
             state = CASE WHEN state IN ('live', 'catching_up') THEN 'stopped' ELSE state END, updated_at = now() \
             WHERE name = $1 AND generation = $2 AND owner = $3",
            self.meta
        )))
        .bind(&slot.name)
        .bind(i64_gen(slot.generation))
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(Error::db("release lease"))?;
        Ok(())
    }

    async fn renew(&self, slot: &Slot, owner: Uuid, ttl: Duration, state: SlotState) -> Result<()> {
        // On the owner's session: a renewal that fails because the session is gone says so at once, and the
        // next acquisition reconnects and locks again.
        let sql = format!(
            "UPDATE {}.slots SET lease_until = clock_timestamp() + make_interval(secs => $4), state = $5, \
             throughput = CASE WHEN $5 = 'live' THEN 0 ELSE throughput END, updated_at = now() \
             WHERE name = $1 AND generation = $2 AND owner = $3",
            self.meta
        );
        let done = self
            .session(owner)
            .with_conn(
                async |conn| {
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(&slot.name)
                        .bind(i64_gen(slot.generation))
                        .bind(owner)
                        .bind(secs(ttl))
                        .bind(state.as_str())
                        .execute(conn)
                        .await
                },
                "renew lease",
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::LostOwnership {
                projection: slot.name.clone(),
            });
        }
        Ok(())
    }

    async fn fail(&self, slot: &Slot, owner: Uuid, error: &str) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {}.slots SET state = 'failed', error = $4, owner = NULL, lease_until = NULL, throughput = 0, \
             updated_at = now() WHERE name = $1 AND generation = $2 AND owner = $3",
            self.meta
        )))
        .bind(&slot.name)
        .bind(i64_gen(slot.generation))
        .bind(owner)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(Error::db("record failure"))?;
        Ok(())
    }

    async fn begin(
        &self,
        slot: &Slot,
        owner: Uuid,
        ttl: Duration,
        expected: Option<Position>,
        swap: bool,
    ) -> Result<Box<dyn BatchTx>> {
        let meta = &self.meta;
        let lost = || Error::LostOwnership {
            projection: slot.name.clone(),
        };
        let mut tx = self.pool.begin().await.map_err(Error::db("begin batch"))?;
        let mut live_checkpoint = None;
        if swap {
            // Lock order: the live generation first, then the rebuild (as a live runner never locks both).
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT checkpoint FROM {meta}.slots WHERE name = $1 AND live FOR UPDATE"
            )))
            .bind(&slot.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Error::db("lock live generation"))?;
            live_checkpoint = Some(match row {
                Some(row) => self.checkpoint_of(&row)?,
                None => Position::START,
            });
        }
        // The fence: only the lease's owner locks the row (until its commit). A batch transaction left idle for
        // longer than the lease (an owner paused mid-batch) is ended by the server, so a hung owner cannot hold
        // the row lock, and with it the takeover, beyond the TTL.
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {meta}.slots SET lease_until = clock_timestamp() + make_interval(secs => $4) \
             WHERE name = $1 AND generation = $2 AND owner = $3 \
             RETURNING checkpoint, live, set_config('idle_in_transaction_session_timeout', $5, true) AS idle"
        )))
        .bind(&slot.name)
        .bind(i64_gen(slot.generation))
        .bind(owner)
        .bind(secs(ttl))
        .bind(idle_timeout(ttl))
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db("lock slot"))?
        .ok_or_else(lost)?;
        let checkpoint = self.checkpoint_of(&row)?;
        let live: bool = column(&row, &self.slots_table(), "live")?;
        if expected.is_some_and(|e| e != checkpoint) {
            return Err(lost());
        }
        Ok(Box::new(PgTx {
            tx,
            meta: self.meta.clone(),
            name: slot.name.clone(),
            generation: slot.generation,
            schema: self.schema(&slot.name, slot.generation, live),
            live_schema: self.schema(&slot.name, slot.generation, true),
            live_checkpoint,
            ttl: secs(ttl),
        }))
    }

    async fn slots(&self) -> Result<Vec<Slot>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {}.slots ORDER BY name, generation",
            self.columns(),
            self.meta
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("read status"))?;
        rows.iter().map(|r| self.slot_from(r, false)).collect()
    }

    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        let meta = &self.meta;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.position, d.event_id, d.stream_id, d.event_type, d.error, d.attempts \
             FROM {meta}.dead_letters d JOIN {meta}.slots s ON s.name = d.name AND s.generation = d.generation \
             WHERE d.name = $1 AND s.live ORDER BY d.position"
        )))
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("list parked events"))?;
        let t = &self.dead_letters_table();
        rows.iter()
            .map(|r| {
                let stream: String = column(r, t, "stream_id")?;
                Ok(ParkedEvent {
                    position: Position(non_negative(column(r, t, "position")?, t, "position")?),
                    event_id: EventId(column(r, t, "event_id")?),
                    stream: StreamId::new(stream).map_err(|e| Error::StoredValue {
                        table: t.clone(),
                        column: "stream_id",
                        reason: e.to_string(),
                    })?,
                    event_type: column(r, t, "event_type")?,
                    error: column(r, t, "error")?,
                    attempts: non_negative_u32(column(r, t, "attempts")?, t, "attempts")?,
                })
            })
            .collect()
    }

    async fn reset(&self, name: &str) -> Result<()> {
        let meta = &self.meta;
        let mut tx = self.pool.begin().await.map_err(Error::db("reset"))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT generation, live FROM {meta}.slots WHERE name = $1 FOR UPDATE"
        )))
        .bind(name)
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::db("reset"))?;
        let t = &self.slots_table();
        for row in rows {
            let generation: i64 = column(&row, t, "generation")?;
            let schema = self.schema(
                name,
                non_negative(generation, t, "generation")?,
                column(&row, t, "live")?,
            );
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&schema)
            )))
            .execute(&mut *tx)
            .await
            .map_err(Error::db("reset"))?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {meta}.slots WHERE name = $1"
        )))
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("reset"))?;
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {meta}.dead_letters WHERE name = $1"
        )))
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("reset"))?;
        tx.commit().await.map_err(Error::db("reset"))
    }

    async fn checkpoint(&self, name: &str) -> Result<Position> {
        let row: std::result::Result<Option<i64>, _> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT checkpoint FROM {}.slots WHERE name = $1 AND live",
            self.meta
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await;
        match row {
            Ok(None) => Ok(Position::START),
            Ok(Some(v)) => Ok(Position(non_negative(
                v,
                &self.slots_table(),
                "checkpoint",
            )?)),
            Err(e) if missing(&e) => Ok(Position::START),
            Err(e) => Err(Error::Database {
                operation: "read checkpoint",
                source: e,
            }),
        }
    }

    async fn get_doc(&self, name: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        let schema = quote_ident(&self.schema(name, 0, true));
        let result = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT doc FROM {schema}.documents WHERE collection = $1 AND key = $2"
        )))
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await;
        match result {
            Ok(v) => Ok(v),
            // Not built yet: reads as empty.
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(Error::Database {
                operation: "read document",
                source: e,
            }),
        }
    }

    async fn list_docs(
        &self,
        name: &str,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>> {
        let schema = quote_ident(&self.schema(name, 0, true));
        let result = sqlx::query_as::<_, (String, Value)>(AssertSqlSafe(format!(
            "SELECT key, doc FROM {schema}.documents WHERE collection = $1 AND starts_with(key, $2) \
             AND ($4::text IS NULL OR key > $4) ORDER BY key LIMIT $3"
        )))
        .bind(collection)
        .bind(prefix)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(after)
        .fetch_all(&self.pool)
        .await;
        match result {
            Ok(v) => Ok(v),
            Err(e) if missing(&e) => Ok(Vec::new()),
            Err(e) => Err(Error::Database {
                operation: "list documents",
                source: e,
            }),
        }
    }

    fn schema_of(&self, name: &str) -> Option<String> {
        Some(self.schema(name, 0, true))
    }
}

struct PgTx {
    tx: Transaction<'static, Postgres>,
    meta: String,
    name: String,
    generation: u64,
    /// Unquoted schema of this generation.
    schema: String,
    /// Unquoted schema of the live generation.
    live_schema: String,
    live_checkpoint: Option<Position>,
    /// Lease time-to-live in seconds, renewed by the commit.
    ttl: f64,
}

#[async_trait]
impl DocSource for PgTx {
    async fn load(&mut self, collection: &str, key: &str) -> Result<Option<Value>> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT doc FROM {}.documents WHERE collection = $1 AND key = $2",
            quote_ident(&self.schema)
        )))
        .bind(collection)
        .bind(key)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(Error::db("read document"))
    }
}

#[async_trait]
impl BatchTx for PgTx {
    fn docs(&mut self) -> &mut dyn DocSource {
        self
    }

    fn sql(&mut self) -> Option<SqlTx<'_>> {
        Some(SqlTx {
            conn: &mut self.tx,
            schema: &self.schema,
        })
    }

    fn live_checkpoint(&self) -> Option<Position> {
        self.live_checkpoint
    }

    async fn commit(mut self: Box<Self>, commit: Commit) -> Result<()> {
        let meta = &self.meta;
        let docs = format!("{}.documents", quote_ident(&self.schema));
        let (mut put_c, mut put_k, mut put_v, mut del_c, mut del_k) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (c, k, v) in commit.writes {
            match v {
                Some(v) => {
                    put_c.push(c);
                    put_k.push(k);
                    put_v.push(v);
                }
                None => {
                    del_c.push(c);
                    del_k.push(k);
                }
            }
        }
        if !put_c.is_empty() {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {docs} (collection, key, doc) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) \
                 ON CONFLICT (collection, key) DO UPDATE SET doc = EXCLUDED.doc"
            )))
            .bind(&put_c)
            .bind(&put_k)
            .bind(&put_v)
            .execute(&mut *self.tx)
            .await
            .map_err(Error::db("write documents"))?;
        }
        if !del_c.is_empty() {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {docs} d USING unnest($1::text[], $2::text[]) AS x(c, k) \
                 WHERE d.collection = x.c AND d.key = x.k"
            )))
            .bind(&del_c)
            .bind(&del_k)
            .execute(&mut *self.tx)
            .await
            .map_err(Error::db("delete documents"))?;
        }
        let generation = i64_gen(self.generation);
        for parked in &commit.park {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {meta}.dead_letters \
                 (name, generation, position, event_id, stream_id, event_type, error, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name, generation, position) \
                 DO UPDATE SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, parked_at = now()"
            )))
            .bind(&self.name)
            .bind(generation)
            .bind(to_i64(parked.position))
            .bind(parked.event_id.0)
            .bind(parked.stream.as_str())
            .bind(&parked.event_type)
            .bind(&parked.error)
            .bind(i32::try_from(parked.attempts).unwrap_or(i32::MAX))
            .execute(&mut *self.tx)
            .await
            .map_err(Error::db("park event"))?;
        }
        if !commit.unpark.is_empty() {
            let positions: Vec<i64> = commit.unpark.iter().map(|p| to_i64(*p)).collect();
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {meta}.dead_letters WHERE name = $1 AND generation = $2 AND position = ANY($3)"
            )))
            .bind(&self.name)
            .bind(generation)
            .bind(&positions)
            .execute(&mut *self.tx)
            .await
            .map_err(Error::db("unpark events"))?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {meta}.slots SET checkpoint = coalesce($3, checkpoint), state = coalesce($4, state), \
             throughput = coalesce($5, throughput), lease_until = clock_timestamp() + make_interval(secs => $6), \
             updated_at = now() WHERE name = $1 AND generation = $2"
        )))
        .bind(&self.name)
        .bind(generation)
        .bind(commit.checkpoint.map(to_i64))
        .bind(commit.state.map(SlotState::as_str))
        .bind(commit.throughput)
        .bind(self.ttl)
        .execute(&mut *self.tx)
        .await
        .map_err(Error::db("move checkpoint"))?;
        if commit.swap {
            let old: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "DELETE FROM {meta}.slots WHERE name = $1 AND live RETURNING generation"
            )))
            .bind(&self.name)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(Error::db("swap"))?;
            if let Some(old) = old {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {meta}.dead_letters WHERE name = $1 AND generation = $2"
                )))
                .bind(&self.name)
                .bind(old)
                .execute(&mut *self.tx)
                .await
                .map_err(Error::db("swap"))?;
            }
            swap_schemas(&mut self.tx, &self.name, &self.live_schema, &self.schema).await?;
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {meta}.slots SET live = true, owner = NULL, lease_until = NULL, state = 'stopped', \
                 throughput = 0 WHERE name = $1 AND generation = $2"
            )))
            .bind(&self.name)
            .bind(generation)
            .execute(&mut *self.tx)
            .await
            .map_err(Error::db("swap"))?;
        }
        self.tx.commit().await.map_err(Error::db("commit batch"))
    }
}

/// Drops the live generation's schema and renames the rebuilt one in its place, inside the swap's transaction.
///
/// Refuses (with [`Error::SwapRefused`] naming them) when objects outside the live schema depend on it (views,
/// foreign keys, ...): `DROP SCHEMA ... CASCADE` would drop them silently. Privileges granted on the live
/// schema and on its tables and views are granted again on the new generation's (tables matched by name).
async fn swap_schemas(
    tx: &mut Transaction<'static, Postgres>,
    projection: &str,
    live: &str,
    rebuilt: &str,
) -> Result<()> {
    let dependents: Vec<String> = sqlx::query_scalar(
        "WITH inside AS ( \
           SELECT 'pg_class'::regclass AS classid, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
            WHERE n.nspname = $1 \
           UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
            WHERE n.nspname = $1 \
           UNION ALL SELECT 'pg_proc'::regclass, f.oid FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace \
            WHERE n.nspname = $1) \
         SELECT DISTINCT pg_describe_object(d.classid, d.objid, 0) \
         FROM pg_depend d JOIN inside i ON d.refclassid = i.classid AND d.refobjid = i.oid \
         CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o \
         WHERE d.deptype IN ('n', 'a') \
           AND coalesce(o.schema, (SELECT n.nspname FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid)) IS DISTINCT FROM $1 \
         ORDER BY 1",
    )
    .bind(live)
    .fetch_all(&mut **tx)
    .await
    .map_err(Error::db("find objects depending on the read model"))?;
    if !dependents.is_empty() {
        return Err(Error::SwapRefused {
            projection: projection.to_owned(),
            dependents,
        });
    }
    // The privileges others were granted, as GRANT statements on the name the rebuilt schema is about to take.
    let grants: Vec<String> = sqlx::query_scalar(
        "WITH grantee AS (SELECT oid, CASE WHEN oid = 0 THEN 'PUBLIC' ELSE quote_ident(rolname) END AS name \
                          FROM (SELECT oid, rolname FROM pg_roles UNION ALL SELECT 0::oid, 'PUBLIC') r) \
         SELECT format('GRANT %s ON SCHEMA %I TO %s%s', a.privilege_type, $1, g.name, \
                       CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
         FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a JOIN grantee g ON g.oid = a.grantee \
         WHERE n.nspname = $1 AND a.grantee <> n.nspowner \
         UNION ALL \
         SELECT format('GRANT %s ON TABLE %I.%I TO %s%s', a.privilege_type, $1, c.relname, g.name, \
                       CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN grantee g ON g.oid = a.grantee \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.grantee <> c.relowner \
           AND EXISTS (SELECT 1 FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace \
                       WHERE n2.nspname = $2 AND c2.relname = c.relname)",
    )
    .bind(live)
    .bind(rebuilt)
    .fetch_all(&mut **tx)
    .await
    .map_err(Error::db("read the read model's privileges"))?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {live} CASCADE; ALTER SCHEMA {new} RENAME TO {live};",
        live = quote_ident(live),
        new = quote_ident(rebuilt),
    )))
    .execute(&mut **tx)
    .await
    .map_err(Error::db("swap"))?;
    for grant in grants {
        sqlx::raw_sql(AssertSqlSafe(grant))
            .execute(&mut **tx)
            .await
            .map_err(Error::db("grant the read model's privileges again"))?;
    }
    Ok(())
}
