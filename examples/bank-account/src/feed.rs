//! Publishing the bank's events to NATS JetStream (`bank serve --nats-url`): the framework's relay, with the
//! bank's names.

use annals_nats::{Relay, RelayOptions, async_nats};
use annals_postgres::PostgresStore;
use annals_projections::Projections;
use annals_sqlite::SqliteStore;
use anyhow::Context;

use crate::service::{DATA_FILE, StoreConfig};

/// Where the bank publishes: the JetStream stream and the subject prefix (`bank.account.account-<id>`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct FeedConfig {
    /// NATS server URL: publish every committed event to JetStream (not with --memory).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream the bank's events go to.
    #[arg(long, env = "BANK_NATS_STREAM", default_value = "BANK")]
    pub nats_stream: String,
    /// The subject prefix: events go to `<prefix>.account.account-<id>`.
    #[arg(long, env = "BANK_NATS_PREFIX", default_value = "bank")]
    pub nats_prefix: String,
}

/// The relay of the bank's event log, or `None` when no NATS URL is configured: on PostgreSQL its checkpoint
/// and lease live in the bank's projections schema; on the embedded default (SQLite in `--data-dir`) they live
/// in the data file beside the events, so `bank feed status` run in the same directory sees the service's relay.
///
/// # Errors
/// When the store is the in-memory store (an in-memory log dies with the process: nothing to relay reliably),
/// or the database, the data file or NATS cannot be reached.
pub async fn relay(store: &StoreConfig, feed: &FeedConfig) -> anyhow::Result<Option<Relay>> {
    let Some(nats_url) = &feed.nats_url else {
        return Ok(None);
    };
    let options = RelayOptions::new(&feed.nats_prefix, &feed.nats_stream)?.name("nats_relay");
    if let Some(database_url) = &store.database_url {
        let schema = &store.schema;
        let events = PostgresStore::connect(database_url)
            .await?
            .with_schema(schema)?;
        let options =
            options.projections_schema(format!("{schema}_projections"), format!("{schema}_rm_"));
        let client = connect(nats_url).await?;
        return Ok(Some(Relay::new(
            events.clone(),
            events.pool().clone(),
            client,
            options,
        )?));
    }
    let Some(dir) = &store.data_dir else {
        anyhow::bail!(
            "--nats-url needs a durable store (--data-dir or --database-url): an in-memory log (--memory) dies \
             with the process"
        );
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let file = dir.join(DATA_FILE);
    let events = SqliteStore::open(&file).await?;
    events
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the event store {}", file.display()))?;
    let client = connect(nats_url).await?;
    let relay = Relay::on(events.clone(), Projections::sqlite(events), client, options);
    Ok(Some(relay))
}

async fn connect(nats_url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))
}
