//! Writing a scenario's starting data (not measured): the same events on both sides, in batches.

use std::sync::Arc;

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use anyhow::Context as _;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::nth_event;
use crate::harness::{self, Pool, Scratch};
use crate::raw::RawTable;
use crate::settings::Settings;

/// Events per append while filling.
const BATCH: usize = 1_000;

/// Both sides of a read scenario, holding the same events, settled and ready to be measured.
pub(crate) struct Filled {
    /// The Annals store, in its own scratch schema.
    pub(crate) store: Arc<dyn EventStore>,
    /// The baseline table, in the other scratch schema.
    pub(crate) table: RawTable,
    /// The Annals side's pool.
    pub(crate) annals_pool: Pool,
    /// The baseline's pool.
    pub(crate) raw_pool: Pool,
    /// The baseline's scratch schema.
    pub(crate) raw_schema: String,
}

/// Opens a pool of `connections` per side, creates both scratch schemas, writes `per_stream` events to each of
/// `streams` on both sides, settles the server, runs `work`, and drops both schemas whatever happened.
pub(crate) async fn prefilled<T>(
    settings: &Settings,
    connections: u32,
    streams: &[&str],
    per_stream: usize,
    work: impl AsyncFnOnce(Filled) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let annals_pool = harness::annals_pool(&settings.database_url, connections).await?;
    let raw_pool = harness::pool(&settings.database_url, connections).await?;
    Scratch::create(&annals_pool.pool, "annals")
        .await?
        .run(async |annals_scratch| {
            Scratch::create(&raw_pool.pool, "raw")
                .await?
                .run(async |raw_scratch| {
                    let store = settings
                        .annals_store(&annals_pool.pool, annals_scratch)
                        .await?;
                    let table = RawTable::create(&raw_pool.pool, raw_scratch).await?;
                    annals(store.as_ref(), streams, per_stream).await?;
                    raw(&table, &raw_pool.pool, streams, per_stream).await?;
                    settle(&raw_pool.pool, &[annals_scratch.name(), raw_scratch.name()]).await?;
                    work(Filled {
                        store,
                        table,
                        annals_pool: annals_pool.clone(),
                        raw_pool: raw_pool.clone(),
                        raw_schema: raw_scratch.name().to_owned(),
                    })
                    .await
                })
                .await
        })
        .await
}

/// Appends `per_stream` events to each of `streams` through the Annals store.
pub(crate) async fn annals(
    store: &dyn EventStore,
    streams: &[&str],
    per_stream: usize,
) -> anyhow::Result<()> {
    let mut n = 0;
    for stream in streams {
        let id = StreamId::new(*stream)?;
        let mut version = 0;
        while version < per_stream {
            let take = BATCH.min(per_stream - version);
            let events = (n..n + take)
                .map(|i| NewEvent::from_event(&nth_event(i)))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = ExpectedVersion::Exact(StreamVersion(version as u64));
            store.append(&id, expected, events).await?;
            version += take;
            n += take;
        }
    }
    Ok(())
}

/// Inserts the same events into the baseline table.
pub(crate) async fn raw(
    table: &RawTable,
    pool: &PgPool,
    streams: &[&str],
    per_stream: usize,
) -> anyhow::Result<()> {
    let mut n = 0;
    for stream in streams {
        let mut version = 0;
        while version < per_stream {
            let take = BATCH.min(per_stream - version);
            let events: Vec<_> = (n..n + take).map(nth_event).collect();
            table
                .insert_batch(pool, stream, i64::try_from(version)?, &events)
                .await?;
            version += take;
            n += take;
        }
    }
    Ok(())
}

/// Lets the server settle after a fill, before anything is timed: `VACUUM (ANALYZE)` every table in `schemas` (so
/// autovacuum does not start on them in the middle of a measured run), then a `CHECKPOINT` when the role may take
/// one (so the periodic checkpoint is not due during the runs either; skipped without the privilege).
async fn settle(pool: &PgPool, schemas: &[&str]) -> anyhow::Result<()> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = ANY($1)",
    )
    .bind(schemas)
    .fetch_all(pool)
    .await?;
    for table in tables {
        sqlx::query(AssertSqlSafe(format!("VACUUM (ANALYZE) {table}")))
            .execute(pool)
            .await
            .with_context(|| format!("cannot vacuum {table}"))?;
    }
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("  (no CHECKPOINT before the runs: {e})");
    }
    Ok(())
}
