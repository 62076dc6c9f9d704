//! `rebuild-memory` and `rebuild-postgres`: rebuild a projection of per-cart balances (the sum of quantity ×
//! unit price) from 100,000 events.
//!
//! - `rebuild-memory`: Annals rebuilds a document projection on the in-memory projection backend, reading the
//!   events from the store page by page. Baseline: one ordered SELECT folded into a `HashMap`.
//! - `rebuild-postgres`: Annals rebuilds a SQL projection on the PostgreSQL backend (blue/green, checkpoint in the
//!   batch's transaction) whose batch handler does one upsert per batch. Baseline: plain sqlx reading pages of the
//!   same size and doing the same upsert in one transaction per page.
//!
//! The events are written once per side (not measured); every run rebuilds from scratch into fresh schemas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::{EventStore, RecordedEvent};
use annals_projections::{
    BoxError, Documents, Projection, ProjectionOptions, Projections, RebuildOutcome, SqlProjection,
    SqlTx, async_trait,
};
use anyhow::Context as _;
use futures::TryStreamExt as _;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::{CartEvent, ITEM_ADDED, ItemAdded, stream_name};
use crate::harness::{self, Phase, Workload};
use crate::raw;
use crate::scenarios::fill;
use crate::settings::Settings;

/// Events in the store by default.
const DEFAULT_EVENTS: usize = 100_000;
/// Events per cart.
const PER_STREAM: usize = 100;
/// Events per batch on both sides (the projection's batch size and the baseline's page).
const BATCH: usize = 1_000;
/// The projection's name on the Annals side.
const NAME: &str = "balances";

/// Where the rebuilt read model lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Memory,
    Postgres,
}

/// Fills both sides, warms up, measures and returns the result line.
pub(crate) async fn run(settings: &Settings, name: &str, target: Target) -> anyhow::Result<String> {
    let wanted = settings.events.unwrap_or(DEFAULT_EVENTS).max(1);
    let per_stream = PER_STREAM.min(wanted);
    let events = wanted / per_stream * per_stream;
    let names: Vec<String> = (0..events / per_stream).map(stream_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!(
        "{name}: {events} events over {} carts, batches of {BATCH}",
        names.len()
    );
    fill::prefilled(settings, 4, &names, per_stream, async |filled| {
        measure_filled(
            settings,
            name,
            target,
            &filled,
            events,
            per_stream,
            settings.runs,
        )
        .await
    })
    .await
}

/// Measures a rebuild over `filled` (`events` events, `per_stream` per cart) and returns the result line.
pub(crate) async fn measure_filled(
    settings: &Settings,
    name: &str,
    target: Target,
    filled: &fill::Filled,
    events: usize,
    per_stream: usize,
    runs: usize,
) -> anyhow::Result<String> {
    let workload = Rebuild {
        target,
        store: filled.store.clone(),
        annals_pool: filled.annals_pool.pool.clone(),
        raw_pool: filled.raw_pool.pool.clone(),
        raw_schema: filled.raw_schema.clone(),
        expected: expected_balances(events, per_stream),
    };
    let timings = harness::measure(name, &workload, runs, &settings.sides).await?;
    Ok(harness::rate_line(name, events, &timings))
}

/// What one event adds to its cart's balance.
fn amount(item: &ItemAdded) -> i64 {
    i64::from(item.quantity) * i64::try_from(item.unit_price_cents).unwrap_or(i64::MAX)
}

/// The balance of cart 0, the one both sides' results are checked against.
fn expected_balances(events: usize, per_stream: usize) -> i64 {
    (0..per_stream.min(events))
        .map(|n| {
            let CartEvent::ItemAdded(item) = crate::domain::nth_event(n);
            amount(&item)
        })
        .sum()
}

struct Rebuild {
    target: Target,
    store: Arc<dyn EventStore>,
    annals_pool: PgPool,
    raw_pool: PgPool,
    raw_schema: String,
    expected: i64,
}

/// The Annals document projection: one JSON document per cart holding its balance.
struct DocBalances;

#[async_trait]
impl Projection for DocBalances {
    fn name(&self) -> &str {
        NAME
    }

    fn event_types(&self) -> &[&str] {
        &[ITEM_ADDED]
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let CartEvent::ItemAdded(item) = event.decode::<CartEvent>()?;
        let balance = docs
            .get::<i64>("carts", &event.stream_id)
            .await?
            .unwrap_or(0);
        docs.put("carts", &event.stream_id, &(balance + amount(&item)))?;
        Ok(())
    }
}

/// The Annals SQL projection: a `balances` table, one upsert per batch.
struct SqlBalances;

#[async_trait]
impl SqlProjection for SqlBalances {
    fn name(&self) -> &str {
        NAME
    }

    fn event_types(&self) -> &[&str] {
        &[ITEM_ADDED]
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        let table = tx.table("balances");
        sqlx::query(AssertSqlSafe(create_balances(&table)))
            .execute(&mut *tx.conn())
            .await?;
        Ok(())
    }

    async fn apply(&self, event: &RecordedEvent, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        self.apply_batch(&[event], tx)
            .await
            .map_err(|(_, error)| error)
    }

    async fn apply_batch(
        &self,
        events: &[&RecordedEvent],
        tx: &mut SqlTx<'_>,
    ) -> Result<(), (usize, BoxError)> {
        let mut sums = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            let CartEvent::ItemAdded(item) =
                event.decode::<CartEvent>().map_err(|e| (index, e.into()))?;
            *sums.entry(event.stream_id.as_str()).or_insert(0) += amount(&item);
        }
        let table = tx.table("balances");
        upsert(&mut *tx.conn(), &table, sums)
            .await
            .map_err(|e| (0, e.into()))
    }
}

