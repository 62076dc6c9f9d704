//! `transfer`: completed transfers per second between bank accounts, 8 concurrent clients, on PostgreSQL.
//!
//! - Annals side: each client requests transfers (`TransferRequested`, through a repository of transfers); the
//!   bank's transfer process manager, driven by the projections runner, debits the source and credits the
//!   target (two account commands and three events of its own per transfer). Timed until every transfer has
//!   completed. The process manager's checkpoint lives in the projections' memory backend; its instances,
//!   commands and timers table are in PostgreSQL.
//! - Baseline: each client issues the same two account commands (debit, then credit) itself, in sequence,
//!   through a repository of accounts on the same store.
//!
//! The ratio is the process manager's overhead: what a transfer that always ends (and survives crashes) costs
//! beside two commands a client sends itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::{EventStore, Repository};
use annals_process::{Process, Timers};
use annals_projections::Projections;
use anyhow::Context as _;
use bank_account::account::{Account, AccountCommand, AccountId};
use bank_account::transfer::{Transfer, TransferCommand, TransferId};
use bank_account::transfer_process::{AccountCommands, LegKind, TransferLeg, TransferProcess};
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::harness::{self, Phase, Scratch, Workload};
use crate::settings::{Settings, StoreKind};

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Accounts the transfers run between.
const ACCOUNTS: usize = 200;

/// The scenario.
pub(crate) struct Transfers {
    settings: Settings,
    transfers: usize,
    pool: PgPool,
}

/// Runs the scenario and returns its result line.
pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let transfers = settings.commands.unwrap_or(2_000);
    let scenario = Transfers {
        settings: settings.clone(),
        transfers,
        // Clients, the process manager's runner and its read-ahead, the notification listener.
        pool: harness::pool(&settings.database_url, 24).await?.pool,
    };
    eprintln!("{name}: {CLIENTS} clients, {transfers} transfers among {ACCOUNTS} accounts");
    let timings = harness::measure(name, &scenario, settings.runs, &settings.sides).await?;
    Ok(harness::rate_line(name, transfers, &timings))
}

/// The store of one run, and timers beside it.
async fn store(
    settings: &Settings,
    pool: &PgPool,
    scratch: &Scratch,
) -> anyhow::Result<(Arc<dyn EventStore>, Timers)> {
    match settings.store {
        StoreKind::Memory => {
            let store = annals_memory::MemoryStore::new();
            Ok((Arc::new(store), Timers::memory()))
        }
        StoreKind::Postgres => {
            let store = annals_postgres::PostgresStore::from_pool(pool.clone())
                .with_schema(scratch.name())?
                .with_notify(settings.notify);
            store.migrate().await?;
            let timers = Timers::postgres(&store);
            Ok((Arc::new(store), timers))
        }
    }
}

fn account(n: usize) -> anyhow::Result<AccountId> {
    Ok(AccountId::new(format!("a{n}"))?)
}

/// Opens the accounts with enough money that no transfer is refused.
async fn open_accounts(store: &Arc<dyn EventStore>) -> anyhow::Result<()> {
    let accounts = Repository::<Account>::new(Arc::clone(store));
    for n in 0..ACCOUNTS {
        let id = account(n)?;
        accounts
            .execute(
                id.stream(),
                &AccountCommand::Open {
                    owner: "Owner".into(),
                },
            )
            .await?;
        accounts
            .execute(
                id.stream(),
                &AccountCommand::Deposit {
                    amount: 1_000_000_000,
                },
            )
            .await?;
    }
    Ok(())
}

/// Transfer `i`: from account `i % ACCOUNTS` to the next one.
fn ends(i: usize) -> anyhow::Result<(AccountId, AccountId)> {
    Ok((account(i % ACCOUNTS)?, account((i + 1) % ACCOUNTS)?))
}

/// Runs `CLIENTS` tasks sharing the transfers `0..count`, each calling `one(i)`.
async fn clients<F, Fut>(count: usize, one: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..CLIENTS {
        let (next, one) = (next.clone(), one.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                one(i).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

impl Workload for Transfers {
    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration> {
        let count = phase.scale(self.transfers);
        Scratch::create(&self.pool, "transfer_pm")
            .await?
            .run(async |scratch| {
                let (store, timers) = store(&self.settings, &self.pool, scratch).await?;
                open_accounts(&store).await?;
                let sender = AccountCommands::new(Arc::clone(&store), Default::default());
                let process = Process::new(TransferProcess, Arc::clone(&store), sender, timers);
                let projections = process.register(
                    Projections::memory(Arc::clone(&store)),
                    annals_process::default_options(),
                );
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let runner = tokio::spawn({
                    let projections = projections.clone();
                    async move {
                        projections
                            .run(async {
                                let _ = stopped.await;
                            })
                            .await
                    }
                });
                let started = Instant::now();
                let transfers = Repository::<Transfer>::new(Arc::clone(&store));
                clients(count, move |i| {
                    let transfers = transfers.clone();
                    async move {
                        let (from, to) = ends(i)?;
                        let id = TransferId::new(format!("t{i}"))?;
                        let request = TransferCommand::Request {
                            from,
                            to,
                            amount: 1,
                            execute_at: None,
                        };
                        transfers.execute(id.stream(), &request).await?;
                        Ok(())
                    }
                })
                .await?;
                // Completed when the process has handled the whole log and no instance is open.
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    let status = process.status(&projections).await?;
                    let head = store.head().await?;
                    if status.open_instances == 0 && status.checkpoint >= head {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "transfers did not complete: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let elapsed = started.elapsed();
                let _ = stop.send(());
                runner.await.context("the runner panicked")??;
                let last = Repository::<Transfer>::new(Arc::clone(&store))
                    .load(TransferId::new(format!("t{}", count - 1))?.stream())
                    .await?;
                anyhow::ensure!(
                    last.state.status == bank_account::transfer::TransferStatus::Completed,
                    "the last transfer did not complete: {:?}",
                    last.state
                );
                Ok(elapsed)
            })
            .await
    }

    async fn raw(&self, _index: usize, phase: Phase) -> anyhow::Result<Duration> {
        let count = phase.scale(self.transfers);
        Scratch::create(&self.pool, "transfer_direct")
            .await?
            .run(async |scratch| {
                let (store, _) = store(&self.settings, &self.pool, scratch).await?;
                open_accounts(&store).await?;
                let accounts = Repository::<Account>::new(Arc::clone(&store));
                let started = Instant::now();
                clients(count, move |i| {
                    let accounts = accounts.clone();
                    async move {
                        let (from, to) = ends(i)?;
                        let leg = |kind, counterparty: &AccountId| {
                            AccountCommand::Transfer(TransferLeg {
                                kind,
                                transfer: format!("t{i}"),
                                counterparty: counterparty.to_string(),
                                amount: 1,
                            })
                        };
                        accounts
                            .execute(from.stream(), &leg(LegKind::Out, &to))
                            .await?;
                        accounts
                            .execute(to.stream(), &leg(LegKind::In, &from))
                            .await?;
                        Ok(())
                    }
                })
                .await?;
                Ok(started.elapsed())
            })
            .await
    }
}
