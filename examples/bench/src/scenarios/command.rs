//! `command-1` and `command-8` (and the writer curve of `growth`): writers executing single-event commands (load
//! the stream, decide, append).
//!
//! Command `i` goes to stream `i % streams`, handed out from one shared counter, so every stream receives the
//! same number of commands and concurrent writers rarely touch the same stream (every side retries when they do).
//!
//! Baselines, strongest first:
//! - `dedicated`: each writer owns one connection for the whole run (no pool acquire, no ping): SELECT the
//!   stream, decode, fold, decide, one autocommit INSERT at version + 1. Two round trips per command, the
//!   fewest a command that reads before it writes can take.
//! - `pooled`: the same through a pool with sqlx's default options, which ping the server on every acquire
//!   (four round trips per command). The reference the harness used before; kept as a second line.
//!
//! Every line also gives the write commits per command of Annals and of the dedicated baseline: how many
//! transactions wrote the run's events (distinct `xmin` of the events table), which is what group commit saves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{Aggregate, CachedRepository, EventStore, Repository, StreamId};
use anyhow::Context as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use tokio::task::JoinSet;

use crate::domain::{AddItem, Cart, stream_name};
use crate::harness::{self, Phase, Pool, Scratch, Workload};
use crate::raw::RawTable;
use crate::settings::Settings;
use crate::trips;

/// Commands per stream in every command scenario (10,000 over 1,000 streams; 20,000 over 2,000).
const COMMANDS_PER_STREAM: usize = 10;

/// The options of the Annals side of a command scenario.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Variant {
    /// Commands go through a `CachedRepository` (the write-side aggregate cache).
    pub(crate) cache: bool,
    /// Appends go through a `GroupCommitStore` (group commit).
    pub(crate) group: bool,
}

/// One command scenario.
pub(crate) struct Commands {
    settings: Settings,
    writers: usize,
    commands: usize,
    annals_pool: Pool,
    dedicated_pool: Pool,
    /// The pooled (pinging) baseline's pool; `None` leaves that baseline out.
    pooled_pool: Option<Pool>,
    /// What the Annals side runs with: the write-side aggregate cache, group commit.
    variant: Variant,
    /// Write commits per command of the last run of Annals and of the dedicated baseline.
    last_commits: Mutex<(Option<f64>, Option<f64>)>,
    /// Round trips of the last run (on the commands' path, background NOTIFYs, commands), when counting.
    last_trips: Mutex<Option<(usize, usize, usize)>>,
}

impl Commands {
    /// `writers` concurrent writers executing `default_commands` commands (or `--commands`): opens one pool per
    /// side, warms up, measures and returns the result line.
    pub(crate) async fn run(
        settings: &Settings,
        name: &str,
        writers: usize,
        default_commands: usize,
        variant: Variant,
    ) -> anyhow::Result<String> {
        let commands = settings.commands.unwrap_or(default_commands);
        let scenario = Self::new(settings, writers, commands, true).await?;
        let scenario = Self {
            variant,
            ..scenario
        };
        let line = scenario.measure(name).await;
        scenario.close().await;
        line
    }

    /// Warms up, measures, counts round trips and returns the result line.
    pub(crate) async fn measure(&self, name: &str) -> anyhow::Result<String> {
        eprintln!(
            "{name}: {} writer(s), {} commands over {} streams",
            self.writers,
            self.commands,
            streams(self.commands)
        );
        let timings =
            harness::measure(name, self, self.settings.runs, &self.settings.sides).await?;
        let mut line = harness::rate_line(name, self.commands, &timings);
        let (annals, dedicated) = *self
            .last_commits
            .lock()
            .map_err(|_| anyhow::anyhow!("commit record poisoned"))?;
        if let Some(annals) = annals {
            line.push_str(&format!(" | write commits/command annals {annals:.3}"));
            if let Some(dedicated) = dedicated {
                line.push_str(&format!(" dedicated {dedicated:.3}"));
            }
        }
        Ok(line)
    }