fn create_balances(table: &str) -> String {
    format!("CREATE TABLE {table} (stream_id text PRIMARY KEY, balance bigint NOT NULL)")
}

/// Adds each batch's sums to the balances in one statement (the same statement on both sides).
async fn upsert(
    conn: &mut sqlx::PgConnection,
    table: &str,
    sums: BTreeMap<&str, i64>,
) -> Result<(), sqlx::Error> {
    let (streams, amounts): (Vec<&str>, Vec<i64>) = sums.into_iter().unzip();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} AS b (stream_id, balance)
         SELECT s, a FROM UNNEST($1::text[], $2::bigint[]) AS u(s, a)
         ON CONFLICT (stream_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance"
    )))
    .bind(streams)
    .bind(amounts)
    .execute(conn)
    .await?;
    Ok(())
}

static RUN_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Fresh names for one Annals rebuild on PostgreSQL: the projections' metadata schema and read-model prefix.
fn projection_names() -> (String, String) {
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    (format!("abp{pid}_{seq}"), format!("abr{pid}_{seq}_"))
}

/// Drops the metadata schema and every read-model schema of one rebuild.
async fn drop_projection_schemas(pool: &PgPool, schema: &str, prefix: &str) -> anyhow::Result<()> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $2)",
    )
    .bind(schema)
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    for schema in schemas {
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(pool)
            .await
            .with_context(|| format!("cannot drop the projection schema {schema}"))?;
    }
    Ok(())
}

/// Cart 0's balance in the balances table `table` (a quoted, qualified name).
async fn stored_balance(pool: &PgPool, table: &str) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT balance FROM {table} WHERE stream_id = $1"
    )))
    .bind(stream_name(0))
    .fetch_optional(pool)
    .await?)
}

impl Rebuild {
    /// Fails unless `side` rebuilt cart 0 to the expected balance.
    fn check(&self, side: &str, balance: Option<i64>) -> anyhow::Result<()> {
        anyhow::ensure!(
            balance == Some(self.expected),
            "{side} rebuilt cart 0 to balance {balance:?}, expected {}",
            self.expected
        );
        Ok(())
    }

