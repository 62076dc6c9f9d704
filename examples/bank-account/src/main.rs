//! `bank`: the bank-account service and its projection tool.

use std::net::SocketAddr;

use std::process::ExitCode;

use annals_projections::ProjectionsCommand;
use anyhow::Context;
use bank_account::{Service, StoreConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bank", version, about = "The Annals bank-account example")]
struct Cli {
    /// Log output: `text` (coloured only when stderr is a terminal) or `json` (one object per line).
    #[arg(
        long,
        env = "BANK_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[derive(clap::Args)]
struct StoreArgs {
    /// PostgreSQL URL; without it, the embedded SQLite store in `--data-dir`.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Without a database URL: the directory of the one SQLite file holding events, read models and timers
    /// (created if missing). Every `bank` command run with the same directory works on the same data.
    #[arg(long, env = "BANK_DATA_DIR", default_value = bank_account::DEFAULT_DATA_DIR, global = true)]
    data_dir: std::path::PathBuf,
    /// Without a database URL: keep everything in this process's memory instead (lost when it stops).
    #[arg(long, global = true)]
    memory: bool,
    /// The PostgreSQL schema for events and command records (1 to 8 lowercase characters); the read models live
    /// in `<schema>_projections` and `<schema>_rm_<name>`.
    #[arg(long, env = "BANK_SCHEMA", default_value = "bank", global = true)]
    schema: String,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP service (and its read models).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BANK_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        feed: bank_account::feed::FeedConfig,
    },
    /// Operates the event feed to NATS JetStream (`status`, `republish --from N`, `run`).
    Feed {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        feed: bank_account::feed::FeedConfig,
        #[command(subcommand)]
        command: annals_nats::FeedCommand,
    },
    /// Operates the read models (`balances`, `history`) on the same store as `serve`.
    Projections {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

impl StoreArgs {
    fn config(self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url,
            schema: self.schema,
            data_dir: (!self.memory).then_some(self.data_dir),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Command::Serve {
            listen,
            store,
            feed,
        } => {
            let config = store.config();
            let relay = bank_account::feed::relay(&config, &feed).await?;
            let service = Service::start(&config).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(
                address = %listener.local_addr()?,
                store = config.kind(),
                "bank-account service listening"
            );
            let Some(relay) = relay else {
                service.serve(listener, shutdown_signal()).await?;
                return Ok(ExitCode::SUCCESS);
            };
            // The event feed runs beside the server and stops with it.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            // Under the service's supervisor: the relay is started again after a transient failure (the
            // database or NATS down longer than its retries), and stops for good only on a permanent one.
            let supervisor = service.supervisor().clone();
            let relaying = tokio::spawn(async move {
                let mut stopped = stopped;
                let result = supervisor
                    .run(
                        "relay",
                        async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        },
                        |stop| relay.run(stop.wait()),
                        annals_nats::Error::is_transient,
                    )
                    .await;
                if let Err(error) = &result {
                    tracing::error!(%error, "the event feed stopped; events are no longer published");
                }
                result
            });
            service.serve(listener, shutdown_signal()).await?;
            let _ = stop.send(true);
            relaying.await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Feed {
            store,
            feed,
            command,
        } => {
            let relay = bank_account::feed::relay(&store.config(), &feed)
                .await?
                .context("`bank feed` needs --nats-url (or NATS_URL)")?;
            command.execute(&relay).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections { store, command } => {
            let config = store.config();
            if config.kind() == "memory" {
                tracing::warn!(
                    "--memory: operating on a new, empty memory store (the service's memory store lives only \
                     inside its own process)"
                );
            }
            let projections = bank_account::projections(&config).await?;
            Ok(command.execute(&projections).await)
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, what every deploy and orchestrator sends: either stops the service gracefully
/// (in-flight requests finish, runners end their batch and release their leases), as `bank-notifier` does.
async fn shutdown_signal() {
    annals_nats::shutdown_signal().await;
    tracing::info!("stopping: finishing in-flight requests and batches, releasing leases");
}
