//! `feed`: how long after a write another service knows, and whether it keeps up.
//!
//! Runs the real pieces: PostgreSQL (two fresh databases, the bank's and the consumer's), a nats-server it
//! starts on a free port with its own store directory (`NATS_SERVER_BIN`, by default Debian's), the relay on a
//! store of its own (so it learns of appends by NOTIFY, as a relay in another process does), and inbox
//! consumers running `bank-notifier`'s handler into the consumer's database. It reports, per run:
//!
//! - commit → applied latency percentiles at offered deposit rates (open loop: each deposit starts on its
//!   schedule, whatever the earlier ones do), from the producer's commit to the consumer's commit (a
//!   `pg_notify` in the consumer's transaction, delivered at its commit);
//! - the drain rate of a backlog already in JetStream, for 1, 2 and 4 inbox instances sharing the durable
//!   consumer, beside a hand-written baseline (a plain pull consumer writing the same rows, one transaction
//!   per batch, no inbox rows, no order fence, no decoding through Annals);
//! - whether the consumer keeps up with a producer at its maximum rate (closed loop).
//!
//! `cargo run --release -p annals-bench --bin feed -- --runs 3`

mod consume;
mod nats;
mod phases;
mod produce;

use std::io::Write as _;
use std::time::Duration;

use clap::Parser;

/// How the benchmark runs.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "feed",
    about = "The event feed's consistency window and throughput"
)]
pub(crate) struct Args {
    /// PostgreSQL server (a database on it is used to create and drop the benchmark's own databases).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Runs; every figure is reported per run and as the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Offered rates (deposits per second) for the latency phase.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,2000")]
    rates: Vec<u32>,
    /// Seconds each offered rate lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Events in the backlog the drain phase adds.
    #[arg(long, default_value_t = 30_000)]
    backlog: usize,
    /// Consumer instances for the drain phase.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    instances: Vec<usize>,
    /// Seconds of the maximum-rate producer phase (0: skip it).
    #[arg(long, default_value_t = 10)]
    max_seconds: u64,
    /// The bank store's NOTIFY coalescing interval, in milliseconds.
    #[arg(long)]
    notify_coalesce_ms: Option<u64>,
    /// The inbox's batch size.
    #[arg(long)]
    batch_size: Option<usize>,
}

impl Args {
    fn notify_coalesce(&self) -> Duration {
        self.notify_coalesce_ms.map_or(
            annals_postgres::DEFAULT_NOTIFY_COALESCE,
            Duration::from_millis,
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut results = Vec::new();
    for run in 1..=args.runs {
        eprintln!("feed: run {run} of {}", args.runs);
        let result = phases::one_run(&args).await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "run {run}: {}", result.line())?;
        stdout.flush()?;
        results.push(result);
    }
    write!(
        std::io::stdout().lock(),
        "\n{}",
        phases::report(&args, &results)
    )?;
    Ok(())
}
