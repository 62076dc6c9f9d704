//! A unit of work commits everything done through it or fails loudly: reads see its own uncommitted events, a
//! conflict never silently drops earlier work, and `PostgresStore::transaction` runs a whole unit again when it
//! lost a race.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use annals::{
    Aggregate, AppendResult, CommandError, Event, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, Repository, StreamId, StreamVersion, async_trait,
};
use annals_postgres::{PostgresStore, UnitOfWork};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::support::{big_pool, store, stream};

#[derive(Debug, Default)]
struct Account {
    balance: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    #[serde(rename = "Deposited")]
    Deposited { amount: u64 },
    #[serde(rename = "Withdrawn")]
    Withdrawn { amount: u64 },
}
impl Event for AccountEvent {}

#[derive(Debug, Clone, Copy)]
enum Command {
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
struct InsufficientFunds;

impl Aggregate for Account {
    type Command = Command;
    type Event = AccountEvent;
    type Error = InsufficientFunds;

    fn decide(&self, command: &Command) -> Result<Vec<AccountEvent>, InsufficientFunds> {
        match *command {
            Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            Command::Withdraw(amount) if amount <= self.balance => {
                Ok(vec![AccountEvent::Withdrawn { amount }])
            }
            Command::Withdraw(_) => Err(InsufficientFunds),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

async fn balance(store: &PostgresStore, id: &StreamId) -> u64 {
    Repository::<Account, _>::new(store.clone())
        .load(id)
        .await
        .unwrap()
        .state
        .balance
}

#[sqlx::test(migrations = false)]
async fn two_commands_on_one_stream_in_one_unit_both_commit(pool: PgPool) {
    let store = store(pool).await;
    let id = stream("account-1");
    let unit = Arc::new(store.unit_of_work());
    let accounts = Repository::<Account, _>::new(unit.clone()).with_max_retries(0);
    accounts.execute(&id, &Command::Deposit(100)).await.unwrap();
    let second = accounts.execute(&id, &Command::Withdraw(30)).await.unwrap();
    assert_eq!(
        second.version,
        StreamVersion(2),
        "the second command saw the first"
    );
    assert_eq!(second.state.balance, 70);
    assert!(
        store.load_stream(&id).await.unwrap().is_empty(),
        "nothing is visible before the commit"
    );
    unit.commit().await.unwrap();
    assert_eq!(store.load_stream(&id).await.unwrap().len(), 2);
    assert_eq!(balance(&store, &id).await, 70);
}

#[sqlx::test(migrations = false)]
async fn a_conflict_mid_unit_makes_commit_fail_and_keeps_nothing(pool: PgPool) {
    let store = store(pool).await;
    let (a, b) = (stream("account-a"), stream("account-b"));
    let unit = store.unit_of_work();
    unit.append(&a, ExpectedVersion::NoStream, vec![deposit(5)])
        .await
        .unwrap();
    let seen = unit.load_stream(&b).await.unwrap().len() as u64;
    // A concurrent writer gets in between the unit's read of b and its append to b.
    store
        .append(&b, ExpectedVersion::NoStream, vec![deposit(1)])
        .await
        .unwrap();
    let conflict = unit
        .append(
            &b,
            ExpectedVersion::Exact(StreamVersion(seen)),
            vec![deposit(2)],
        )
        .await;
    assert!(
        matches!(conflict, Err(annals::Error::Conflict { .. })),
        "{conflict:?}"
    );
    // Ignoring the failed append does not let the rest commit on its own.
    match unit.commit().await {
        Err(annals::Error::UnitAborted { first, retryable }) => {
            assert!(first.contains("account-b"), "{first}");
            assert!(retryable, "a conflict is worth running the unit again");
        }
        other => panic!("commit must refuse a unit with a failed append, got {other:?}"),
    }
    assert!(
        matches!(
            unit.append(&a, ExpectedVersion::Any, vec![deposit(1)])
                .await,
            Err(annals::Error::UnitAborted { .. })
        ),
        "every later operation is refused too"
    );
    unit.rollback().await;
    assert!(
        store.load_stream(&a).await.unwrap().is_empty(),
        "nothing of the unit was kept"
    );
    assert_eq!(store.load_stream(&b).await.unwrap().len(), 1);
}

fn deposit(amount: u64) -> NewEvent {
    NewEvent::from_event(&AccountEvent::Deposited { amount }).unwrap()
}

/// A unit that lets a concurrent writer deposit into `victim` right before the unit's first append to it, so that
/// append conflicts.
struct Interfering {
    unit: Arc<UnitOfWork>,
    store: PostgresStore,
    victim: StreamId,
    done: AtomicBool,
}

#[async_trait]
impl EventStore for Interfering {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        if *stream == self.victim && !self.done.swap(true, Ordering::SeqCst) {
            self.store
                .append(stream, ExpectedVersion::Any, vec![deposit(1)])
                .await?;
        }
        self.unit.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.unit.read_stream(stream, from, limit).await
    }
    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.unit.visit_stream(stream, visit).await
    }
    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.unit.read_all(after, limit).await
    }
    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.unit.visit_all(after, visit).await
    }
    async fn head(&self) -> annals::Result<Position> {
        self.unit.head().await
    }
    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.unit.wait_for_events(after, timeout).await
    }
}

