//! `command-1` and `command-8`: writers executing single-event commands (load the stream, decide, append).
//!
//! Command `i` goes to stream `i % streams`, handed out from one shared counter, so every stream receives the
//! same number of commands and concurrent writers rarely touch the same stream (both sides retry when they do).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::{Aggregate, EventStore, Repository, StreamId};
use anyhow::Context as _;
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::domain::{AddItem, Cart, stream_name};
use crate::harness::{self, Phase, Scratch, Workload};
use crate::raw::RawTable;
use crate::settings::Settings;

/// Commands per stream in both scenarios (10,000 over 1,000 streams; 20,000 over 2,000).
const COMMANDS_PER_STREAM: usize = 10;

/// One command scenario.
pub(crate) struct Commands {
    settings: Settings,
    writers: usize,
    commands: usize,
    annals_pool: PgPool,
    raw_pool: PgPool,
}

impl Commands {
    /// `writers` concurrent writers executing `default_commands` commands (or `--commands`): opens one pool per
    /// side, warms up, measures and returns the result line.
    pub(crate) async fn run(
        settings: &Settings,
        name: &str,
        writers: usize,
        default_commands: usize,
    ) -> anyhow::Result<String> {
        let scenario = Self::new(settings, writers, default_commands).await?;
        eprintln!(
            "{name}: {writers} writer(s), {} commands over {} streams",
            scenario.commands,
            streams(scenario.commands)
        );
        let timings = harness::measure(name, &scenario, settings.runs).await?;
        Ok(harness::rate_line(name, scenario.commands, &timings))
    }

    async fn new(
        settings: &Settings,
        writers: usize,
        default_commands: usize,
    ) -> anyhow::Result<Self> {
        // One connection per writer, plus one for the store's notification sender (the baseline gets it too).
        let connections = u32::try_from(writers + 1)?;
        Ok(Self {
            settings: settings.clone(),
            writers,
            commands: settings.commands.unwrap_or(default_commands),
            annals_pool: harness::pool(&settings.database_url, connections).await?,
            raw_pool: harness::pool(&settings.database_url, connections).await?,
        })
    }

    /// Runs `writers` tasks that share the commands `0..commands` until all are done; returns the elapsed time.
    async fn drive<C>(&self, commands: usize, context: C) -> anyhow::Result<Duration>
    where
        C: Writer + Clone + Send + 'static,
    {
        let streams = streams(commands);
        let names: Arc<Vec<String>> = Arc::new((0..streams).map(stream_name).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut writers = JoinSet::new();
        for _ in 0..self.writers {
            let (context, names, next) = (context.clone(), names.clone(), next.clone());
            writers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= commands {
                        return anyhow::Ok(());
                    }
                    let stream = names
                        .get(i % names.len())
                        .context("stream index out of range")?;
                    context.execute(stream, &AddItem::nth(i)).await?;
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done??;
        }
        Ok(started.elapsed())
    }
}

fn streams(commands: usize) -> usize {
    (commands / COMMANDS_PER_STREAM).max(1)
}

/// Executes one command on one side.
trait Writer {
    fn execute(
        &self,
        stream: &str,
        command: &AddItem,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Clone)]
struct AnnalsWriter(Repository<Cart, Arc<dyn EventStore>>);

impl Writer for AnnalsWriter {
    async fn execute(&self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        let stream = StreamId::new(stream)?;
        self.0.execute(&stream, command).await?;
        Ok(())
    }
}

#[derive(Clone)]
struct RawWriter {
    pool: PgPool,
    table: RawTable,
}

impl Writer for RawWriter {
    /// SELECT the stream's rows, fold them, decide, INSERT the new row; on a unique violation, do it again.
    async fn execute(&self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        loop {
            let (history, version) = self.table.load(&self.pool, stream).await?;
            let events = Cart::from_events(&history).decide(command)?;
            let mut version = version;
            let mut won = true;
            for event in &events {
                version += 1;
                won = self
                    .table
                    .insert(&self.pool, stream, version, event)
                    .await?;
                if !won {
                    break;
                }
            }
            if won {
                return Ok(());
            }
        }
    }
}

impl Workload for Commands {
    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration> {
        let pool = &self.annals_pool;
        Scratch::create(pool, "annals")
            .await?
            .run(async |scratch| {
                let store = self.settings.annals_store(pool, scratch).await?;
                let writer = AnnalsWriter(Repository::new(store));
                self.drive(phase.scale(self.commands), writer).await
            })
            .await
    }

    async fn raw(&self, phase: Phase) -> anyhow::Result<Duration> {
        let pool = &self.raw_pool;
        Scratch::create(pool, "raw")
            .await?
            .run(async |scratch| {
                let table = RawTable::create(pool, scratch).await?;
                let writer = RawWriter {
                    pool: pool.clone(),
                    table,
                };
                self.drive(phase.scale(self.commands), writer).await
            })
            .await
    }
}
