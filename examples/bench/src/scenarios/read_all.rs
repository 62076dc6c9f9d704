//! `read-all`: read every event in global order.
//!
//! Annals reads through the store's paged `read_all`; the baseline streams one ordered SELECT. Both materialize
//! each row (ids, versions, type, payload as a JSON value) and check that positions increase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{EventStore, Position};
use anyhow::Context as _;
use futures::TryStreamExt as _;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::stream_name;
use crate::harness::{self, Phase, Workload};
use crate::scenarios::fill;
use crate::settings::Settings;

/// Events in the store by default.
pub(crate) const DEFAULT_EVENTS: usize = 100_000;
/// Events per stream while filling.
const PER_STREAM: usize = 1_000;

/// Fills both sides, warms up, measures and returns the result line.
pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let wanted = settings.events.unwrap_or(DEFAULT_EVENTS).max(1);
    let per_stream = PER_STREAM.min(wanted);
    let events = wanted / per_stream * per_stream;
    let names: Vec<String> = (0..events / per_stream).map(stream_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!(
        "{name}: {events} events over {} streams, pages of {}",
        names.len(),
        settings.page_size
    );
    fill::prefilled(settings, 2, &names, per_stream, async |filled| {
        let workload = ReadAll {
            store: filled.store,
            page_size: settings.page_size,
            pool: filled.raw_pool.pool,
            select_all: filled.table.select_all(),
            events,
        };
        let timings = harness::measure(name, &workload, settings.runs, &settings.sides).await?;
        Ok(harness::rate_line(name, events, &timings))
    })
    .await
}

struct ReadAll {
    store: Arc<dyn EventStore>,
    page_size: usize,
    pool: PgPool,
    select_all: Arc<str>,
    events: usize,
}

/// One row of the baseline table, as the baseline reads it.
#[derive(sqlx::FromRow)]
struct RawRow {
    position: i64,
    #[expect(dead_code, reason = "read to materialize the row as Annals does")]
    stream_id: String,
    #[expect(dead_code, reason = "read to materialize the row as Annals does")]
    version: i64,
    #[expect(dead_code, reason = "read to materialize the row as Annals does")]
    event_type: String,
    #[expect(dead_code, reason = "read to materialize the row as Annals does")]
    payload: Json<serde_json::Value>,
}

impl Workload for ReadAll {
    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut after = Position::START;
        let mut read = 0;
        loop {
            let page = self.store.read_all(after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            anyhow::ensure!(last.position > after, "read_all went backwards");
            after = last.position;
            read += page.len();
            if page.len() < self.page_size {
                break;
            }
        }
        let elapsed = started.elapsed();
        anyhow::ensure!(
            read == self.events,
            "Annals read {read} events, expected {}",
            self.events
        );
        Ok(elapsed)
    }

    async fn raw(&self, _index: usize, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut rows =
            sqlx::query_as::<_, RawRow>(AssertSqlSafe(self.select_all.clone())).fetch(&self.pool);
        let mut after = 0;
        let mut read = 0;
        while let Some(row) = rows.try_next().await.context("baseline read")? {
            anyhow::ensure!(row.position > after, "the baseline went backwards");
            after = row.position;
            read += 1;
        }
        drop(rows);
        let elapsed = started.elapsed();
        anyhow::ensure!(
            read == self.events,
            "the baseline read {read} events, expected {}",
            self.events
        );
        Ok(elapsed)
    }
}
