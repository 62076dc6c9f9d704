//! [`PostgresStore::transaction`]: a closure run in a fresh [`UnitOfWork`], committed when it succeeds, and run
//! again from the start (bounded, backed off) when the unit lost a race.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use annals::RetryPolicy;

use crate::store::PostgresStore;
use crate::unit_of_work::UnitOfWork;

impl PostgresStore {
    /// Runs `work` in a fresh [`UnitOfWork`] and commits it. When the unit lost a race — an append conflicted
    /// (and the closure gave up or ignored it), a deadlock, a serialization failure, a connection lost before the
    /// commit — everything is rolled back and `work` runs again from the start in a new unit, after a short
    /// jittered pause, at most [`transaction_retries`](PostgresStore::with_transaction_retries) more times. A
    /// failure of any other kind (a domain refusal, a permanent store error) rolls back and is returned at once.
    ///
    /// `work` must do everything through the unit it is given (hand it to [`Repository`](annals::Repository)s),
    /// so that a second run starts from a clean slate; side effects outside the database should wait until this
    /// returns.
    ///
    /// ```no_run
    /// # use annals::{Aggregate, CommandError, Repository, StreamId};
    /// # async fn demo<A: Aggregate>(store: annals_postgres::PostgresStore, from: StreamId, to: StreamId,
    /// #     withdraw: A::Command, deposit: A::Command) -> Result<(), CommandError<A::Error>>
    /// # where A::Command: Clone + Send + Sync, A::Error: Send {
    /// store
    ///     .transaction(|unit| {
    ///         let (from, to, withdraw, deposit) = (from.clone(), to.clone(), withdraw.clone(), deposit.clone());
    ///         async move {
    ///             let accounts = Repository::<A, _>::new(unit);
    ///             accounts.execute(&from, &withdraw).await?;
    ///             accounts.execute(&to, &deposit).await?;
    ///             Ok(())
    ///         }
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    /// `work`'s own error when it fails and the unit may not succeed if run again, or when the retries ran out;
    /// the commit's error ([`annals::Error::UnitAborted`], or [`annals::Error::Unavailable`] when the commit's
    /// outcome is unknown — never run again automatically) converted into `E`.
    pub async fn transaction<T, E, F, Fut>(&self, mut work: F) -> Result<T, E>
    where
        F: FnMut(Arc<UnitOfWork>) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
        T: Send,
        E: From<annals::Error> + Send,
    {
        let retries = self.inner.config.transaction_retries;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let unit = Arc::new(self.unit_of_work());
            let outcome = work(unit.clone()).await;
            let last_try = attempt > retries;
            match outcome {
                Ok(value) => match unit.commit().await {
                    Ok(()) => return Ok(value),
                    Err(error) => {
                        let again = unit.may_succeed_if_run_again().await;
                        unit.rollback().await;
                        if last_try || !again {
                            return Err(error.into());
                        }
                    }
                },
                Err(error) => {
                    let again = unit.may_succeed_if_run_again().await;
                    unit.rollback().await;
                    if last_try || !again {
                        return Err(error);
                    }
                }
            }
            tracing::debug!(
                schema = %self.schema(),
                attempt,
                "unit of work lost a race; running it again"
            );
            tokio::time::sleep(RACE_PAUSES.pause(attempt - 1)).await;
        }
    }
}

/// The pauses before running a unit again, growing with the attempt (at most about 26 ms), so that units that
/// keep colliding spread out; how many runs there are is the store's `transaction_retries`.
const RACE_PAUSES: RetryPolicy =
    RetryPolicy::new(Duration::from_micros(800), Duration::from_micros(25_600), 0);
