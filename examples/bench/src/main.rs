//! The Annals benchmark harness: each scenario runs on the Annals PostgreSQL store and on a plain-sqlx baseline
//! doing the same work on a minimal table, in the same run, and prints one line:
//!
//! ```text
//! bench <scenario>: annals <n>/s raw <n>/s ratio <annals/raw>
//! ```
//!
//! (`load-10k` prints milliseconds and `ratio <raw/annals>`, so a higher ratio is always better.) Progress and the
//! figure of every run go to stderr; stdout carries the result lines alone. See `docs/benchmarks.md`.

mod cpu;
mod domain;
mod harness;
mod raw;
mod raw_sqlite;
mod scenarios;
mod settings;
mod trips;

use std::io::Write as _;

use clap::Parser;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::harness::Sides;
use crate::scenarios::Scenario;
use crate::settings::{Settings, StoreKind};

/// Benchmarks Annals against a plain-sqlx baseline on PostgreSQL.
///
/// Every run writes into a fresh schema of its own (`annals_bench_*`) and drops it afterwards; nothing else in
/// the database is touched.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The scenario to run, or `all`.
    scenario: Scenario,
    /// The PostgreSQL server and database to benchmark in.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Measured runs per side; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Commands per run in the command scenarios, instead of their defaults (10,000 and 20,000), for quick runs.
    /// Streams get 10 commands each.
    #[arg(long)]
    commands: Option<usize>,
    /// Events per run in the event scenarios (append-batch, load-10k, read-all, fold-all), instead of their
    /// defaults (50,000, 10,000, 100,000 and 100,000), for quick runs.
    #[arg(long)]
    events: Option<usize>,
    /// Page size of the Annals side of read-all.
    #[arg(long, default_value_t = 1_000)]
    page_size: usize,
    /// The store behind the Annals side; `memory` shows the framework's own overhead.
    #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
    store: StoreKind,
    /// Build the PostgreSQL store with `with_notify(false)`: appends send no NOTIFY (shows what it costs).
    #[arg(long)]
    no_notify: bool,
    /// Run only this side: `annals` (suits `valgrind --tool=callgrind`), `raw` (every baseline) or one
    /// baseline by name (`dedicated`, `pooled`, `copy`, `insert`).
    #[arg(long)]
    only: Option<String>,
    /// The largest log of the growth curves' global fold and read-model rebuild (100,000 and 1,000,000 by
    /// default; sizes above it are skipped).
    #[arg(long, default_value_t = 1_000_000)]
    growth_max: usize,
    /// The directory the SQLite scenarios create their database files in (removed after each run); keep it on
    /// the disk whose durability you mean to measure (the system's temporary directory by default).
    #[arg(long)]
    sqlite_dir: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // `RUST_LOG=sqlx::query=debug` shows every statement each side sends; off by default. The statement counter
    // behind the "round trips" figures is always installed, and counts only while a counting run is going on.
    let log = std::env::var_os("RUST_LOG").is_some().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(tracing_subscriber::EnvFilter::from_default_env())
    });
    tracing_subscriber::registry()
        .with(trips::StatementCounter)
        .with(log)
        .init();
    let settings = Settings {
        database_url: args.database_url,
        store: args.store,
        runs: usize::try_from(args.runs)?,
        commands: args.commands,
        events: args.events,
        page_size: args.page_size.max(1),
        notify: !args.no_notify,
        sides: Sides(args.only),
        growth_max: args.growth_max,
        sqlite_dir: args.sqlite_dir.unwrap_or_else(std::env::temp_dir),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for scenario in args.scenario.expand() {
            for line in scenario.run(&settings).await? {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{line}")?;
                stdout.flush()?;
            }
        }
        Ok(())
    })
}
