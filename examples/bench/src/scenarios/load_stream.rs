//! `load-10k`: load and fold one stream of 10,000 events.
//!
//! Each side writes the stream once (not measured) into its own scratch schema; every run then loads it again.
//! Two baselines, the faster of which the ratio is taken against: `fetch-all` collects the rows, then decodes and
//! folds them; `streamed` decodes and folds each row as it arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{Aggregate, EventStore, Repository, StreamId, StreamVersion};
use sqlx::PgPool;

use crate::domain::{Cart, stream_name};
use crate::harness::{self, Phase, Workload};
use crate::raw::RawTable;
use crate::scenarios::fill;
use crate::settings::Settings;

/// Events in the stream by default.
pub(crate) const DEFAULT_EVENTS: usize = 10_000;

/// Loads per measured run of `load-10k`: one load takes 10–25 ms here, short enough for a single stall of the
/// virtual machine to decide a run, so each run times ten in a row and reports the time of one.
const LOADS_PER_RUN: usize = 10;

/// Fills both sides, warms up, measures and returns the result line.
pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let events = settings.events.unwrap_or(DEFAULT_EVENTS).max(1);
    run_sized(settings, name, events, LOADS_PER_RUN).await
}

/// Fills one stream of `events` events per side and measures loading it; each run loads it `loads` times and
/// reports the time of one load.
pub(crate) async fn run_sized(
    settings: &Settings,
    name: &str,
    events: usize,
    loads: usize,
) -> anyhow::Result<String> {
    eprintln!("{name}: one stream of {events} events, loaded and folded ({loads} loads per run)");
    let loads = loads.max(1);
    let stream = stream_name(0);
    fill::prefilled(settings, 2, &[stream.as_str()], events, async |filled| {
        let workload = LoadStream {
            repository: Repository::new(filled.store),
            stream: StreamId::new(stream.as_str())?,
            pool: filled.raw_pool.pool,
            table: filled.table,
            events,
            loads,
        };
        let timings = harness::measure(name, &workload, settings.runs, &settings.sides).await?;
        Ok(harness::latency_line(name, &timings))
    })
    .await
}

struct LoadStream {
    repository: Repository<Cart, Arc<dyn EventStore>>,
    stream: StreamId,
    pool: PgPool,
    table: RawTable,
    events: usize,
    loads: usize,
}

impl Workload for LoadStream {
    fn baselines(&self) -> &'static [&'static str] {
        &["fetch-all", "streamed"]
    }

    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut loaded = self.repository.load(&self.stream).await?;
        for _ in 1..self.loads {
            loaded = self.repository.load(&self.stream).await?;
        }
        let elapsed = started.elapsed() / u32::try_from(self.loads)?;
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

    async fn raw(&self, index: usize, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let load = async || -> anyhow::Result<(Cart, i64)> {
            if index == 1 {
                return self.table.fold(&self.pool, self.stream.as_str()).await;
            }
            let (history, version) = self.table.load(&self.pool, self.stream.as_str()).await?;
            Ok((Cart::from_events(&history), version))
        };
        let (mut cart, mut version) = load().await?;
        for _ in 1..self.loads {
            (cart, version) = load().await?;
        }
        let elapsed = started.elapsed() / u32::try_from(self.loads)?;
        anyhow::ensure!(
            version == self.events as i64 && cart.lines == self.events as u64,
            "the baseline loaded version {version} with {} lines, expected {}",
            cart.lines,
            self.events
        );
        Ok(elapsed)
    }
}
