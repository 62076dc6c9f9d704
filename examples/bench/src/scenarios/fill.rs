//! Writing a scenario's starting data (not measured): the same events on both sides, in batches.

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use anyhow::Context as _;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::nth_event;
use crate::raw::RawTable;

/// Events per append while filling.
const BATCH: usize = 1_000;

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
pub(crate) async fn settle(pool: &PgPool, schemas: &[&str]) -> anyhow::Result<()> {
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