#[sqlx::test(migrations = false)]
async fn a_repository_retries_a_conflict_inside_the_unit_without_dropping_earlier_work(
    pool: PgPool,
) {
    let store = store(pool).await;
    let (a, b) = (stream("account-a"), stream("account-b"));
    store
        .append(&a, ExpectedVersion::NoStream, vec![deposit(100)])
        .await
        .unwrap();
    let unit = Arc::new(store.unit_of_work());
    let interfering = Interfering {
        unit: unit.clone(),
        store: store.clone(),
        victim: b.clone(),
        done: AtomicBool::new(false),
    };
    let accounts = Repository::<Account, _>::new(interfering);
    accounts.execute(&a, &Command::Withdraw(100)).await.unwrap();
    let deposited = accounts.execute(&b, &Command::Deposit(100)).await.unwrap();
    assert_eq!(
        deposited.retries, 1,
        "the deposit lost one race and was decided again"
    );
    unit.commit().await.unwrap();
    assert_eq!(balance(&store, &a).await, 0, "the withdrawal was kept");
    assert_eq!(
        balance(&store, &b).await,
        101,
        "the concurrent deposit and ours"
    );
}

#[sqlx::test(migrations = false)]
async fn transaction_runs_the_whole_unit_again_after_a_conflict(pool: PgPool) {
    let store = store(pool).await;
    let (a, b) = (stream("account-a"), stream("account-b"));
    let attempts = AtomicU32::new(0);
    let outcome: Result<u64, annals::Error> = store
        .transaction(|unit| {
            let (store, a, b, attempts) = (store.clone(), a.clone(), b.clone(), &attempts);
            async move {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                unit.append(&a, ExpectedVersion::Any, vec![deposit(10)])
                    .await?;
                let seen = unit.load_stream(&b).await?.len() as u64;
                if attempt == 1 {
                    store
                        .append(&b, ExpectedVersion::Any, vec![deposit(1)])
                        .await?;
                }
                unit.append(
                    &b,
                    ExpectedVersion::Exact(StreamVersion(seen)),
                    vec![deposit(10)],
                )
                .await?;
                Ok(seen)
            }
        })
        .await;
    assert_eq!(
        outcome.unwrap(),
        1,
        "the second run saw the concurrent deposit"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(
        balance(&store, &a).await,
        10,
        "the first run's deposit was not kept"
    );
    assert_eq!(balance(&store, &b).await, 11);
}

#[sqlx::test(migrations = false)]
async fn transaction_does_not_run_again_after_a_refusal(pool: PgPool) {
    let store = store(pool).await;
    let a = stream("account-a");
    let attempts = AtomicU32::new(0);
    let outcome: Result<(), CommandError<InsufficientFunds>> = store
        .transaction(|unit| {
            let (a, attempts) = (a.clone(), &attempts);
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                let accounts = Repository::<Account, _>::new(unit);
                accounts.execute(&a, &Command::Deposit(5)).await?;
                accounts.execute(&a, &Command::Withdraw(6)).await?;
                Ok(())
            }
        })
        .await;
    assert!(
        matches!(outcome, Err(CommandError::Rejected(InsufficientFunds))),
        "{outcome:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(
        store.load_stream(&a).await.unwrap().is_empty(),
        "the deposit was rolled back"
    );
}

