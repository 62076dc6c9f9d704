//! The transfer process: debit the source, then credit the target; when the credit is refused, refund the
//! source. Each step is a command to an account, decided by a pure [`ProcessManager`]; the accounts' events
//! (which carry the transfer id and the other account) advance it; a refusal is an input like any event.

use std::sync::Arc;

use annals::{CommandError, EventStore, RecordedEvent, Repository, StreamKey, StreamLocks};
use annals_process::{
    BoxError, CommandContext, CommandSender, Decision, Input, ProcessManager, Routed, Sent,
    async_trait,
};
use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountCommand, AccountError, AccountEvent, AccountId};
use crate::transfer::{Stage, Transfer, TransferEvent, TransferId, TransferStatus};
pub use crate::transfer_legs::{LegKind, TransferLeg, TransferMove};

/// The machine-readable reason of a refusal, as `GET /transfers/{id}` reports it.
pub fn reason_of(error: &AccountError) -> &'static str {
    match error {
        AccountError::NotFound => "account_not_found",
        AccountError::Closed => "account_closed",
        AccountError::InsufficientFunds { .. } => "insufficient_funds",
        AccountError::AmountOverflow { .. } => "amount_overflow",
        AccountError::InvalidAmount { .. } => "invalid_amount",
        // Not reachable for a transfer leg; kept general so new account rules need no change here.
        _ => "refused",
    }
}

/// A command of the transfer process: one leg, to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountMove {
    /// The account that carries the leg out.
    pub account: String,
    /// The leg.
    pub leg: TransferLeg,
}

/// What the process reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferTrigger {
    /// The transfer was requested.
    Requested,
    /// The transfer was cancelled.
    Cancelled,
    /// The source was debited.
    Debited,
    /// The target was credited.
    Credited,
    /// The source was refunded.
    Refunded,
    /// An operator asked to retry a refused refund.
    RefundRetried,
}

/// The transfer's timer: start at `execute_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferWake {
    /// Start the transfer.
    Start,
}

/// The transfer process manager.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferProcess;

/// Its name (checkpoint, timers) and the category of its streams (`transfer-<id>`).
pub const NAME: &str = "transfers";

fn leg(transfer: &Transfer, id: &str, kind: LegKind) -> AccountMove {
    let (account, counterparty) = match kind {
        LegKind::Out | LegKind::Refund => (&transfer.from, &transfer.to),
        LegKind::In => (&transfer.to, &transfer.from),
    };
    AccountMove {
        account: account.clone(),
        leg: TransferLeg {
            kind,
            transfer: id.to_owned(),
            counterparty: counterparty.clone(),
            amount: transfer.amount,
        },
    }
}

impl TransferProcess {
    /// The decision, with the transfer's id at hand (the commands name it).
    pub fn decide_for(
        &self,
        id: &str,
        transfer: &Transfer,
        input: Input<'_, Self>,
    ) -> Decision<Self> {
        use TransferTrigger as T;
        let none = Decision::none();
        let start = || {
            Decision::none()
                .event(TransferEvent::Started {})
                .command(leg(transfer, id, LegKind::Out))
        };
        match (transfer.status, transfer.stage, input) {
            (TransferStatus::Pending, Stage::NotStarted, Input::Event(T::Requested)) => start(),
            (TransferStatus::Scheduled, Stage::NotStarted, Input::Event(T::Requested)) => {
                match transfer.execute_at {
                    Some(at) => none.schedule("start", at, TransferWake::Start),
                    None => start(),
                }
            }
            (TransferStatus::Scheduled, Stage::NotStarted, Input::Timer(TransferWake::Start)) => {
                start()
            }
            (TransferStatus::Cancelled, _, Input::Event(T::Cancelled)) => none.cancel("start"),
            (_, Stage::Debiting, Input::Event(T::Debited)) => none
                .event(TransferEvent::SourceDebited {})
                .command(leg(transfer, id, LegKind::In)),
            (_, Stage::Debiting, Input::Refused { reason, .. }) => {
                none.event(TransferEvent::Failed {
                    reason: reason.to_owned(),
                })
            }
            (_, Stage::Crediting, Input::Event(T::Credited)) => {
                none.event(TransferEvent::Completed {})
            }
            (_, Stage::Crediting, Input::Refused { reason, .. }) => none
                .event(TransferEvent::Refunding {
                    reason: reason.to_owned(),
                })
                .command(leg(transfer, id, LegKind::Refund)),
            (_, Stage::Refunding, Input::Event(T::Refunded)) => none.event(TransferEvent::Failed {
                reason: transfer
                    .reason
                    .clone()
                    .unwrap_or_else(|| "refused".to_owned()),
            }),
            (_, Stage::Refunding, Input::Refused { reason, .. }) => {
                // The source was refilled near its maximum since the debit: the transfer holds the money, visibly,
                // until an operator makes room and retries the refund.
                tracing::error!(
                    transfer = id,
                    reason,
                    amount = transfer.amount,
                    "a transfer's refund was refused; it holds the amount until the refund is retried"
                );
                none.event(TransferEvent::RefundFailed {
                    reason: reason.to_owned(),
                })
            }
            (_, Stage::RefundFailed, Input::Event(T::RefundRetried)) => none
                .event(TransferEvent::Refunding {
                    reason: transfer
                        .reason
                        .clone()
                        .unwrap_or_else(|| "refused".to_owned()),
                })
                .command(leg(transfer, id, LegKind::Refund)),
            _ => none,
        }
    }
}

