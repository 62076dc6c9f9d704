//! `append-batch`: one writer appending 1,000 events per call, round-robin over a few streams, each call expecting
//! the stream's exact version.
//!
//! Both sides start from the same domain events, built before the clock starts; encoding them is measured.
//!
//! Baselines: `insert`, one multi-row `INSERT … SELECT FROM UNNEST(…)` per call, and `copy`, one
//! `COPY … FROM STDIN` per call (the bulk path PostgreSQL offers; the unique (stream, version) key still rejects a
//! conflicting batch whole). The ratio is taken against whichever is faster in the run.

use std::time::{Duration, Instant};

use crate::domain::{CartEvent, nth_event, stream_name};
use crate::harness::{self, Phase, Pool, Scratch, Workload};
use crate::raw::RawTable;
use crate::settings::Settings;
use annals::{ExpectedVersion, NewEvent, StreamId, StreamVersion};

/// Events per append call.
const BATCH: usize = 1_000;
/// Events in a measured run by default (50 calls).
const DEFAULT_EVENTS: usize = 50_000;
/// Streams the calls rotate over.
const STREAMS: usize = 10;

/// The scenario.
pub(crate) struct AppendBatch {
    settings: Settings,
    events: usize,
    annals_pool: Pool,
    raw_pool: Pool,
}

impl AppendBatch {
    /// Opens one pool per side, warms up, measures and returns the result line.
    pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<String> {
        let scenario = Self::new(settings).await?;
        eprintln!(
            "{name}: 1 writer, {} events in calls of {BATCH} over {STREAMS} streams",
            scenario.events()
        );
        let timings = harness::measure(name, &scenario, settings.runs, &settings.sides).await?;
        Ok(harness::rate_line(name, scenario.events(), &timings))
    }

    async fn new(settings: &Settings) -> anyhow::Result<Self> {
        let events = settings.events.unwrap_or(DEFAULT_EVENTS).max(BATCH);
        Ok(Self {
            settings: settings.clone(),
            events,
            annals_pool: harness::annals_pool(&settings.database_url, 2).await?,
            raw_pool: harness::pool(&settings.database_url, 2).await?,
        })
    }

    /// Events in one measured run (a whole number of batches).
    fn events(&self) -> usize {
        self.events / BATCH * BATCH
    }
}

/// The batches of a run: for call `c`, its stream index, the stream's version before it, and its events.
fn batches(events: usize) -> Vec<(usize, u64, Vec<CartEvent>)> {
    let calls = (events / BATCH).max(1);
    (0..calls)
        .map(|call| {
            let stream = call % STREAMS;
            let before = (call / STREAMS * BATCH) as u64;
            let events = (0..BATCH).map(|k| nth_event(call * BATCH + k)).collect();
            (stream, before, events)
        })
        .collect()
}

impl Workload for AppendBatch {
    fn baselines(&self) -> &'static [&'static str] {
        &["copy", "insert"]
    }

    fn annals_pool(&self) -> Option<&Pool> {
        Some(&self.annals_pool)
    }

    fn raw_pool(&self, _index: usize) -> Option<&Pool> {
        Some(&self.raw_pool)
    }

    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration> {
        let pool = &self.annals_pool.pool;
        Scratch::create(pool, "annals")
            .await?
            .run(async |scratch| {
                let store = self.settings.annals_store(pool, scratch).await?;
                let streams = (0..STREAMS)
                    .map(|n| StreamId::new(stream_name(n)))
                    .collect::<Result<Vec<_>, _>>()?;
                let batches = batches(phase.scale(self.events()));
                let started = Instant::now();
                for (stream, before, events) in batches {
                    let events = events
                        .iter()
                        .map(NewEvent::from_event)
                        .collect::<Result<Vec<_>, _>>()?;
                    let expected = ExpectedVersion::Exact(StreamVersion(before));
                    store.append(&streams[stream], expected, events).await?;
                }
                Ok(started.elapsed())
            })
            .await
    }

    async fn raw(&self, index: usize, phase: Phase) -> anyhow::Result<Duration> {
        let pool = &self.raw_pool.pool;
        Scratch::create(pool, "raw")
            .await?
            .run(async |scratch| {
                let table = RawTable::create(pool, scratch).await?;
                let streams: Vec<String> = (0..STREAMS).map(stream_name).collect();
                let batches = batches(phase.scale(self.events()));
                let started = Instant::now();
                for (stream, before, events) in batches {
                    let before = i64::try_from(before)?;
                    if index == 0 {
                        table
                            .copy_batch(pool, &streams[stream], before, &events)
                            .await?;
                    } else {
                        table
                            .insert_batch(pool, &streams[stream], before, &events)
                            .await?;
                    }
                }
                Ok(started.elapsed())
            })
            .await
    }
}
