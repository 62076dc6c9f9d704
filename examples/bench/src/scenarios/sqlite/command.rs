//! `sqlite-command-1` and `sqlite-command-8`: writers executing single-event commands (load the stream, decide,
//! append) on SQLite, command `i` to stream `i % streams` (10 commands per stream), a fresh file per run.
//!
//! Annals: `Repository::execute` on `SqliteStore::open` (default settings: one writer connection, 4 readers).
//! Baselines, both the least a read-decide-write command can do on SQLite (one SELECT, one autocommit INSERT at
//! version + 1, the unique key as concurrency control, retry on a violation), with the store's durability:
//! - `dedicated`: each writer reads on a connection of its own; the INSERTs go through one writer connection the
//!   writers share (SQLite admits one writer at a time: more writer connections would only meet in the busy
//!   handler, which sleeps);
//! - `single`: one connection (a pool of one) for every statement of every writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::{Aggregate, EventStore, Repository, StreamId};
use anyhow::Context as _;
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::domain::{AddItem, Cart, stream_name};
use crate::harness::{self, Phase, Workload};
use crate::raw_sqlite::{self, ScratchFile};
use crate::settings::Settings;

/// Commands per stream.
const COMMANDS_PER_STREAM: usize = 10;

/// `writers` writers executing `default_commands` commands (or `--commands`): warms up, measures and returns the
/// result line.
pub(crate) async fn run(
    settings: &Settings,
    name: &str,
    writers: usize,
    default_commands: usize,
) -> anyhow::Result<String> {
    let commands = settings.commands.unwrap_or(default_commands);
    eprintln!(
        "{name}: {writers} writer(s), {commands} commands over {} streams, files in {}",
        streams(commands),
        settings.sqlite_dir.display()
    );
    let scenario = SqliteCommands {
        settings: settings.clone(),
        writers,
        commands,
    };
    let timings = harness::measure(name, &scenario, settings.runs, &settings.sides).await?;
    Ok(harness::rate_line(name, commands, &timings))
}

fn streams(commands: usize) -> usize {
    (commands / COMMANDS_PER_STREAM).max(1)
}

struct SqliteCommands {
    settings: Settings,
    writers: usize,
    commands: usize,
}

/// Executes commands on one side; one per writer task.
trait Writer: Send + 'static {
    fn execute(
        &mut self,
        stream: &str,
        command: &AddItem,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs one task per writer, sharing the commands `0..commands` until all are done; returns the elapsed time.
async fn drive<W: Writer>(commands: usize, writers: Vec<W>) -> anyhow::Result<Duration> {
    let names: Arc<Vec<String>> = Arc::new((0..streams(commands)).map(stream_name).collect());
    let next = Arc::new(AtomicUsize::new(0));
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
    Ok(started.elapsed())
}

struct AnnalsWriter(Repository<Cart, Arc<dyn EventStore>>);

impl Writer for AnnalsWriter {
    async fn execute(&mut self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        self.0.execute(&StreamId::new(stream)?, command).await?;
        Ok(())
    }
}

/// Reads on a connection of its own, inserts through the shared writer connection.
struct DedicatedWriter {
    reader: PoolConnection<Sqlite>,
    writer: Arc<Mutex<PoolConnection<Sqlite>>>,
}

impl Writer for DedicatedWriter {
    async fn execute(&mut self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        loop {
            let (history, version) = raw_sqlite::load(&mut *self.reader, stream).await?;
            let events = Cart::from_events(&history).decide(command)?;
            let [event] = events.as_slice() else {
                anyhow::bail!("a command decided {} events, expected one", events.len());
            };
            let mut writer = self.writer.lock().await;
            if raw_sqlite::insert_one(&mut **writer, stream, version, event).await? {
                return Ok(());
            }
        }
    }
}

/// Every statement on one pooled connection.
struct SingleWriter(SqlitePool);

impl Writer for SingleWriter {
    async fn execute(&mut self, stream: &str, command: &AddItem) -> anyhow::Result<()> {
        loop {
            let (history, version) = raw_sqlite::load(&self.0, stream).await?;
            let events = Cart::from_events(&history).decide(command)?;
            let [event] = events.as_slice() else {
                anyhow::bail!("a command decided {} events, expected one", events.len());
            };
            if raw_sqlite::insert_one(&self.0, stream, version, event).await? {
                return Ok(());
            }
        }
    }
}

impl Workload for SqliteCommands {
    fn baselines(&self) -> &'static [&'static str] {
        &["dedicated", "single"]
    }

    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration> {
        let file = ScratchFile::new(&self.settings.sqlite_dir, "annals");
        let store = super::open_store(&file).await?;
        let repository = Repository::new(Arc::new(store.clone()) as Arc<dyn EventStore>);
        let writers = (0..self.writers)
            .map(|_| AnnalsWriter(repository.clone()))
            .collect();
        let elapsed = drive(phase.scale(self.commands), writers).await;
        store.close().await;
        elapsed
    }

    async fn raw(&self, index: usize, phase: Phase) -> anyhow::Result<Duration> {
        let file = ScratchFile::new(&self.settings.sqlite_dir, "raw");
        let commands = phase.scale(self.commands);
        let (pool, elapsed) = if index == 0 {
            let pool = raw_sqlite::pool(file.path(), u32::try_from(self.writers + 1)?).await?;
            let writer = Arc::new(Mutex::new(pool.acquire().await?));
            let mut writers = Vec::with_capacity(self.writers);
            for _ in 0..self.writers {
                writers.push(DedicatedWriter {
                    reader: pool.acquire().await?,
                    writer: writer.clone(),
                });
            }
            let elapsed = drive(commands, writers).await;
            (pool, elapsed)
        } else {
            let pool = raw_sqlite::pool(file.path(), 1).await?;
            let writers = (0..self.writers)
                .map(|_| SingleWriter(pool.clone()))
                .collect();
            let elapsed = drive(commands, writers).await;
            (pool, elapsed)
        };
        pool.close().await;
        elapsed
    }
}
