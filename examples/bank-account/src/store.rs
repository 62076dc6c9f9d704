//! The event store behind the service, and a store that appends inside a transaction of its own so that a
//! request's events commit together with the request's idempotency key.

use std::time::Duration;

use annals::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, async_trait,
};
use annals_postgres::PostgresStore;
use sqlx::{Postgres, Transaction};
use tokio::sync::Mutex;

/// Reads through the store's pool; appends inside a transaction it begins and keeps open, so the caller can add
/// its own rows and commit (or drop it to roll back) after the command succeeded.
pub(crate) struct TransactionalStore {
    store: PostgresStore,
    transaction: Mutex<Option<Transaction<'static, Postgres>>>,
}

impl TransactionalStore {
    pub(crate) fn new(store: PostgresStore) -> Self {
        Self {
            store,
            transaction: Mutex::new(None),
        }
    }

    /// The transaction holding the appended events, if an append succeeded.
    pub(crate) async fn take_transaction(&self) -> Option<Transaction<'static, Postgres>> {
        self.transaction.lock().await.take()
    }
}

#[async_trait]
impl EventStore for TransactionalStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        let mut held = self.transaction.lock().await;
        let mut transaction = match held.take() {
            Some(transaction) => transaction,
            None => self
                .store
                .pool()
                .begin()
                .await
                .map_err(|e| annals::Error::Unavailable {
                    operation: "append",
                    source: Box::new(e),
                })?,
        };
        // On failure the transaction is dropped, which rolls it back: nothing of this request is kept.
        let result = self
            .store
            .append_in(&mut transaction, stream, expected, events)
            .await?;
        *held = Some(transaction);
        Ok(result)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_all(after, limit).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.store.head().await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.store.wait_for_events(after, timeout).await
    }
}
