//! `bank-notifier`: a separate service that consumes the bank's account events from NATS JetStream through an
//! inbox and serves `GET /notifications?account=ID` from its own PostgreSQL table.

use std::net::SocketAddr;

use anyhow::Context;
use bank_account::notifier;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "bank-notifier",
    version,
    about = "Notifications for the Annals bank example, fed from JetStream"
)]
struct Cli {
    /// The notifier's own PostgreSQL database (its schema `notifier` holds notifications and inbox).
    #[arg(long, env = "NOTIFIER_DATABASE_URL")]
    database_url: String,
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "127.0.0.1:4222")]
    nats_url: String,
    /// The bank's JetStream stream.
    #[arg(long, env = "BANK_NATS_STREAM", default_value = "BANK")]
    nats_stream: String,
    /// The bank's subject prefix.
    #[arg(long, env = "BANK_NATS_PREFIX", default_value = "bank")]
    nats_prefix: String,
    /// Address to listen on.
    #[arg(long, env = "NOTIFIER_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pool = sqlx::PgPool::connect(&cli.database_url)
        .await
        .context("cannot connect to the notifier's database")?;
    let client = annals_nats::async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&cli.nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", cli.nats_url))?;
    let inbox = notifier::inbox(pool.clone(), client, &cli.nats_stream, &cli.nats_prefix)?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(address = %listener.local_addr()?, stream = %cli.nats_stream, "bank-notifier listening");
    notifier::run(pool, inbox, listener, async {
        annals_nats::shutdown_signal().await;
    })
    .await
}
