//! `load-10k`: load and fold one stream of 10,000 events.
//!
//! Each side writes the stream once (not measured) into its own scratch schema; every run then loads it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{Aggregate, EventStore, Repository, StreamId, StreamVersion};
use sqlx::PgPool;

use crate::domain::{Cart, stream_name};
use crate::harness::{self, Phase, Scratch, Workload};
use crate::raw::RawTable;
use crate::scenarios::fill;
use crate::settings::Settings;

/// Events in the stream by default.
pub(crate) const DEFAULT_EVENTS: usize = 10_000;

/// Fills both sides, warms up, measures and returns the result line.
pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let events = settings.events.unwrap_or(DEFAULT_EVENTS).max(1);
    eprintln!("{name}: one stream of {events} events, loaded and folded");
    let annals_pool = harness::pool(&settings.database_url, 2).await?;
    let raw_pool = harness::pool(&settings.database_url, 2).await?;
    let stream = stream_name(0);
    Scratch::create(&annals_pool, "annals")
        .await?
        .run(async |annals_scratch| {
            Scratch::create(&raw_pool, "raw")
                .await?
                .run(async |raw_scratch| {
                    let store = settings.annals_store(&annals_pool, annals_scratch).await?;
                    let table = RawTable::create(&raw_pool, raw_scratch).await?;
                    fill::annals(store.as_ref(), &[stream.as_str()], events).await?;
                    fill::raw(&table, &raw_pool, &[stream.as_str()], events).await?;
                    fill::settle(&raw_pool, &[annals_scratch.name(), raw_scratch.name()]).await?;
                    let workload = LoadStream {
                        repository: Repository::new(store),
                        stream: StreamId::new(stream.as_str())?,
                        pool: raw_pool.clone(),
                        table,
                        events,
                    };
                    let timings = harness::measure(name, &workload, settings.runs).await?;
                    Ok(harness::latency_line(name, &timings))
                })
                .await
        })
        .await
}

struct LoadStream {
    repository: Repository<Cart, Arc<dyn EventStore>>,
    stream: StreamId,
    pool: PgPool,
    table: RawTable,
    events: usize,
}

impl Workload for LoadStream {
    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let loaded = self.repository.load(&self.stream).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            loaded.version == StreamVersion(self.events as u64)
                && loaded.state.lines == self.events as u64,
            "Annals loaded version {} with {} lines, expected {}",
            loaded.version,
            loaded.state.lines,
            self.events
        );
        Ok(elapsed)
    }

    async fn raw(&self, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (history, version) = self.table.load(&self.pool, self.stream.as_str()).await?;
        let cart = Cart::from_events(&history);
        let elapsed = started.elapsed();
        anyhow::ensure!(
            version == self.events as i64 && cart.lines == self.events as u64,
            "the baseline loaded version {version} with {} lines, expected {}",
            cart.lines,
            self.events
        );
        Ok(elapsed)
    }
}
