//! `annals-nats-relay`: a standalone relay for an Annals PostgreSQL store (and the process the crash tests
//! kill).

use std::process::ExitCode;
use std::time::Duration;

use annals_nats::{FeedCommand, Relay, RelayOptions};
use annals_postgres::PostgresStore;
use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "annals-nats-relay",
    version,
    about = "Publishes an Annals event log to NATS JetStream"
)]
struct Cli {
    /// PostgreSQL URL of the event store.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The store's schema.
    #[arg(long, env = "ANNALS_SCHEMA", default_value = "annals")]
    schema: String,
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "127.0.0.1:4222")]
    nats_url: String,
    /// Subject prefix: events go to `<prefix>.<category>.<stream id>`.
    #[arg(long, default_value = "annals")]
    subject_prefix: String,
    /// JetStream stream name.
    #[arg(long, default_value = "ANNALS")]
    stream: String,
    /// The relay's name (checkpoint and lease key).
    #[arg(long, default_value = "nats_relay")]
    name: String,
    /// Lease time-to-live in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    lease_ttl_ms: u64,
    /// Events per batch (one checkpoint commit each).
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// A name for this process in the logs.
    #[arg(long)]
    instance: Option<String>,
    #[command(subcommand)]
    command: FeedCommand,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = PostgresStore::connect(&cli.database_url)
        .await
        .context("cannot open the event store")?
        .with_schema(&cli.schema)
        .context("invalid store schema")?;
    let pool = store.pool().clone();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&cli.nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", cli.nats_url))?;
    let mut options = RelayOptions::new(&cli.subject_prefix, &cli.stream)?
        .name(cli.name)
        .lease_ttl(Duration::from_millis(cli.lease_ttl_ms))
        .batch_size(cli.batch_size);
    if let Some(instance) = cli.instance {
        options = options.instance(instance);
    }
    let relay = Relay::new(store, pool, client, options)?;
    cli.command.execute(&relay).await?;
    Ok(ExitCode::SUCCESS)
}