    async fn annals_memory(&self) -> anyhow::Result<Duration> {
        let projections = Projections::memory(self.store.clone())
            .with_options(DocBalances, ProjectionOptions::new().batch_size(BATCH));
        let started = Instant::now();
        let report = projections.rebuild(NAME).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            report.outcome == RebuildOutcome::Completed,
            "the rebuild did not complete"
        );
        let balance = projections
            .documents(NAME)?
            .get::<i64>("carts", stream_name(0))
            .await?;
        self.check("Annals", balance)?;
        Ok(elapsed)
    }

    async fn annals_postgres(&self) -> anyhow::Result<Duration> {
        let (schema, prefix) = projection_names();
        let result = async {
            let projections = Projections::postgres_in(
                self.store.clone(),
                self.annals_pool.clone(),
                &schema,
                &prefix,
            )?
            .with_sql_options(SqlBalances, ProjectionOptions::new().batch_size(BATCH));
            projections.migrate().await?;
            let started = Instant::now();
            let report = projections.rebuild(NAME).await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(
                report.outcome == RebuildOutcome::Completed,
                "the rebuild did not complete"
            );
            let live = projections
                .schema(NAME)?
                .context("the rebuilt projection has no schema")?;
            let balance =
                stored_balance(&self.annals_pool, &format!("\"{live}\".balances")).await?;
            self.check("Annals", balance)?;
            Ok(elapsed)
        }
        .await;
        let dropped = drop_projection_schemas(&self.annals_pool, &schema, &prefix).await;
        let elapsed = result?;
        dropped?;
        Ok(elapsed)
    }

    async fn raw_memory(&self) -> anyhow::Result<Duration> {
        let select = format!(
            "SELECT stream_id, event_type, payload FROM \"{}\".events ORDER BY position",
            self.raw_schema
        );
        let started = Instant::now();
        let mut rows =
            sqlx::query_as::<_, (String, String, Json<ItemAdded>)>(AssertSqlSafe(select.as_str()))
                .fetch(&self.raw_pool);
        let mut balances: HashMap<String, i64> = HashMap::new();
        while let Some((stream, event_type, Json(item))) = rows.try_next().await? {
            let CartEvent::ItemAdded(item) = raw::decode(&event_type, item)?;
            *balances.entry(stream).or_insert(0) += amount(&item);
        }
        drop(rows);
        let elapsed = started.elapsed();
        let balance = balances.get(&stream_name(0)).copied();
        self.check("the baseline", balance)?;
        Ok(elapsed)
    }

    async fn raw_postgres(&self) -> anyhow::Result<Duration> {
        let table = format!("\"{}\".balances", self.raw_schema);
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&self.raw_pool)
            .await?;
        sqlx::query(AssertSqlSafe(create_balances(&table)))
            .execute(&self.raw_pool)
            .await?;
        let page = format!(
            "SELECT position, stream_id, event_type, payload FROM \"{}\".events \
             WHERE position > $1 ORDER BY position LIMIT $2",
            self.raw_schema
        );
        let started = Instant::now();
        let mut after = 0i64;
        loop {
            let rows: Vec<(i64, String, String, Json<ItemAdded>)> =
                sqlx::query_as(AssertSqlSafe(page.as_str()))
                    .bind(after)
                    .bind(i64::try_from(BATCH)?)
                    .fetch_all(&self.raw_pool)
                    .await?;
            let Some((last, ..)) = rows.last() else { break };
            after = *last;
            let full = rows.len() == BATCH;
            let mut sums = BTreeMap::new();
            let mut decoded = Vec::with_capacity(rows.len());
            for (_, stream, event_type, Json(item)) in rows {
                decoded.push((stream, raw::decode(&event_type, item)?));
            }
            for (stream, CartEvent::ItemAdded(item)) in &decoded {
                *sums.entry(stream.as_str()).or_insert(0) += amount(item);
            }
            let mut tx = self.raw_pool.begin().await?;
            upsert(&mut tx, &table, sums).await?;
            tx.commit().await?;
            if !full {
                break;
            }
        }
        let elapsed = started.elapsed();
        let balance = stored_balance(&self.raw_pool, &table).await?;
        self.check("the baseline", balance)?;
        Ok(elapsed)
    }
}

impl Workload for Rebuild {
    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        match self.target {
            Target::Memory => self.annals_memory().await,
            Target::Postgres => self.annals_postgres().await,
        }
    }

    async fn raw(&self, _index: usize, _phase: Phase) -> anyhow::Result<Duration> {
        match self.target {
            Target::Memory => self.raw_memory().await,
            Target::Postgres => self.raw_postgres().await,
        }
    }
}
