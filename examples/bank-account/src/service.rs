//! Assembling the service: the store (embedded SQLite by default, memory, or PostgreSQL), the read models, and
//! the HTTP server.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals::{DEFAULT_MAX_RETRIES, EventStore, StreamLocks};
use annals_memory::MemoryStore;
use annals_postgres::PostgresStore;
use annals_process::{Process, Timers};
use annals_projections::{Projections, Supervisor};
use annals_sqlite::SqliteStore;
use anyhow::Context;

use crate::api::{self, AppState};
use crate::read_models::{self, ReadModels};
use crate::transfer_process::{self as transfers, TransferProcess};

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "bank";

/// The data directory used when none is given: everything in one SQLite file inside it.
pub const DEFAULT_DATA_DIR: &str = "bank-data";

/// The file of the embedded store inside the data directory.
pub const DATA_FILE: &str = "bank.db";

/// Where the service keeps its events: PostgreSQL when a database URL is given; else the embedded SQLite store
/// in a data directory (the default); else (neither) the embedded memory store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `postgres://...`; `None` for an embedded store.
    pub database_url: Option<String>,
    /// The PostgreSQL schema of the events and command records; the read models live in `{schema}_projections`
    /// (bookkeeping) and `{schema}_rm_{name}` (one per read model).
    pub schema: String,
    /// Without a database URL: the directory of the SQLite file ([`DATA_FILE`]) holding events, command
    /// records, read models and timers; `None` for the memory store (nothing survives the process).
    pub data_dir: Option<PathBuf>,
}

impl StoreConfig {
    /// The embedded memory store.
    pub fn memory() -> Self {
        Self {
            database_url: None,
            schema: DEFAULT_SCHEMA.to_owned(),
            data_dir: None,
        }
    }

    /// The embedded SQLite store in `dir` (created if missing).
    pub fn sqlite(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: Some(dir.into()),
            ..Self::memory()
        }
    }

    /// PostgreSQL at `url`, in the default schema.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self {
            database_url: Some(url.into()),
            ..Self::memory()
        }
    }

    /// What the configuration stores in, for logs: `postgres`, `sqlite` or `memory`.
    pub fn kind(&self) -> &'static str {
        match (&self.database_url, &self.data_dir) {
            (Some(_), _) => "postgres",
            (None, Some(_)) => "sqlite",
            (None, None) => "memory",
        }
    }
}

/// The store and the projections of one configuration.
struct Backend {
    pool: Option<sqlx::PgPool>,
    file: Option<SqliteStore>,
    store: Arc<dyn EventStore>,
    projections: Projections,
    transfers: Process<TransferProcess>,
    writers: StreamLocks,
}

impl Backend {
    async fn connect(config: &StoreConfig) -> anyhow::Result<Self> {
        let writers = StreamLocks::default();
        if config.database_url.is_none()
            && let Some(dir) = &config.data_dir
        {
            return Self::sqlite(dir, writers).await;
        }
        let Some(url) = &config.database_url else {
            let store = MemoryStore::new();
            let (transfers, projections) = transfers::wire(
                Arc::new(store.clone()),
                Timers::memory(),
                &writers,
                read_models::register(Projections::memory(store.clone())),
            );
            return Ok(Self {
                pool: None,
                file: None,
                projections,
                store: Arc::new(store),
                transfers,
                writers,
            });
        };
        let schema = &config.schema;
        check_schema(schema)?;
        let store = PostgresStore::connect(url).await?.with_schema(schema)?;
        store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate the event store in schema {schema:?}"))?;
        let projections = Projections::postgres_in(
            store.clone(),
            store.pool().clone(),
            &format!("{schema}_projections"),
            &format!("{schema}_rm_"),
        )?;
        let (transfers, projections) = transfers::wire(
            Arc::new(store.clone()),
            Timers::postgres(&store),
            &writers,
            read_models::register(projections),
        );
        projections
            .migrate()
            .await
            .context("cannot create the projections' tables")?;
        Ok(Self {
            pool: Some(store.pool().clone()),
            file: None,
            store: Arc::new(store),
            projections,
            transfers,
            writers,
        })
    }
}

impl Backend {
    /// Everything in one SQLite file in `dir`: events, command records, read models, timers. Several processes
    /// may open it at once (`bank serve` and `bank projections ...`).
    async fn sqlite(dir: &Path, writers: StreamLocks) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let file = dir.join(DATA_FILE);
        let store = SqliteStore::open(&file).await?;
        store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate the event store {}", file.display()))?;
        let (transfers, projections) = transfers::wire(
            Arc::new(store.clone()),
            Timers::sqlite(&store),
            &writers,
            read_models::register(Projections::sqlite(store.clone())),
        );
        projections
            .migrate()
            .await
            .context("cannot create the projections' tables")?;
        Ok(Self {
            pool: None,
            file: Some(store.clone()),
            store: Arc::new(store),
            projections,
            transfers,
            writers,
        })
    }
}

