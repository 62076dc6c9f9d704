//! The transfer's legs at the library level, the process driven input by input: a leg sent twice (replayed
//! after a crash) moves money once, although the account keeps no record of the legs it applied; and a refund
//! the source refuses leaves the transfer holding the money, visibly, until an operator retries it, with the sum of
//! the balances and the money held constant at every step.

use std::sync::Arc;

use annals::{EventStore, Position, RecordedEvent, Repository, StreamLocks};
use annals_memory::MemoryStore;
use annals_process::{Process, Timers};
use bank_account::account::{Account, AccountCommand, AccountId, MAX_BALANCE};
use bank_account::transfer::{
    Transfer, TransferCommand, TransferError, TransferId, TransferStatus,
};
use bank_account::transfer_process::{AccountCommands, TransferProcess};

fn account(id: &str) -> AccountId {
    AccountId::new(id).unwrap()
}

async fn balance(store: &Arc<dyn EventStore>, id: &str) -> u64 {
    Repository::<Account, _>::new(Arc::clone(store))
        .load(account(id).stream())
        .await
        .unwrap()
        .state
        .balance
}

async fn run(store: &Arc<dyn EventStore>, id: &str, command: AccountCommand) {
    Repository::<Account, _>::new(Arc::clone(store))
        .execute(account(id).stream(), &command)
        .await
        .unwrap();
}

/// Every leg sent again (the process handled its inputs again after a crash, before its checkpoint): the money
/// moves once, recognised by the legs' command ids alone.
async fn leg_sent_twice(store: Arc<dyn EventStore>) {
    run(
        &store,
        "alice",
        AccountCommand::Open {
            owner: "Alice".into(),
        },
    )
    .await;
    run(&store, "alice", AccountCommand::Deposit { amount: 100 }).await;
    run(
        &store,
        "bob",
        AccountCommand::Open {
            owner: "Bob".into(),
        },
    )
    .await;
    request(&store, "t-1", "alice", "bob", 30).await;
    let sender = AccountCommands::new(Arc::clone(&store), StreamLocks::default());
    let process = Process::new(
        TransferProcess,
        Arc::clone(&store),
        sender,
        Timers::memory(),
    );
    let requested = store
        .read_all(Position::START, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "TransferRequested")
        .unwrap();
    for _ in 0..3 {
        process.handle_event(&requested).await.unwrap();
    }
    assert_eq!(
        balance(&store, "alice").await,
        70,
        "the debit sent three times moved money once"
    );
    let head = drive(&process, &store, Position::START).await;
    drive(&process, &store, head).await;
    assert_eq!(
        transfer(&store, "t-1").await.status,
        TransferStatus::Completed
    );
    // The whole log handled again: every leg sent again, nothing moves twice.
    drive(&process, &store, Position::START).await;
    assert_eq!(balance(&store, "alice").await, 70);
    assert_eq!(balance(&store, "bob").await, 30);
}

