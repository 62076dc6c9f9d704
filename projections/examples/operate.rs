//! A small application that mounts the `projections` subcommands, on PostgreSQL.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo run -p annals-projections --example operate -- seed 100000
//! cargo run -p annals-projections --example operate -- projections status
//! cargo run -p annals-projections --example operate -- projections rebuild balances
//! cargo run -p annals-projections --example operate -- projections run
//! ```
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use annals::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use annals_postgres::PostgresStore;
use annals_projections::{
    BoxError, Documents, Projection, Projections, ProjectionsCommand, async_trait,
};
use clap::{Parser, Subcommand};

/// The balance of every account.
struct Balances;

#[async_trait]
impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let amount = event.payload.to_value()?["amount"].as_i64().unwrap_or(0);
        let balance = docs
            .get::<i64>("accounts", &event.stream_id)
            .await?
            .unwrap_or(0);
        docs.put("accounts", &event.stream_id, &(balance + amount))?;
        Ok(())
    }
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append `count` deposits spread over 1000 accounts.
    Seed {
        /// How many events.
        count: usize,
    },
    /// Operate the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let url = std::env::var("DATABASE_URL")?;
    let store = PostgresStore::connect(&url)
        .await?
        .with_schema("operate_example")?;
    store.migrate().await?;
    let projections = Projections::postgres_in(
        store.clone(),
        store.pool().clone(),
        "operate_meta",
        "operate_",
    )?
    .with(Balances);
    match cli.command {
        Command::Seed { count } => {
            for chunk in 0..count.div_ceil(100) {
                let id = StreamId::new(format!("account-{}", chunk % 1000))?;
                let events = (0..100.min(count - chunk * 100))
                    .map(|i| NewEvent::new("Deposited", serde_json::json!({ "amount": i })))
                    .collect();
                store.append(&id, ExpectedVersion::Any, events).await?;
            }
            println!("head is now {}", store.head().await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections(cmd) => Ok(cmd.execute(&projections).await),
    }
}
