//! The transfer between two accounts, as the state of its process: requested (now or at a time), started,
//! source debited, completed; or failed with a reason (after a refund when the credit was refused); or
//! cancelled before it started; or, when the refund itself was refused, `refund_failed`, holding the money until
//! an operator retries the refund. Stream `transfer-<id>`.
//!
//! Requests and cancellations are commands to the transfer ([`TransferCommand`]); every later step is decided by
//! the transfer process ([`crate::transfer_process`]).

use annals::{Aggregate, Category, IdKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::AccountId;

/// A transfer's identifier: the same rules as an account id (1 to 64 of `A-Z a-z 0-9 - _ .`); its stream is
/// `transfer-<id>`, generated ids are `tr-<uuid>`.
pub type TransferId = annals::Id<Transfer>;

impl IdKind for Transfer {
    const CATEGORY: Category = Category::new("transfer");
    const NAME: &'static str = "transfer id";
    const GENERATED_PREFIX: &'static str = "tr-";
}

/// Where a transfer is, as the API reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Not requested (the stream is empty).
    #[default]
    Unknown,
    /// Waiting for its `execute_at`.
    Scheduled,
    /// Running: money may be on its way.
    Pending,
    /// The target was credited.
    Completed,
    /// Refused (the money is where it was before; see the reason).
    Failed,
    /// Cancelled before it started.
    Cancelled,
    /// The credit was refused and so was the refund (the source had been refilled near its maximum since the
    /// debit): the transfer holds the amount ([`Transfer::held`]), debited from the source and credited nowhere,
    /// until an operator makes room and retries the refund ([`TransferCommand::RetryRefund`],
    /// `POST /transfers/{id}/retry-refund`).
    RefundFailed,
}

/// How far the process got (the steps behind [`TransferStatus::Pending`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stage {
    /// Not started yet.
    #[default]
    NotStarted,
    /// The debit of the source was sent.
    Debiting,
    /// The source was debited; the credit of the target was sent.
    Crediting,
    /// The credit was refused; the refund of the source was sent.
    Refunding,
    /// The refund was refused too; the transfer holds the money until the refund is retried.
    RefundFailed,
    /// Completed, failed or cancelled.
    Ended,
}

/// A transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    /// The source account.
    pub from: String,
    /// The target account.
    pub to: String,
    /// Minor units.
    pub amount: u64,
    /// When it is to run (`None`: at once).
    pub execute_at: Option<DateTime<Utc>>,
    /// Where it is.
    pub status: TransferStatus,
    /// The process's step.
    pub stage: Stage,
    /// Why it failed (or is being refunded).
    pub reason: Option<String>,
    /// Why the source refused the refund, while the transfer is [`TransferStatus::RefundFailed`].
    pub refund_refused: Option<String>,
}

impl Transfer {
    /// The money the transfer holds: debited from the source (as the process has seen), and neither credited
    /// to the target nor refunded yet. Conservation: the sum of all balances plus the money every transfer
    /// holds is constant (between the debit and the process seeing it, the money is in flight in the log).
    pub fn held(&self) -> u64 {
        match self.stage {
            Stage::Crediting | Stage::Refunding | Stage::RefundFailed => self.amount,
            Stage::NotStarted | Stage::Debiting | Stage::Ended => 0,
        }
    }
}

/// What happened to a transfer. The serde names are the persisted event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// A client asked for the transfer.
    #[serde(rename = "TransferRequested")]
    Requested {
        /// The source account.
        from: String,
        /// The target account.
        to: String,
        /// Minor units.
        amount: u64,
        /// When to run it; absent for at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execute_at: Option<DateTime<Utc>>,
    },
    /// The client cancelled it before it started.
    #[serde(rename = "TransferCancelled")]
    Cancelled {},
    /// The process started it: the source's debit is sent.
    #[serde(rename = "TransferStarted")]
    Started {},
    /// The source was debited: the target's credit is sent.
    #[serde(rename = "TransferSourceDebited")]
    SourceDebited {},
    /// The target was credited.
    #[serde(rename = "TransferCompleted")]
    Completed {},
    /// The target refused the credit: the source's refund is sent.
    #[serde(rename = "TransferRefunding")]
    Refunding {
        /// Why the target refused.
        reason: String,
    },
    /// The source refused the refund: the transfer holds the money until the refund is retried.
    #[serde(rename = "TransferRefundFailed")]
    RefundFailed {
        /// Why the source refused (`amount_overflow`: it was refilled near its maximum since the debit).
        reason: String,
    },
    /// An operator asked to retry the refused refund (after making room in the source).
    #[serde(rename = "TransferRefundRetried")]
    RefundRetried {},
    /// The transfer ended without moving money.
    #[serde(rename = "TransferFailed")]
    Failed {
        /// Why (`insufficient_funds`, `account_closed`, `account_not_found`, ...).
        reason: String,
    },
}