    /// Records how many transactions wrote the `commands` commands' events in `scratch` (rows one transaction
    /// wrote share its `xmin`).
    async fn count_commits(
        &self,
        pool: &PgPool,
        scratch: &Scratch,
        commands: usize,
        annals: bool,
    ) -> anyhow::Result<()> {
        let commits: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT xmin::text) FROM \"{}\".events",
            scratch.name()
        )))
        .fetch_one(pool)
        .await
        .context("cannot count the run's write commits")?;
        let per = commits as f64 / commands.max(1) as f64;
        let mut last = self
            .last_commits
            .lock()
            .map_err(|_| anyhow::anyhow!("commit record poisoned"))?;
        match annals {
            true => last.0 = Some(per),
            false => last.1 = Some(per),
        }
        Ok(())
    }

    /// Opens the sides' pools for `writers` writers running `commands` commands per run; `with_pooled` adds the
    /// pooled baseline.
    pub(crate) async fn new(
        settings: &Settings,
        writers: usize,
        commands: usize,
        with_pooled: bool,
    ) -> anyhow::Result<Self> {
        // One connection per writer, one for the store's notification sender and one the pool keeps spare, so
        // that the store may hold its connections between commands (it never holds the pool's last one); the
        // baselines get as many.
        let connections = u32::try_from(writers + 2)?;
        let url = &settings.database_url;
        Ok(Self {
            settings: settings.clone(),
            writers,
            commands,
            annals_pool: harness::annals_pool(url, connections).await?,
            dedicated_pool: harness::pool(url, connections).await?,
            pooled_pool: match with_pooled {
                true => Some(harness::pool_with(url, connections, PgPoolOptions::new()).await?),
                false => None,
            },
            variant: Variant::default(),
            last_commits: Mutex::new((None, None)),
            last_trips: Mutex::new(None),
        })
    }

    /// Closes the pools (the writer curve opens new ones for every writer count).
    pub(crate) async fn close(self) {
        self.annals_pool.pool.close().await;
        self.dedicated_pool.pool.close().await;
        if let Some(pooled) = self.pooled_pool {
            pooled.pool.close().await;
        }
    }

    /// Runs one task per writer in `writers`, sharing the commands `0..commands` until all are done; returns the
    /// elapsed time. Connections a writer holds were acquired before the clock starts.
    async fn drive<W: Writer>(
        &self,
        commands: usize,
        writers: Vec<W>,
        pinged: bool,
    ) -> anyhow::Result<Duration> {
        let streams = streams(commands);
        let names: Arc<Vec<String>> = Arc::new((0..streams).map(stream_name).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let before = trips::snapshot();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for mut writer in writers {
            let (names, next) = (names.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= commands {
                        return anyhow::Ok(());
                    }
                    let stream = names
                        .get(i % names.len())
                        .context("stream index out of range")?;
                    writer.execute(stream, &AddItem::nth(i)).await?;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let elapsed = started.elapsed();
        let (trips, notifies) = trips::snapshot().since(before, pinged);
        *self
            .last_trips
            .lock()
            .map_err(|_| anyhow::anyhow!("round-trip record poisoned"))? =
            Some((trips, notifies, commands));
        Ok(elapsed)
    }

    async fn raw_run(
        &self,
        pool: &Pool,
        dedicated: bool,
        phase: Phase,
    ) -> anyhow::Result<Duration> {
        let label = if dedicated { "rawd" } else { "rawp" };
        Scratch::create(&pool.pool, label)
            .await?
            .run(async |scratch| {
                let table = RawTable::create(&pool.pool, scratch).await?;
                let commands = phase.scale(self.commands);
                if dedicated {
                    let mut writers = Vec::with_capacity(self.writers);
                    for _ in 0..self.writers {
                        writers.push(DedicatedWriter {
                            conn: pool.pool.acquire().await?,
                            table: table.clone(),
                        });
                    }
                    let elapsed = self.drive(commands, writers, pool.pinged).await?;
                    self.count_commits(&pool.pool, scratch, commands, false)
                        .await?;
                    Ok(elapsed)
                } else {
                    let writers = (0..self.writers)
                        .map(|_| PooledWriter {
                            pool: pool.pool.clone(),
                            table: table.clone(),
                        })
                        .collect();
                    self.drive(commands, writers, pool.pinged).await
                }
            })
            .await
    }
}

fn streams(commands: usize) -> usize {
    (commands / COMMANDS_PER_STREAM).max(1)
}

/// Executes commands on one side; one per writer task.
trait Writer: Send + 'static {
    fn execute(
        &mut self,
        stream: &str,
        command: &AddItem,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

enum AnnalsWriter {
    Plain(Repository<Cart, Arc<dyn EventStore>>),
    Cached(CachedRepository<Cart, Arc<dyn EventStore>>),
}

impl Writer for AnnalsWriter {
    async fn execute(&mut self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        let stream = StreamId::new(stream)?;
        match self {
            Self::Plain(repository) => drop(repository.execute(&stream, command).await?),
            Self::Cached(repository) => drop(repository.execute(&stream, command).await?),
        }
        Ok(())
    }
}

/// The strongest baseline: a connection of its own.
struct DedicatedWriter {
    conn: PoolConnection<Postgres>,
    table: RawTable,
}

impl Writer for DedicatedWriter {
    /// SELECT the stream's rows, fold them, decide, INSERT the new row; on a unique violation, do it again.
    async fn execute(&mut self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        loop {
            let (history, version) = self.table.load(&mut *self.conn, stream).await?;
            let events = Cart::from_events(&history).decide(command)?;
            if self
                .table
                .insert_all(&mut self.conn, stream, version, &events)
                .await?
            {
                return Ok(());
            }
        }
    }
}

/// The previous baseline: every statement acquires a connection from a pinging pool.
struct PooledWriter {
    pool: PgPool,
    table: RawTable,
}

impl Writer for PooledWriter {
    async fn execute(&mut self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        loop {
            let (history, version) = self.table.load(&self.pool, stream).await?;
            let events = Cart::from_events(&history).decide(command)?;
            let mut conn = self.pool.acquire().await?;
            if self
                .table
                .insert_all(&mut conn, stream, version, &events)
                .await?
            {
                return Ok(());
            }
        }
    }
}

impl Workload for Commands {
    fn baselines(&self) -> &'static [&'static str] {
        match self.pooled_pool {
            Some(_) => &["dedicated", "pooled"],
            None => &["dedicated"],
        }
    }

    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration> {
        let pool = &self.annals_pool;
        Scratch::create(&pool.pool, "annals")
            .await?
            .run(async |scratch| {
                let store = match self.variant.group {
                    true => {
                        self.settings
                            .annals_group_store(&pool.pool, scratch)
                            .await?
                    }
                    false => self.settings.annals_store(&pool.pool, scratch).await?,
                };
                let repository = Repository::new(store);
                let commands = phase.scale(self.commands);
                let cached = CachedRepository::new(repository.clone(), streams(commands));
                let writers = (0..self.writers)
                    .map(|_| match self.variant.cache {
                        true => AnnalsWriter::Cached(cached.clone()),
                        false => AnnalsWriter::Plain(repository.clone()),
                    })
                    .collect();
                let elapsed = self.drive(commands, writers, pool.pinged).await?;
                if self.settings.store == crate::settings::StoreKind::Postgres {
                    self.count_commits(&pool.pool, scratch, commands, true)
                        .await?;
                }
                Ok(elapsed)
            })
            .await
    }

    async fn raw(&self, index: usize, phase: Phase) -> anyhow::Result<Duration> {
        match (index, &self.pooled_pool) {
            (1, Some(pooled)) => self.raw_run(pooled, false, phase).await,
            _ => self.raw_run(&self.dedicated_pool, true, phase).await,
        }
    }

    fn annals_pool(&self) -> Option<&Pool> {
        Some(&self.annals_pool)
    }

    fn raw_pool(&self, index: usize) -> Option<&Pool> {
        match (index, &self.pooled_pool) {
            (1, Some(pooled)) => Some(pooled),
            _ => Some(&self.dedicated_pool),
        }
    }

    fn round_trips(&self) -> Option<(f64, f64)> {
        let trips = *self.last_trips.lock().ok()?;
        trips.map(|(trips, notifies, units)| {
            let units = units.max(1) as f64;
            (trips as f64 / units, notifies as f64 / units)
        })
    }
}
