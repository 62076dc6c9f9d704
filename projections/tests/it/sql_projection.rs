//! A SQL projection owns its tables: created by `setup` in the generation's schema, written in the runner's
//! transaction (here one batched upsert per batch), read from the stable schema, swapped by a rebuild.

use std::time::Duration;

use annals::{EventStore, RecordedEvent};
use annals_projections::{
    BoxError, ProjectionOptions, Projections, SqlProjection, SqlTx, async_trait,
};
use sqlx::{AssertSqlSafe, PgPool};

use crate::support::*;

/// Per stream: the number of deposits and their sum.
struct Totals;

#[async_trait]
impl SqlProjection for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    fn event_types(&self) -> &[&str] {
        &["Deposited"]
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        let table = tx.table("totals");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (stream text PRIMARY KEY, deposits bigint NOT NULL, total bigint NOT NULL)"
        )))
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    async fn apply(&self, event: &RecordedEvent, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        self.apply_batch(&[event], tx).await.map_err(|(_, e)| e)
    }

    async fn apply_batch(
        &self,
        events: &[&RecordedEvent],
        tx: &mut SqlTx<'_>,
    ) -> Result<(), (usize, BoxError)> {
        // Fold the batch per stream first, then one upsert.
        let mut per_stream = std::collections::BTreeMap::<&str, (i64, i64)>::new();
        for event in events {
            let amount = event
                .payload
                .to_value()
                .ok()
                .and_then(|payload| payload["amount"].as_i64())
                .ok_or((0, "amount missing".into()))?;
            let entry = per_stream.entry(event.stream_id.as_str()).or_default();
            entry.0 += 1;
            entry.1 += amount;
        }
        let streams: Vec<&str> = per_stream.keys().copied().collect();
        let deposits: Vec<i64> = per_stream.values().map(|v| v.0).collect();
        let totals: Vec<i64> = per_stream.values().map(|v| v.1).collect();
        let table = tx.table("totals");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (stream, deposits, total) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (stream) DO UPDATE SET deposits = {table}.deposits + EXCLUDED.deposits, \
             total = {table}.total + EXCLUDED.total"
        )))
        .bind(&streams)
        .bind(&deposits)
        .bind(&totals)
        .execute(tx.conn())
        .await
        .map_err(|e| (0, e.into()))?;
        Ok(())
    }
}

async fn totals(pool: &PgPool, schema: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT stream, deposits, total FROM \"{schema}\".totals ORDER BY stream"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn sql_projection_writes_its_tables_and_survives_a_rebuild(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 12, 25).await;
    let projections = Projections::postgres(store.clone(), pool.clone())
        .with_sql_options(Totals, ProjectionOptions::new().batch_size(40));
    let schema = projections.schema("totals").unwrap().unwrap();
    assert_eq!(schema, "rm_totals");

    let (stop, task) = spawn_run(&projections);
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("totals", head, Duration::from_secs(30))
        .await
        .unwrap();
    let live = totals(&pool, &schema).await;
    assert_eq!(live.len(), 12);
    assert!(
        live.iter()
            .all(|(_, deposits, total)| *deposits == 25 && *total == 325)
    );

    // A rebuild builds a new generation and swaps it in under the same schema name.
    let report = projections.rebuild("totals").await.unwrap();
    assert_eq!(report.events, head.get());
    assert_eq!(totals(&pool, &schema).await, live);
    write_events(&store, "more", 3, 5).await;
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("totals", head, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(totals(&pool, &schema).await.len(), 15);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// A SQL projection whose `setup` is broken.
struct BrokenSetup;

#[async_trait]
impl SqlProjection for BrokenSetup {
    fn name(&self) -> &str {
        "broken"
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE oops (")
            .execute(tx.conn())
            .await?;
        Ok(())
    }

    async fn apply(&self, _: &RecordedEvent, _: &mut SqlTx<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

#[sqlx::test]
async fn failing_setup_is_a_clear_error_and_leaves_nothing_behind(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store, pool.clone()).with_sql(BrokenSetup);
    let err = projections.run(std::future::pending()).await.unwrap_err();
    match &err {
        annals_projections::Error::Hook {
            projection,
            hook,
            cause,
        } => {
            assert_eq!((projection.as_str(), *hook), ("broken", "setup"));
            assert!(cause.contains("syntax"), "{cause}");
        }
        other => panic!("expected Hook, got {other:?}"),
    }
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM annals_projections.slots")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(slots, 0);
    let schema: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = 'rm_broken'")
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert_eq!(schema, None);
}
