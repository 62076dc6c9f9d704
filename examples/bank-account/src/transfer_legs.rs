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

impl TransferMove {
    pub(crate) fn key(&self, kind: &str) -> String {
        format!("{kind}:{}", self.transfer)
    }
}

/// The account's rules for a transfer leg. A leg applied before is recognised and changes nothing.
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
    let key = match leg.kind {
        LegKind::Out => "out",
        LegKind::In => "in",
        LegKind::Refund => "refund",
    };
    if account.transfers.contains(&moved.key(key)) {
        return Ok(vec![]);
    }
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

/// Applies a transfer leg's event to the account: moves its money and remembers the leg, so that sending it again
/// changes nothing; other events are ignored.
pub(crate) fn remember_leg(account: &mut Account, event: &AccountEvent) {
    let (key, balance) = match event {
        AccountEvent::TransferDebited(m) => (m.key("out"), account.balance.checked_sub(m.amount)),
        AccountEvent::TransferCredited(m) => (m.key("in"), account.balance.checked_add(m.amount)),
        AccountEvent::TransferRefunded(m) => {
            (m.key("refund"), account.balance.checked_add(m.amount))
        }
        _ => return,
    };
    account.settle(balance);
    account.transfers.insert(key);
}
