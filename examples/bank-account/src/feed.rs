//! Publishing the bank's events to NATS JetStream (`bank serve --nats-url`): the framework's relay, with the
//! bank's names.

use annals_nats::{Relay, RelayOptions, async_nats};
use annals_postgres::PostgresStore;
use anyhow::Context;

use crate::service::StoreConfig;

/// Where the bank publishes: the JetStream stream and the subject prefix (`bank.account.account-<id>`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct FeedConfig {
    /// NATS server URL: publish every committed event to JetStream (needs --database-url).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream the bank's events go to.
    #[arg(long, env = "BANK_NATS_STREAM", default_value = "BANK")]
    pub nats_stream: String,
    /// The subject prefix: events go to `<prefix>.account.account-<id>`.
    #[arg(long, env = "BANK_NATS_PREFIX", default_value = "bank")]
    pub nats_prefix: String,
}

/// The relay of the bank's event log in `store`'s database, or `None` when no NATS URL is configured.
///
/// # Errors
/// When the store is the embedded memory store (an in-memory log dies with the process: nothing to relay
/// reliably), or PostgreSQL / NATS cannot be reached.
pub async fn relay(store: &StoreConfig, feed: &FeedConfig) -> anyhow::Result<Option<Relay>> {
    let Some(nats_url) = &feed.nats_url else {
        return Ok(None);
    };
    let Some(database_url) = &store.database_url else {
        anyhow::bail!(
            "--nats-url needs --database-url: the event feed's relay runs on PostgreSQL (not yet on the embedded stores)"
        );
    };
    let schema = &store.schema;
    let events = PostgresStore::connect(database_url)
        .await?
        .with_schema(schema)?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    let options = RelayOptions::new(&feed.nats_prefix, &feed.nats_stream)?
        .name("nats_relay")
        .projections_schema(format!("{schema}_projections"), format!("{schema}_rm_"));
    Ok(Some(Relay::new(
        events.clone(),
        events.pool().clone(),
        client,
        options,
    )?))
}
