//! The producer: deposits appended to the bank's store, each commit's instant kept by position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_postgres::PostgresStore;

/// Accounts the deposits are spread over (so the relay's one-unacknowledged-message-per-stream rule is not
/// what is measured).
const ACCOUNTS: u64 = 1_000;

/// Appends deposits and remembers when each committed.
#[derive(Clone)]
pub(crate) struct Producer {
    store: PostgresStore,
    next: Arc<AtomicU64>,
    /// Commit instants by global position.
    pub(crate) commits: Arc<Mutex<HashMap<u64, Instant>>>,
}

impl Producer {
    pub(crate) fn new(store: PostgresStore) -> Self {
        Self {
            store,
            next: Arc::default(),
            commits: Arc::default(),
        }
    }

    /// Appends `events` deposits to one account (one transaction); returns the first position.
    async fn deposit(&self, events: u64) -> anyhow::Result<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let stream = StreamId::new(format!("account-b{}", n % ACCOUNTS))?;
        let batch = (0..events)
            .map(|i| {
                NewEvent::new(
                    "MoneyDeposited",
                    serde_json::json!({ "amount": n * 100 + i + 1 }),
                )
            })
            .collect();
        let appended = self
            .store
            .append(&stream, ExpectedVersion::Any, batch)
            .await?;
        let now = Instant::now();
        let mut commits = self
            .commits
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        for p in appended.first_position.get()..=appended.last_position.get() {
            commits.insert(p, now);
        }
        Ok(appended.first_position.get())
    }

    /// Offers `rate` single deposits a second for `seconds`, each started on its schedule (open loop); returns
    /// the positions appended.
    pub(crate) async fn offered(&self, rate: u32, seconds: u64) -> anyhow::Result<Vec<u64>> {
        let total = u64::from(rate) * seconds;
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..total {
            let at = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            tokio::time::sleep_until(at).await;
            let me = self.clone();
            tasks.spawn(async move { me.deposit(1).await });
        }
        let mut positions = Vec::new();
        while let Some(done) = tasks.join_next().await {
            positions.push(done??);
        }
        Ok(positions)
    }

    /// Appends as fast as `writers` concurrent writers can, `per_append` events per append, until `events`
    /// events or `duration` (whichever first); returns how many events were appended.
    pub(crate) async fn closed(
        &self,
        writers: usize,
        per_append: u64,
        events: Option<u64>,
        duration: Option<Duration>,
    ) -> anyhow::Result<u64> {
        let done = Arc::new(AtomicU64::new(0));
        let appended = Arc::new(AtomicU64::new(0));
        let deadline = duration.map(|d| Instant::now() + d);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..writers {
            let (me, done, appended) = (self.clone(), Arc::clone(&done), Arc::clone(&appended));
            tasks.spawn(async move {
                loop {
                    if events.is_some_and(|e| done.fetch_add(per_append, Ordering::Relaxed) >= e)
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return anyhow::Ok(());
                    }
                    me.deposit(per_append).await?;
                    appended.fetch_add(per_append, Ordering::Relaxed);
                }
            });
        }
        while let Some(finished) = tasks.join_next().await {
            finished??;
        }
        Ok(appended.load(Ordering::Relaxed))
    }
}
