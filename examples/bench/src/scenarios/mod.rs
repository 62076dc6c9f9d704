//! The scenarios, one module each, and the table that names them.

mod append_batch;
mod command;
mod fill;
mod fold_all;
pub(crate) mod growth;
mod load_stream;
mod read_all;
mod rebuild;
mod relay_nats;
mod sqlite;
mod transfer;

use crate::scenarios::command::Variant;
use crate::settings::Settings;

const PLAIN: Variant = Variant {
    cache: false,
    group: false,
};
const CACHE: Variant = Variant {
    cache: true,
    group: false,
};
const GROUP: Variant = Variant {
    cache: false,
    group: true,
};
const CACHE_GROUP: Variant = Variant {
    cache: true,
    group: true,
};

/// A scenario the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// 1 writer, 10,000 single-event commands over 1,000 streams.
    #[value(name = "command-1")]
    Command1,
    /// 8 concurrent writers, 20,000 commands over 2,000 streams.
    #[value(name = "command-8")]
    Command8,
    /// `command-1` with the write-side aggregate cache (`CachedRepository`) on the Annals side.
    #[value(name = "command-1-cache")]
    Command1Cache,
    /// `command-8` with the write-side aggregate cache on the Annals side.
    #[value(name = "command-8-cache")]
    Command8Cache,
    /// `command-8` with group commit (`GroupCommitStore`) on the Annals side.
    #[value(name = "command-8-group")]
    Command8Group,
    /// `command-8` with the write-side aggregate cache and group commit on the Annals side.
    #[value(name = "command-8-cache-group")]
    Command8CacheGroup,
    /// 1 writer appending 1,000 events per call, 50 calls.
    #[value(name = "append-batch")]
    AppendBatch,
    /// Load and fold one stream of 10,000 events.
    #[value(name = "load-10k")]
    Load10k,
    /// Read 100,000 events in global order.
    #[value(name = "read-all")]
    ReadAll,
    /// Fold 100,000 events in global order into per-cart state (through `fold_all`, and through `visit_all` on a
    /// second line, `fold-all-envelopes`).
    #[value(name = "fold-all")]
    FoldAll,
    /// Rebuild a projection of per-cart balances over 100,000 events into memory.
    #[value(name = "rebuild-memory")]
    RebuildMemory,
    /// Rebuild the same projection into a PostgreSQL table with batched upserts.
    #[value(name = "rebuild-postgres")]
    RebuildPostgres,
    /// The growth curves: load against stream length, fold and rebuild against log size (with peak RSS),
    /// commands against writers.
    Growth,
    /// Publish 100,000 stored events to NATS JetStream with acks (needs NATS at `NATS_URL`; not in `all`).
    #[value(name = "relay-nats")]
    RelayNats,
    /// 8 clients, 2,000 transfers through the bank's transfer process manager, beside the same two account
    /// commands sent by the clients themselves (not part of `all`).
    #[value(name = "transfer")]
    Transfer,
    /// `command-1` on SQLite: `SqliteStore` (default settings) against a plain-sqlx SQLite baseline.
    #[value(name = "sqlite-command-1")]
    SqliteCommand1,
    /// `command-8` on SQLite.
    #[value(name = "sqlite-command-8")]
    SqliteCommand8,
    /// `load-10k` on SQLite.
    #[value(name = "sqlite-load-10k")]
    SqliteLoad10k,
    /// `fold-all` on SQLite (through `fold_all`), with each side's peak RSS.
    #[value(name = "sqlite-fold-all")]
    SqliteFoldAll,
    /// A fold of 1,000,000 events on SQLite, with each side's peak RSS.
    #[value(name = "sqlite-fold-1m")]
    SqliteFold1m,
    /// Every SQLite scenario above, in this order (not part of `all`).
    Sqlite,
    /// Every scenario above but `relay-nats`, `transfer` and the SQLite ones, in this order.
    All,
}

