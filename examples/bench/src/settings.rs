//! The settings every scenario reads, and how the Annals side gets its store.

use std::sync::Arc;

use annals::EventStore;
use sqlx::PgPool;

use crate::harness::Scratch;

/// Which store the Annals side of each scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreKind {
    /// `annals_postgres::PostgresStore` in a fresh schema (the real comparison).
    Postgres,
    /// `annals_memory::MemoryStore`: shows the framework's own overhead, and checks the harness without the
    /// PostgreSQL store.
    Memory,
}

/// The run's settings, shared by every scenario.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) database_url: String,
    pub(crate) store: StoreKind,
    pub(crate) runs: usize,
    pub(crate) commands: Option<usize>,
    pub(crate) events: Option<usize>,
    pub(crate) page_size: usize,
    pub(crate) notify: bool,
    pub(crate) sides: crate::harness::Sides,
    /// The largest size of the growth curves' global fold and rebuild.
    pub(crate) growth_max: usize,
    /// Where the SQLite scenarios create their files.
    pub(crate) sqlite_dir: std::path::PathBuf,
}

impl Settings {
    /// The Annals store for one run, writing into `scratch` (migrated, empty).
    pub(crate) async fn annals_store(
        &self,
        pool: &PgPool,
        scratch: &Scratch,
    ) -> anyhow::Result<Arc<dyn EventStore>> {
        match self.store {
            StoreKind::Memory => Ok(Arc::new(annals_memory::MemoryStore::new())),
            StoreKind::Postgres => {
                let store = annals_postgres::PostgresStore::from_pool(pool.clone())
                    .with_schema(scratch.name())?
                    .with_notify(self.notify);
                store.migrate().await?;
                Ok(Arc::new(store))
            }
        }
    }

    /// [`annals_store`](Settings::annals_store) with group commit on the PostgreSQL store (the memory store has
    /// no commits to group and is returned as it is).
    pub(crate) async fn annals_group_store(
        &self,
        pool: &PgPool,
        scratch: &Scratch,
    ) -> anyhow::Result<Arc<dyn EventStore>> {
        match self.store {
            StoreKind::Memory => self.annals_store(pool, scratch).await,
            StoreKind::Postgres => {
                let store = annals_postgres::PostgresStore::from_pool(pool.clone())
                    .with_schema(scratch.name())?
                    .with_notify(self.notify);
                store.migrate().await?;
                Ok(Arc::new(annals_postgres::GroupCommitStore::new(
                    store,
                    annals_postgres::GroupCommit::default(),
                )))
            }
        }
    }
}