impl ProcessManager for TransferProcess {
    type State = Transfer;
    type Trigger = TransferTrigger;
    type Command = AccountMove;
    type Timer = TransferWake;

    fn name(&self) -> &str {
        NAME
    }

    fn category(&self) -> &str {
        "transfer"
    }

    fn route(&self, event: &RecordedEvent) -> Result<Option<Routed<TransferTrigger>>, BoxError> {
        if let Some(id) = TransferId::from_stream(&event.stream_id) {
            let trigger = match event.event_type.as_str() {
                "TransferRequested" => {
                    return Ok(Some(Routed::start(id.as_str(), TransferTrigger::Requested)));
                }
                "TransferCancelled" => TransferTrigger::Cancelled,
                "TransferRefundRetried" => TransferTrigger::RefundRetried,
                _ => return Ok(None),
            };
            return Ok(Some(Routed::advance(id.as_str(), trigger)));
        }
        let trigger = match event.event_type.as_str() {
            "TransferDebited" => TransferTrigger::Debited,
            "TransferCredited" => TransferTrigger::Credited,
            "TransferRefunded" => TransferTrigger::Refunded,
            _ => return Ok(None),
        };
        let (AccountEvent::TransferDebited(moved)
        | AccountEvent::TransferCredited(moved)
        | AccountEvent::TransferRefunded(moved)) = event.decode::<AccountEvent>()?
        else {
            return Ok(None);
        };
        Ok(Some(Routed::advance(moved.transfer, trigger)))
    }

    fn decide(&self, id: &str, transfer: &Transfer, input: Input<'_, Self>) -> Decision<Self> {
        self.decide_for(id, transfer, input)
    }

    fn is_final(&self, event: &TransferEvent) -> bool {
        matches!(
            event,
            TransferEvent::Completed {}
                | TransferEvent::Failed { .. }
                | TransferEvent::Cancelled {}
        )
    }
}

/// Sends the process's commands to the accounts, through a [`Repository`] on the service's store.
#[derive(Clone)]
pub struct AccountCommands {
    accounts: Repository<Account>,
}

impl AccountCommands {
    /// Commands to the accounts in `store`, queued per account with the service's `locks`.
    pub fn new(store: Arc<dyn EventStore>, locks: StreamLocks) -> Self {
        Self {
            accounts: Repository::new(store).with_stream_locks(locks),
        }
    }
}

#[async_trait]
impl CommandSender<AccountMove> for AccountCommands {
    async fn send(
        &self,
        command: &AccountMove,
        context: &CommandContext,
    ) -> Result<Sent, BoxError> {
        let Ok(account) = AccountId::new(command.account.clone()) else {
            return Ok(Sent::Refused {
                reason: "account_not_found".into(),
            });
        };
        // Under the command id derived from the cause: a leg sent again after a crash answers as it did the
        // first time, refusals included, even if the account has changed since.
        let once = annals::CommandId::new(context.command_id.to_string())?;
        let outcome = self
            .accounts
            .execute_under(
                account.stream(),
                Some(&once),
                &AccountCommand::Transfer(command.leg.clone()),
                context.metadata.clone(),
            )
            .await;
        match outcome {
            Ok(_) => Ok(Sent::Accepted),
            Err(CommandError::Rejected(error)) => Ok(Sent::Refused {
                reason: reason_of(&error).to_owned(),
            }),
            Err(other) => Err(other.into()),
        }
    }
}

