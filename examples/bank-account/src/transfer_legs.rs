//! The account's side of a transfer: the legs the transfer process sends to an account (debit, credit, refund),
//! how an account decides on them and applies their events, and how they read as movements in the history.

use serde::{Deserialize, Serialize};

use crate::account::{
    Account, AccountError, AccountEvent, AccountStatus, MAX_BALANCE, check_amount,
};

/// Which leg of a transfer an account is asked to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegKind {
    /// Debit the source.
    Out,
    /// Credit the target.
    In,
    /// Give the source its money back (always accepted by an account that was opened, even closed since: the
    /// money left it, so it returns there).
    Refund,
}

/// One leg of a transfer, as a command to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLeg {
    /// Which leg.
    pub kind: LegKind,
    /// The transfer's id.
    pub transfer: String,
    /// The other account of the transfer.
    pub counterparty: String,
    /// Minor units.
    pub amount: u64,
}

/// What a transfer's account event records: which transfer, the other account, how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferMove {
    /// The transfer's id.
    pub transfer: String,
    /// The other account of the transfer (the target of a debit, the source of a credit, the target that
    /// refused, for a refund).
    pub counterparty: String,
    /// Minor units.
    pub amount: u64,
}

/// The account's rules for a transfer leg. The account keeps no record of the legs it applied (its state would
/// grow with every transfer): a leg sent again is recognised by its command id (the transfer process sends each
/// leg under an id derived from its cause, see `docs/command-ids.md`), so it must be sent with one.
pub(crate) fn decide_leg(
    account: &Account,
    leg: &TransferLeg,
) -> Result<Vec<AccountEvent>, AccountError> {
    let amount = check_amount(leg.amount)?;
    let moved = TransferMove {
        transfer: leg.transfer.clone(),
        counterparty: leg.counterparty.clone(),
        amount,
    };
    let balance = account.balance;
    match leg.kind {
        LegKind::Out => {
            account.check_open()?;
            if balance < amount {
                return Err(AccountError::InsufficientFunds {
                    balance,
                    requested: amount,
                });
            }
            Ok(vec![AccountEvent::TransferDebited(moved)])
        }
        LegKind::In | LegKind::Refund => {
            if leg.kind == LegKind::In {
                account.check_open()?;
            } else if account.status == AccountStatus::Unopened {
                return Err(AccountError::NotFound);
            }
            match balance.checked_add(amount) {
                Some(after) if after <= MAX_BALANCE => {}
                _ => return Err(AccountError::AmountOverflow { balance, amount }),
            }
            Ok(vec![if leg.kind == LegKind::In {
                AccountEvent::TransferCredited(moved)
            } else {
                AccountEvent::TransferRefunded(moved)
            }])
        }
    }
}

/// Applies a transfer leg's event to the account: moves its money; other events are ignored.
pub(crate) fn apply_leg(account: &mut Account, event: &AccountEvent) {
    let balance = match event {
        AccountEvent::TransferDebited(m) => account.balance.checked_sub(m.amount),
        AccountEvent::TransferCredited(m) | AccountEvent::TransferRefunded(m) => {
            account.balance.checked_add(m.amount)
        }
        _ => return,
    };
    account.settle(balance);
}
