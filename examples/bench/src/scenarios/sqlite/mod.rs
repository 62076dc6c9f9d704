//! The SQLite scenarios: `annals_sqlite::SqliteStore` with its default settings (WAL, `synchronous = FULL`)
//! beside a plain-sqlx baseline on SQLite (`raw_sqlite.rs`) with the same durability, each side in files of its
//! own in `--sqlite-dir`, created for the run and removed after it.
//!
//! - `sqlite-command-1`, `sqlite-command-8`: the command scenarios (`command.rs`);
//! - `sqlite-load-10k`, `sqlite-fold-all`, `sqlite-fold-1m`: the reads (`reads.rs`); `sqlite-fold-1m` adds each
//!   side's peak resident memory over a fold of 1,000,000 events.

mod command;
mod reads;

use std::sync::Arc;

use annals::EventStore;
use annals_sqlite::SqliteStore;
use anyhow::Context as _;

use crate::domain::nth_event;
use crate::raw_sqlite::{self, ScratchFile};
use crate::settings::Settings;

pub(crate) use command::run as commands;
pub(crate) use reads::{fold_all, fold_million, load};

/// Events per batch while filling.
const FILL_BATCH: usize = 1_000;

/// A migrated Annals store with the default settings in the scratch file `file`.
async fn open_store(file: &ScratchFile) -> anyhow::Result<SqliteStore> {
    let store = SqliteStore::open(file.path())
        .await
        .context("cannot open the Annals SQLite store")?;
    store.migrate().await?;
    Ok(store)
}

/// Both sides of a read scenario, filled with the same events.
pub(crate) struct Filled {
    /// The Annals store.
    pub(crate) store: Arc<dyn EventStore>,
    /// The same store, for closing it.
    sqlite: SqliteStore,
    /// The baseline's readers.
    pub(crate) pool: sqlx::SqlitePool,
    _files: (ScratchFile, ScratchFile),
}

impl Filled {
    /// Creates both files in `settings.sqlite_dir` and writes `per_stream` events to each of `streams` on both
    /// sides (not measured).
    pub(crate) async fn new(
        settings: &Settings,
        streams: &[&str],
        per_stream: usize,
    ) -> anyhow::Result<Self> {
        let annals_file = ScratchFile::new(&settings.sqlite_dir, "annals");
        let raw_file = ScratchFile::new(&settings.sqlite_dir, "raw");
        let sqlite = open_store(&annals_file).await?;
        let store: Arc<dyn EventStore> = Arc::new(sqlite.clone());
        crate::scenarios::fill::annals(store.as_ref(), streams, per_stream).await?;
        let pool = raw_sqlite::pool(raw_file.path(), 2).await?;
        let mut conn = pool.acquire().await?;
        let mut n = 0;
        for stream in streams {
            let mut version = 0;
            while version < per_stream {
                let take = FILL_BATCH.min(per_stream - version);
                let events: Vec<_> = (n..n + take).map(nth_event).collect();
                raw_sqlite::insert_batch(&mut conn, stream, i64::try_from(version)?, &events)
                    .await?;
                version += take;
                n += take;
            }
        }
        drop(conn);
        Ok(Self {
            store,
            sqlite,
            pool,
            _files: (annals_file, raw_file),
        })
    }

    /// Closes both sides' connections (the files go when this is dropped).
    pub(crate) async fn close(self) {
        self.sqlite.close().await;
        self.pool.close().await;
    }
}