/// The transfer process on `store`, with `timers`, sending through accounts queued with `writers`, registered
/// in `projections` (the projections runner then drives it).
pub(crate) fn wire(
    store: Arc<dyn EventStore>,
    timers: annals_process::Timers,
    writers: &StreamLocks,
    projections: annals_projections::Projections,
) -> (
    annals_process::Process<TransferProcess>,
    annals_projections::Projections,
) {
    let sender = AccountCommands::new(Arc::clone(&store), writers.clone());
    let process = annals_process::Process::new(TransferProcess, store, sender, timers);
    let projections = process.register(projections, annals_process::default_options());
    (process, projections)
}

#[cfg(test)]
mod tests {
    use annals::testing::given as given_account;
    use annals_process::TimerRequest;
    use annals_process::testing::given;
    use chrono::TimeZone;

    use super::*;
    use crate::account::AccountEvent as A;
    use TransferEvent as E;
    use TransferTrigger as T;

    const PM: TransferProcess = TransferProcess;

    fn requested() -> E {
        E::Requested {
            from: "alice".into(),
            to: "bob".into(),
            amount: 50,
            execute_at: None,
        }
    }

    fn at() -> DateTime {
        chrono::Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
    }

    type DateTime = chrono::DateTime<chrono::Utc>;

    fn scheduled() -> E {
        E::Requested {
            from: "alice".into(),
            to: "bob".into(),
            amount: 50,
            execute_at: Some(at()),
        }
    }

    fn command(kind: LegKind) -> AccountMove {
        let (account, counterparty) = match kind {
            LegKind::In => ("bob", "alice"),
            LegKind::Out | LegKind::Refund => ("alice", "bob"),
        };
        AccountMove {
            account: account.into(),
            leg: TransferLeg {
                kind,
                transfer: "t1".into(),
                counterparty: counterparty.into(),
                amount: 50,
            },
        }
    }

    #[test]
    fn a_request_starts_the_transfer_with_the_debit_of_the_source() {
        given(&PM, "t1", [requested()])
            .when_event(T::Requested)
            .then_events([E::Started {}])
            .then_commands([command(LegKind::Out)])
            .then_timers([]);
    }

    #[test]
    fn the_debit_leads_to_the_credit_and_the_credit_completes() {
        given(&PM, "t1", [requested(), E::Started {}])
            .when_event(T::Debited)
            .then_events([E::SourceDebited {}])
            .then_commands([command(LegKind::In)]);
        given(&PM, "t1", [requested(), E::Started {}, E::SourceDebited {}])
            .when_event(T::Credited)
            .then_events([E::Completed {}])
            .then_commands([]);
    }

    #[test]
    fn a_refused_debit_fails_the_transfer_with_the_reason() {
        given(&PM, "t1", [requested(), E::Started {}])
            .when_refused(command(LegKind::Out), "insufficient_funds")
            .then_events([E::Failed {
                reason: "insufficient_funds".into(),
            }])
            .then_commands([]);
    }

    #[test]
    fn a_refused_credit_refunds_the_source_then_fails() {
        let debited = [requested(), E::Started {}, E::SourceDebited {}];
        given(&PM, "t1", debited.clone())
            .when_refused(command(LegKind::In), "account_closed")
            .then_events([E::Refunding {
                reason: "account_closed".into(),
            }])
            .then_commands([command(LegKind::Refund)]);
        let refunding = E::Refunding {
            reason: "account_closed".into(),
        };
        given(&PM, "t1", debited.into_iter().chain([refunding]))
            .when_event(T::Refunded)
            .then_events([E::Failed {
                reason: "account_closed".into(),
            }])
            .then_commands([]);
    }

    #[test]
    fn a_refused_refund_holds_the_money_until_retried() {
        let refunding = [
            requested(),
            E::Started {},
            E::SourceDebited {},
            E::Refunding {
                reason: "account_closed".into(),
            },
        ];
        given(&PM, "t1", refunding.clone())
            .when_refused(command(LegKind::Refund), "amount_overflow")
            .then_events([E::RefundFailed {
                reason: "amount_overflow".into(),
            }])
            .then_commands([]);
        let failed = refunding.into_iter().chain([
            E::RefundFailed {
                reason: "amount_overflow".into(),
            },
            E::RefundRetried {},
        ]);
        given(&PM, "t1", failed)
            .when_event(T::RefundRetried)
            .then_events([E::Refunding {
                reason: "account_closed".into(),
            }])
            .then_commands([command(LegKind::Refund)]);
    }

