//! [`UnitOfWork`]: an [`EventStore`] whose appends go into one open transaction, so that rows of the caller's
//! own (an idempotency key, an outbox message) commit or roll back together with the events.

use std::time::Duration;

use annals::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, async_trait,
};
use sqlx::{Postgres, Transaction};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::failure::store_error;
use crate::store::PostgresStore;

/// One transaction's worth of appends, behind the [`EventStore`] trait: hand it to a
/// [`Repository`](annals::Repository) and every append the repository makes joins the same transaction, which
/// begins at the first append (or at [`transaction`](UnitOfWork::transaction)). Reads go through the store's
/// pool and see committed events only. Nothing is visible to others until [`commit`](UnitOfWork::commit);
/// dropping the unit (or [`rollback`](UnitOfWork::rollback)) discards everything, and so does a failed append
/// (a conflict included), so that the repository's retry starts from a clean transaction.
///
/// ```no_run
/// # use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
/// # async fn demo(store: annals_postgres::PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
/// let unit = store.unit_of_work();
/// let stream = StreamId::new("order-7")?;
/// unit.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("OrderPlaced", serde_json::json!({}))])
///     .await?;
/// sqlx::query("INSERT INTO outbox (topic) VALUES ('orders')")
///     .execute(&mut **unit.transaction().await?)
///     .await?;
/// unit.commit().await?;
/// # Ok(())
/// # }
/// ```
pub struct UnitOfWork {
    store: PostgresStore,
    transaction: Arc<Mutex<Option<Transaction<'static, Postgres>>>>,
    appended: std::sync::atomic::AtomicBool,
}

impl PostgresStore {
    /// A new [`UnitOfWork`] on this store.
    pub fn unit_of_work(&self) -> UnitOfWork {
        UnitOfWork {
            store: self.clone(),
            transaction: Arc::new(Mutex::new(None)),
            appended: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl UnitOfWork {
    /// The unit's transaction, begun now if nothing began it yet, for statements of the caller's own.
    ///
    /// # Errors
    /// [`annals::Error::Unavailable`] when no connection could be had or `BEGIN` failed.
    pub async fn transaction(
        &self,
    ) -> annals::Result<
        OwnedMappedMutexGuard<
            Option<Transaction<'static, Postgres>>,
            Transaction<'static, Postgres>,
        >,
    > {
        let mut held = self.transaction.clone().lock_owned().await;
        if held.is_none() {
            let begun = self
                .store
                .pool()
                .begin()
                .await
                .map_err(|e| store_error("begin", e))?;
            *held = Some(begun);
        }
        OwnedMutexGuard::try_map(held, Option::as_mut).map_err(|_| annals::Error::Backend {
            operation: "begin",
            source: "the unit of work lost its transaction".into(),
        })
    }

    /// Commits everything appended and written through the unit, then wakes this process's waiters at once
    /// (others learn of it through the notification sent inside the transaction). Does nothing when nothing
    /// began a transaction.
    ///
    /// # Errors
    /// [`annals::Error::Unavailable`] when the commit could not be confirmed: the events may or may not be stored;
    /// retrying the command with the same event ids is safe.
    pub async fn commit(&self) -> annals::Result<()> {
        let Some(transaction) = self.transaction.lock().await.take() else {
            return Ok(());
        };
        transaction
            .commit()
            .await
            .map_err(|e| store_error("commit", e))?;
        if self.appended.load(std::sync::atomic::Ordering::Acquire) {
            // `appended(false)` wakes local waiters without another NOTIFY: the transaction sent one.
            self.store.appended(false);
        }
        Ok(())
    }

    /// Discards everything appended and written through the unit.
    pub async fn rollback(&self) {
        // Dropping a transaction rolls it back.
        drop(self.transaction.lock().await.take());
    }
}

#[async_trait]
impl EventStore for UnitOfWork {
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
                .map_err(|e| store_error("append", e))?,
        };
        // On failure the transaction is dropped, which rolls the whole unit back, so that a retry starts from a
        // clean transaction.
        let result = self
            .store
            .append_in(&mut transaction, stream, expected, events)
            .await?;
        *held = Some(transaction);
        self.appended
            .store(true, std::sync::atomic::Ordering::Release);
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