async fn request(store: &Arc<dyn EventStore>, id: &str, from: &str, to: &str, amount: u64) {
    Repository::<Transfer, _>::new(Arc::clone(store))
        .execute(
            TransferId::new(id).unwrap().stream(),
            &TransferCommand::Request {
                from: account(from),
                to: account(to),
                amount,
                execute_at: None,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_leg_sent_twice_moves_money_once_memory() {
    leg_sent_twice(Arc::new(MemoryStore::new())).await;
}

#[sqlx::test(migrations = false)]
async fn a_leg_sent_twice_moves_money_once_postgres(pool: sqlx::PgPool) {
    let store = annals_postgres::PostgresStore::from_pool(pool);
    store.migrate().await.unwrap();
    leg_sent_twice(Arc::new(store)).await;
}

/// Hands every event of the log after `from` to the process, in order (what its runner does); returns the head.
async fn drive(
    process: &Process<TransferProcess>,
    store: &Arc<dyn EventStore>,
    from: Position,
) -> Position {
    let events: Vec<RecordedEvent> = store.read_all(from, 10_000).await.unwrap();
    for event in &events {
        process.handle_event(event).await.unwrap();
    }
    events.last().map_or(from, |e| e.position)
}

async fn transfer(store: &Arc<dyn EventStore>, id: &str) -> Transfer {
    Repository::<Transfer, _>::new(Arc::clone(store))
        .load(TransferId::new(id).unwrap().stream())
        .await
        .unwrap()
        .state
}

/// Balances plus the money the transfer holds.
async fn total(store: &Arc<dyn EventStore>) -> u128 {
    u128::from(balance(store, "alice").await)
        + u128::from(balance(store, "carol").await)
        + u128::from(transfer(store, "t-1").await.held())
}

#[tokio::test]
async fn a_refused_refund_holds_the_money_visibly_until_an_operator_retries_it() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let sender = AccountCommands::new(Arc::clone(&store), StreamLocks::default());
    let process = Process::new(
        TransferProcess,
        Arc::clone(&store),
        sender,
        Timers::memory(),
    );
    run(
        &store,
        "alice",
        AccountCommand::Open {
            owner: "Alice".into(),
        },
    )
    .await;
    run(&store, "alice", AccountCommand::Deposit { amount: 1_000 }).await;
    run(
        &store,
        "carol",
        AccountCommand::Open {
            owner: "Carol".into(),
        },
    )
    .await;
    run(&store, "carol", AccountCommand::Close).await;
    let transfers = Repository::<Transfer, _>::new(Arc::clone(&store));
    let t1 = TransferId::new("t-1").unwrap();
    request(&store, "t-1", "alice", "carol", 600).await;

    // The request: the source is debited.
    let at = drive(&process, &store, Position::START).await;
    assert_eq!(balance(&store, "alice").await, 400);
    // Before the process sees the debit, the source is refilled to its maximum.
    run(
        &store,
        "alice",
        AccountCommand::Deposit {
            amount: MAX_BALANCE - 400,
        },
    )
    .await;
    let deposits = 1_000 + u128::from(MAX_BALANCE - 400);
    // The debit: the credit is refused (carol is closed), and so is the refund (alice is full).
    let at = drive(&process, &store, at).await;
    let stuck = transfer(&store, "t-1").await;
    assert_eq!(stuck.status, TransferStatus::RefundFailed, "{stuck:?}");
    assert_eq!(stuck.refund_refused.as_deref(), Some("amount_overflow"));
    assert_eq!(stuck.reason.as_deref(), Some("account_closed"));
    assert_eq!(stuck.held(), 600, "the transfer holds the amount");
    assert_eq!(
        total(&store).await,
        deposits,
        "money is conserved: balances plus held"
    );
    // Handled again (a crash before the checkpoint): nothing changes.
    drive(&process, &store, Position::START).await;
    assert_eq!(transfer(&store, "t-1").await, stuck);
    assert_eq!(total(&store).await, deposits);

    // Retried before there is room: refused again, and still held.
    transfers
        .execute(t1.stream(), &TransferCommand::RetryRefund)
        .await
        .unwrap();
    let at = drive(&process, &store, at).await;
    assert_eq!(
        transfer(&store, "t-1").await.status,
        TransferStatus::RefundFailed
    );
    assert_eq!(total(&store).await, deposits);

    // The operator makes room (the owner withdraws) and retries: the refund goes through and the transfer fails
    // as a refused credit does.
    run(&store, "alice", AccountCommand::Withdraw { amount: 1_000 }).await;
    transfers
        .execute(t1.stream(), &TransferCommand::RetryRefund)
        .await
        .unwrap();
    let at = drive(&process, &store, at).await;
    let at = drive(&process, &store, at).await;
    let ended = transfer(&store, "t-1").await;
    assert_eq!(ended.status, TransferStatus::Failed, "{ended:?}");
    assert_eq!(ended.held(), 0);
    assert_eq!(balance(&store, "alice").await, MAX_BALANCE - 400);
    assert_eq!(
        total(&store).await,
        deposits - 1_000,
        "conserved: only the withdrawal left"
    );
    assert!(matches!(
        transfers
            .execute(t1.stream(), &TransferCommand::RetryRefund)
            .await,
        Err(annals::CommandError::Rejected(
            TransferError::NothingToRefund { .. }
        ))
    ));
    // Everything handled again: refunded once.
    drive(&process, &store, Position::START).await;
    drive(&process, &store, at).await;
    assert_eq!(
        balance(&store, "alice").await,
        MAX_BALANCE - 400,
        "refunded once"
    );
}