/// The longest schema name: the projections' schemas `{schema}_projections` and `{schema}_rm_` may have at most
/// 20 characters.
const MAX_SCHEMA_LEN: usize = 8;

fn check_schema(schema: &str) -> anyhow::Result<()> {
    let plain = schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let starts_well = schema.starts_with(|c: char| c.is_ascii_lowercase());
    if schema.len() > MAX_SCHEMA_LEN || !plain || !starts_well {
        anyhow::bail!(
            "invalid schema {schema:?}: use 1 to {MAX_SCHEMA_LEN} lowercase ASCII letters, digits or '_', starting with a \
             letter (the read models live in `{{schema}}_projections` and `{{schema}}_rm_<name>`)"
        );
    }
    Ok(())
}

/// The application's projections on the configured store, for `bank projections ...`: the same registration
/// the service runs.
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn projections(config: &StoreConfig) -> anyhow::Result<Projections> {
    Ok(Backend::connect(config).await?.projections)
}

/// The service: its store, its read models and its routes.
#[derive(Clone)]
pub struct Service {
    state: AppState,
    projections: Projections,
    transfers: Process<TransferProcess>,
    pool: Option<sqlx::PgPool>,
    file: Option<SqliteStore>,
}

impl Service {
    /// Connects to the configured store, applying migrations on PostgreSQL. The read models start with
    /// [`serve`](Self::serve).
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn start(config: &StoreConfig) -> anyhow::Result<Self> {
        let backend = Backend::connect(config).await?;
        let read_models = ReadModels::new(&backend.projections)?;
        Ok(Self {
            state: AppState {
                store: backend.store,
                read_models,
                max_retries: DEFAULT_MAX_RETRIES,
                writers: backend.writers,
            },
            projections: backend.projections,
            transfers: backend.transfers,
            pool: backend.pool,
            file: backend.file,
        })
    }

    /// Closes the database connections once every other clone of the service is gone (after
    /// [`serve`](Self::serve) returned), so that the database can be dropped at once.
    pub async fn close(self) {
        let Self { pool, file, .. } = self;
        if let Some(pool) = pool {
            pool.close().await;
        }
        if let Some(file) = file {
            file.close().await;
        }
    }

    /// Sets how many times a command is decided again after losing a race before the request is answered with
    /// `409 conflict` (default [`DEFAULT_MAX_RETRIES`]).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.state.max_retries = max_retries;
        self
    }

    /// Sets how long a read with `?min_position=N` waits for the read model before answering
    /// `504 projection_lagging` (default [`DEFAULT_MAX_WAIT`](annals_projections::DEFAULT_MAX_WAIT), 5 s).
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        let read_models = &mut self.state.read_models;
        read_models.balances.set_max_wait(timeout);
        read_models.history.set_max_wait(timeout);
        self
    }

    /// The application's projections (to query their status or rebuild them in-process).
    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// The supervisor every runner of the service runs under (the read models', the transfer process's and its
    /// timers', and the event feed's relay in `bank serve`): a runner that ended on a transient failure (the
    /// database down longer than its retries) is started again; its state and restarts are here.
    pub fn supervisor(&self) -> &Supervisor {
        self.projections.supervisor()
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves HTTP on `listener` and runs the read models, the transfer process and its timers, each under the
    /// [`supervisor`](Self::supervisor), until `shutdown` completes; then lets in-flight requests finish and the
    /// projections commit their current batch.
    ///
    /// # Errors
    /// When the server fails or every projection stopped on an error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let runner = tokio::spawn({
            let projections = self.projections.clone();
            let stopped = signal(stopped.clone());
            async move { projections.run(stopped).await }
        });
        let timers = tokio::spawn({
            let transfers = self.transfers.clone();
            let supervisor = self.projections.supervisor().clone();
            let stopped = signal(stopped.clone());
            async move { transfers.run_timers_supervised(&supervisor, stopped).await }
        });
        let server = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal(stopped))
            .into_future();
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => {
                let _ = stop.send(true);
                served?;
            }
            () = shutdown => {
                let _ = stop.send(true);
                server.await?;
            }
        }
        runner.await.context("the projections runner panicked")??;
        timers.await.context("the transfer timers panicked")??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_must_leave_room_for_the_read_models() {
        for good in ["bank", "b", "tenant_1", "abcdefgh"] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in ["", "Bank", "1bank", "bank-1", "abcdefghi", "bänk"] {
            let error = check_schema(bad).unwrap_err().to_string();
            assert!(error.contains("invalid schema"), "{bad}: {error}");
        }
    }
}