impl annals::Event for TransferEvent {}

/// What a client can ask of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Request it (the same request again is accepted and changes nothing).
    Request {
        /// The source account.
        from: AccountId,
        /// The target account.
        to: AccountId,
        /// Minor units (checked by the accounts).
        amount: u64,
        /// When to run it.
        execute_at: Option<DateTime<Utc>>,
    },
    /// Cancel it: only while it is scheduled and has not started.
    Cancel,
    /// Retry the refund of a transfer whose refund was refused ([`TransferStatus::RefundFailed`]); the process
    /// sends the refund again under a new command id.
    RetryRefund,
}

/// Why a transfer refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A transfer of this id exists with other details.
    #[error("a transfer with this id exists with other details")]
    AlreadyExists,
    /// Cancelling a transfer that was never requested.
    #[error("transfer not found")]
    NotFound,
    /// Cancelling a transfer that is not scheduled or has started.
    #[error(
        "the transfer is {status:?}; only a scheduled transfer that has not started can be cancelled"
    )]
    NotCancellable {
        /// Its status.
        status: TransferStatus,
    },
    /// Retrying the refund of a transfer whose refund was not refused.
    #[error("the transfer is {status:?}; only a transfer whose refund was refused can retry it")]
    NothingToRefund {
        /// Its status.
        status: TransferStatus,
    },
}

impl Aggregate for Transfer {
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;

    fn decide(&self, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        match command {
            TransferCommand::Request {
                from,
                to,
                amount,
                execute_at,
            } => {
                if self.status == TransferStatus::Unknown {
                    return Ok(vec![TransferEvent::Requested {
                        from: from.to_string(),
                        to: to.to_string(),
                        amount: *amount,
                        execute_at: *execute_at,
                    }]);
                }
                let same = self.from == from.as_str()
                    && self.to == to.as_str()
                    && self.amount == *amount
                    && self.execute_at == *execute_at;
                if same {
                    Ok(vec![])
                } else {
                    Err(TransferError::AlreadyExists)
                }
            }
            TransferCommand::Cancel => match (self.status, self.stage) {
                (TransferStatus::Unknown, _) => Err(TransferError::NotFound),
                (TransferStatus::Scheduled, Stage::NotStarted) => {
                    Ok(vec![TransferEvent::Cancelled {}])
                }
                (status, _) => Err(TransferError::NotCancellable { status }),
            },
            TransferCommand::RetryRefund => match (self.status, self.stage) {
                (TransferStatus::Unknown, _) => Err(TransferError::NotFound),
                (TransferStatus::RefundFailed, Stage::RefundFailed) => {
                    Ok(vec![TransferEvent::RefundRetried {}])
                }
                (status, _) => Err(TransferError::NothingToRefund { status }),
            },
        }
    }

    fn apply(&mut self, event: &TransferEvent) {
        use TransferEvent as E;
        match event {
            E::Requested {
                from,
                to,
                amount,
                execute_at,
            } => {
                self.from.clone_from(from);
                self.to.clone_from(to);
                self.amount = *amount;
                self.execute_at = *execute_at;
                self.status = if execute_at.is_some() {
                    TransferStatus::Scheduled
                } else {
                    TransferStatus::Pending
                };
            }
            E::Cancelled {} => {
                self.status = TransferStatus::Cancelled;
                self.stage = Stage::Ended;
            }
            E::Started {} => {
                self.status = TransferStatus::Pending;
                self.stage = Stage::Debiting;
            }
            E::SourceDebited {} => self.stage = Stage::Crediting,
            E::Completed {} => {
                self.status = TransferStatus::Completed;
                self.stage = Stage::Ended;
            }
            E::Refunding { reason } => {
                self.status = TransferStatus::Pending;
                self.stage = Stage::Refunding;
                self.reason = Some(reason.clone());
                self.refund_refused = None;
            }
            E::RefundFailed { reason } => {
                self.status = TransferStatus::RefundFailed;
                self.stage = Stage::RefundFailed;
                self.refund_refused = Some(reason.clone());
            }
            E::RefundRetried {} => {}
            E::Failed { reason } => {
                self.status = TransferStatus::Failed;
                self.stage = Stage::Ended;
                self.reason = Some(reason.clone());
            }
        }
    }
}