/// 16 tasks move money between 4 accounts, each transfer one unit (withdraw, then deposit), for a few seconds.
/// Units deadlock (A->B against B->A) and conflict all the time; the total never changes.
#[sqlx::test(migrations = false)]
async fn concurrent_transfers_in_units_conserve_the_total(
    _options: sqlx::postgres::PgPoolOptions,
    options: PgConnectOptions,
) {
    const ACCOUNTS: u64 = 4;
    const TASKS: u64 = 16;
    const INITIAL: u64 = 1_000;
    // Deadlocks are found after deadlock_timeout (1 s by default); a short one keeps the test quick.
    let pool = big_pool(options.options([("deadlock_timeout", "20ms")]), 24).await;
    let store = store(pool.clone()).await;
    let ids: Vec<StreamId> = (0..ACCOUNTS)
        .map(|n| stream(&format!("account-{n}")))
        .collect();
    for id in &ids {
        store
            .append(id, ExpectedVersion::NoStream, vec![deposit(INITIAL)])
            .await
            .unwrap();
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let (done, refused, gave_up) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, ids) = (store.clone(), ids.clone());
            let (done, refused, gave_up) = (done.clone(), refused.clone(), gave_up.clone());
            tokio::spawn(async move {
                let mut n = task;
                while tokio::time::Instant::now() < until {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let from = ids[(n >> 33) as usize % ids.len()].clone();
                    let to = ids[((n >> 40) as usize + 1 + (n >> 33) as usize) % ids.len()].clone();
                    if from == to {
                        continue;
                    }
                    let amount = 1 + (n >> 50) % 300;
                    let outcome: Result<(), CommandError<InsufficientFunds>> = store
                        .transaction(|unit| {
                            let (from, to) = (from.clone(), to.clone());
                            async move {
                                let accounts = Repository::<Account, _>::new(unit);
                                accounts.execute(&from, &Command::Withdraw(amount)).await?;
                                accounts.execute(&to, &Command::Deposit(amount)).await?;
                                Ok(())
                            }
                        })
                        .await;
                    match outcome {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(CommandError::Rejected(_)) => refused.fetch_add(1, Ordering::Relaxed),
                        // Contention can outlast the retries: a loud failure, never half a transfer.
                        Err(
                            CommandError::Conflict { .. }
                            | CommandError::Store(annals::Error::UnitAborted { .. }),
                        ) => gave_up.fetch_add(1, Ordering::Relaxed),
                        Err(other) => panic!("transfer failed: {other}"),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut total = 0;
    let mut events = 0;
    for id in &ids {
        total += balance(&store, id).await;
        events += store.load_stream(id).await.unwrap().len() as u64;
    }
    let done = done.load(Ordering::Relaxed);
    assert!(done > 0, "some transfers went through");
    assert_eq!(
        total,
        ACCOUNTS * INITIAL,
        "money is neither created nor destroyed"
    );
    assert_eq!(
        events,
        ACCOUNTS + 2 * done,
        "each transfer stored exactly its two events"
    );
    tracing::info!(
        done,
        refused = refused.load(Ordering::Relaxed),
        gave_up = gave_up.load(Ordering::Relaxed),
        "transfers"
    );
    pool.close().await;
}