impl Scenario {
    /// The scenarios `self` stands for.
    pub(crate) fn expand(self) -> Vec<Scenario> {
        match self {
            Self::All => vec![
                Self::Command1,
                Self::Command8,
                Self::Command1Cache,
                Self::Command8Cache,
                Self::Command8Group,
                Self::Command8CacheGroup,
                Self::AppendBatch,
                Self::Load10k,
                Self::ReadAll,
                Self::FoldAll,
                Self::RebuildMemory,
                Self::RebuildPostgres,
                Self::Growth,
            ],
            Self::Sqlite => vec![
                Self::SqliteCommand1,
                Self::SqliteCommand8,
                Self::SqliteLoad10k,
                Self::SqliteFoldAll,
                Self::SqliteFold1m,
            ],
            one => vec![one],
        }
    }

    /// The name printed on the result line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Command1 => "command-1",
            Self::Command8 => "command-8",
            Self::Command1Cache => "command-1-cache",
            Self::Command8Cache => "command-8-cache",
            Self::Command8Group => "command-8-group",
            Self::Command8CacheGroup => "command-8-cache-group",
            Self::AppendBatch => "append-batch",
            Self::Load10k => "load-10k",
            Self::ReadAll => "read-all",
            Self::RebuildMemory => "rebuild-memory",
            Self::RebuildPostgres => "rebuild-postgres",
            Self::FoldAll => "fold-all",
            Self::Growth => "growth",
            Self::RelayNats => "relay-nats",
            Self::Transfer => "transfer",
            Self::SqliteCommand1 => "sqlite-command-1",
            Self::SqliteCommand8 => "sqlite-command-8",
            Self::SqliteLoad10k => "sqlite-load-10k",
            Self::SqliteFoldAll => "sqlite-fold-all",
            Self::SqliteFold1m => "sqlite-fold-1m",
            Self::Sqlite => "sqlite",
            Self::All => "all",
        }
    }

    /// Runs one scenario (not `All`) and returns its result lines.
    pub(crate) async fn run(self, settings: &Settings) -> anyhow::Result<Vec<String>> {
        let name = self.name();
        let line = match self {
            Self::Growth => return growth::run(settings).await,
            Self::FoldAll => return fold_all::run(settings, name).await,
            Self::Command1 => command::Commands::run(settings, name, 1, 10_000, PLAIN).await,
            Self::Command8 => command::Commands::run(settings, name, 8, 20_000, PLAIN).await,
            Self::Command1Cache => command::Commands::run(settings, name, 1, 10_000, CACHE).await,
            Self::Command8Cache => command::Commands::run(settings, name, 8, 20_000, CACHE).await,
            Self::Command8Group => command::Commands::run(settings, name, 8, 20_000, GROUP).await,
            Self::Command8CacheGroup => {
                command::Commands::run(settings, name, 8, 20_000, CACHE_GROUP).await
            }
            Self::AppendBatch => append_batch::AppendBatch::run(settings, name).await,
            Self::Load10k => load_stream::run(settings, name).await,
            Self::ReadAll => read_all::run(settings, name).await,
            Self::RebuildMemory => rebuild::run(settings, name, rebuild::Target::Memory).await,
            Self::RebuildPostgres => rebuild::run(settings, name, rebuild::Target::Postgres).await,
            Self::RelayNats => relay_nats::run(settings, name).await,
            Self::Transfer => transfer::run(settings, name).await,
            Self::SqliteCommand1 => sqlite::commands(settings, name, 1, 10_000).await,
            Self::SqliteCommand8 => sqlite::commands(settings, name, 8, 20_000).await,
            Self::SqliteLoad10k => sqlite::load(settings, name).await,
            Self::SqliteFoldAll => sqlite::fold_all(settings, name).await,
            Self::SqliteFold1m => sqlite::fold_million(settings, name).await,
            Self::Sqlite | Self::All => {
                anyhow::bail!("`{name}` is not a single scenario; expand it first")
            }
        };
        Ok(vec![line?])
    }
}