    #[test]
    fn a_scheduled_transfer_waits_for_its_timer() {
        given(&PM, "t1", [scheduled()])
            .when_event(T::Requested)
            .then_events([])
            .then_commands([])
            .then_timers([TimerRequest::Schedule {
                key: "start".into(),
                at: at(),
                payload: TransferWake::Start,
            }]);
        given(&PM, "t1", [scheduled()])
            .when_timer(TransferWake::Start)
            .then_events([E::Started {}])
            .then_commands([command(LegKind::Out)]);
    }

    #[test]
    fn a_cancelled_transfer_drops_its_timer_and_never_starts() {
        given(&PM, "t1", [scheduled(), E::Cancelled {}])
            .when_event(T::Cancelled)
            .then_timers([TimerRequest::Cancel {
                key: "start".into(),
            }])
            .then_events([]);
        given(&PM, "t1", [scheduled(), E::Cancelled {}])
            .when_timer(TransferWake::Start)
            .then_nothing();
    }

    #[test]
    fn inputs_out_of_place_change_nothing() {
        // A repeated event, a late refusal, an event for a finished transfer.
        given(&PM, "t1", [requested(), E::Started {}, E::SourceDebited {}])
            .when_event(T::Debited)
            .then_nothing();
        given(
            &PM,
            "t1",
            [
                requested(),
                E::Started {},
                E::SourceDebited {},
                E::Completed {},
            ],
        )
        .when_refused(command(LegKind::In), "account_closed")
        .then_nothing();
        given(&PM, "t1", [requested(), E::Started {}])
            .when_timer(TransferWake::Start)
            .then_nothing();
    }

    fn leg(kind: LegKind, amount: u64) -> AccountCommand {
        AccountCommand::Transfer(TransferLeg {
            kind,
            transfer: "t1".into(),
            counterparty: "bob".into(),
            amount,
        })
    }

    fn moved(amount: u64) -> TransferMove {
        TransferMove {
            transfer: "t1".into(),
            counterparty: "bob".into(),
            amount,
        }
    }

    fn opened() -> A {
        A::Opened {
            owner: "Alice".into(),
        }
    }

    #[test]
    fn an_account_carries_legs_and_leaves_recognising_one_sent_again_to_its_command_id() {
        given_account::<Account>([opened(), A::Deposited { amount: 100 }])
            .when(leg(LegKind::Out, 60))
            .then([A::TransferDebited(moved(60))]);
        // The account keeps no record of applied legs: the same leg decided again moves money again, which is
        // why the process sends every leg under a command id (see `a_leg_sent_twice_moves_money_once`).
        given_account::<Account>([
            opened(),
            A::Deposited { amount: 200 },
            A::TransferDebited(moved(60)),
        ])
        .when(leg(LegKind::Out, 60))
        .then([A::TransferDebited(moved(60))]);
        given_account::<Account>([opened()])
            .when(leg(LegKind::In, 5))
            .then([A::TransferCredited(moved(5))]);
    }

    #[test]
    fn an_account_refuses_legs_it_cannot_carry() {
        given_account::<Account>([opened()])
            .when(leg(LegKind::Out, 1))
            .then_error(AccountError::InsufficientFunds {
                balance: 0,
                requested: 1,
            });
        given_account::<Account>([])
            .when(leg(LegKind::In, 1))
            .then_error(AccountError::NotFound);
        given_account::<Account>([opened(), A::Closed {}])
            .when(leg(LegKind::In, 1))
            .then_error(AccountError::Closed);
        given_account::<Account>([opened()])
            .when(leg(LegKind::Out, 0))
            .then_error(AccountError::InvalidAmount { amount: 0 });
    }

    #[test]
    fn a_refund_returns_even_to_a_closed_account() {
        given_account::<Account>([
            opened(),
            A::Deposited { amount: 5 },
            A::TransferDebited(moved(5)),
            A::Closed {},
        ])
        .when(leg(LegKind::Refund, 5))
        .then([A::TransferRefunded(moved(5))]);
        given_account::<Account>([])
            .when(leg(LegKind::Refund, 5))
            .then_error(AccountError::NotFound);
    }
}
