//! The domain: a bank account that can be opened, credited, debited and closed.
//!
//! Pure and synchronous: [`Account::decide`] reads the state and returns events or an [`AccountError`];
//! [`Account::apply`] folds one event into the state. No I/O, no framework types beyond the [`Aggregate`] trait.

use annals::{Aggregate, Category, IdKind};
use serde::{Deserialize, Serialize};

use crate::transfer_legs::{TransferLeg, TransferMove, apply_leg, decide_leg};

/// The largest amount a single deposit or withdrawal may carry, in minor units (cents).
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// The largest balance an account may hold, in minor units. A deposit that would pass it is refused.
pub const MAX_BALANCE: u64 = i64::MAX as u64;

/// The longest owner name, in characters.
pub const MAX_OWNER_LEN: usize = 200;

/// An account's identifier: 1 to 64 characters from `A-Z a-z 0-9 - _ .`, so it is safe in a URL path. Its stream
/// is `account-<id>` (`AccountId::from_stream` tells which account a stream holds); generated ids are `acc-<uuid>`.
pub type AccountId = annals::Id<Account>;

impl IdKind for Account {
    const CATEGORY: Category = Category::new("account");
    const NAME: &'static str = "account id";
    const GENERATED_PREFIX: &'static str = "acc-";
}

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open the account for `owner`.
    Open {
        /// The holder's name: not blank, at most [`MAX_OWNER_LEN`] characters.
        owner: String,
    },
    /// Put `amount` minor units in.
    Deposit {
        /// Strictly positive, at most [`MAX_AMOUNT`].
        amount: u64,
    },
    /// Take `amount` minor units out.
    Withdraw {
        /// Strictly positive, at most [`MAX_AMOUNT`], at most the balance.
        amount: u64,
    },
    /// Close the account; its balance must be zero.
    Close,
    /// One leg of a transfer, sent by the transfer process (see [`crate::transfer_process`]).
    Transfer(TransferLeg),
}

/// What happened to an account. The serde names are the persisted event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    #[serde(rename = "AccountOpened")]
    Opened {
        /// The holder's name.
        owner: String,
    },
    /// Money was paid in.
    #[serde(rename = "MoneyDeposited")]
    Deposited {
        /// Minor units.
        amount: u64,
    },
    /// Money was taken out.
    #[serde(rename = "MoneyWithdrawn")]
    Withdrawn {
        /// Minor units.
        amount: u64,
    },
    /// The account was closed.
    #[serde(rename = "AccountClosed")]
    Closed {},
    /// Money left for another account, as the first step of a transfer.
    #[serde(rename = "TransferDebited")]
    TransferDebited(TransferMove),
    /// Money arrived from another account, by a transfer.
    #[serde(rename = "TransferCredited")]
    TransferCredited(TransferMove),
    /// Money came back: a transfer's credit was refused, so its debit was undone.
    #[serde(rename = "TransferRefunded")]
    TransferRefunded(TransferMove),
}

impl annals::Event for AccountEvent {}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The account was never opened.
    #[error("account not found")]
    NotFound,
    /// Opening an account that exists (open or closed).
    #[error("the account exists already")]
    AlreadyExists,
    /// The owner name is blank or too long.
    #[error(
        "owner must be a non-blank name of at most {MAX_OWNER_LEN} characters, got {length} characters"
    )]
    InvalidOwner {
        /// The name's length in characters.
        length: usize,
    },
    /// The owner name contains a control character (a NUL, a line break, a tab...).
    #[error("owner must not contain control characters, found U+{code:04X} at character {at}")]
    OwnerHasControlCharacter {
        /// The character's position in the name (0-based, in characters).
        at: usize,
        /// The character's code point.
        code: u32,
    },
    /// The amount is zero or larger than [`MAX_AMOUNT`].
    #[error("amount must be between 1 and {MAX_AMOUNT} minor units, got {amount}")]
    InvalidAmount {
        /// The refused amount.
        amount: u64,
    },
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: the balance is {balance}, the withdrawal asks for {requested}")]
    InsufficientFunds {
        /// The current balance.
        balance: u64,
        /// The amount asked for.
        requested: u64,
    },
    /// A deposit would take the balance past [`MAX_BALANCE`].
    #[error(
        "a deposit of {amount} would take the balance of {balance} past the maximum of {MAX_BALANCE}"
    )]
    AmountOverflow {
        /// The current balance.
        balance: u64,
        /// The amount deposited.
        amount: u64,
    },
    /// Closing an account that still holds money.
    #[error("the account still holds {balance}; only an account with a zero balance can be closed")]
    BalanceNotZero {
        /// The current balance.
        balance: u64,
    },
    /// The account is closed and refuses everything.
    #[error("the account is closed")]
    Closed,
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Not opened yet: the stream has no events.
    #[default]
    Unopened,
    /// Open for business.
    Open,
    /// Closed for good.
    Closed,
}

/// A bank account: who owns it, what it holds, whether it is open. Serializable, so the `balances` read model
/// can keep it as its snapshot (see [`crate::read_models`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The holder's name (empty until opened).
    pub owner: String,
    /// Minor units held.
    pub balance: u64,
    /// Open, closed, or not opened yet.
    pub status: AccountStatus,
}

impl Account {
    /// Sets the balance an event leaves. Decide has checked every amount, so it never leaves its range; on
    /// hand-edited data that would take it out (`None`), apply stays infallible and leaves the balance as it was.
    pub(crate) fn settle(&mut self, balance: Option<u64>) {
        self.balance = balance.unwrap_or(self.balance);
    }

    pub(crate) fn check_open(&self) -> Result<(), AccountError> {
        match self.status {
            AccountStatus::Unopened => Err(AccountError::NotFound),
            AccountStatus::Open => Ok(()),
            AccountStatus::Closed => Err(AccountError::Closed),
        }
    }
}

pub(crate) fn check_amount(amount: u64) -> Result<u64, AccountError> {
    if amount == 0 || amount > MAX_AMOUNT {
        return Err(AccountError::InvalidAmount { amount });
    }
    Ok(amount)
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand as C;
        use AccountEvent as E;
        match command {
            C::Open { owner } => {
                if self.status != AccountStatus::Unopened {
                    return Err(AccountError::AlreadyExists);
                }
                let length = owner.chars().count();
                if owner.trim().is_empty() || length > MAX_OWNER_LEN {
                    return Err(AccountError::InvalidOwner { length });
                }
                if let Some((at, c)) = owner.chars().enumerate().find(|(_, c)| c.is_control()) {
                    return Err(AccountError::OwnerHasControlCharacter {
                        at,
                        code: u32::from(c),
                    });
                }
                Ok(vec![E::Opened {
                    owner: owner.clone(),
                }])
            }
            C::Deposit { amount } => {
                let amount = check_amount(*amount)?;
                self.check_open()?;
                let balance = self.balance;
                match balance.checked_add(amount) {
                    Some(after) if after <= MAX_BALANCE => Ok(vec![E::Deposited { amount }]),
                    _ => Err(AccountError::AmountOverflow { balance, amount }),
                }
            }
            C::Withdraw { amount } => {
                let requested = check_amount(*amount)?;
                self.check_open()?;
                let balance = self.balance;
                match balance.checked_sub(requested) {
                    Some(_) => Ok(vec![E::Withdrawn { amount: requested }]),
                    None => Err(AccountError::InsufficientFunds { balance, requested }),
                }
            }
            C::Transfer(leg) => decide_leg(self, leg),
            C::Close => {
                self.check_open()?;
                if self.balance != 0 {
                    return Err(AccountError::BalanceNotZero {
                        balance: self.balance,
                    });
                }
                Ok(vec![E::Closed {}])
            }
        }
    }

    /// The one definition of how each event changes an account, for the decisions and the read models alike.
    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.owner.clone_from(owner);
                self.status = AccountStatus::Open;
            }
            AccountEvent::Deposited { amount } => self.settle(self.balance.checked_add(*amount)),
            AccountEvent::Withdrawn { amount } => self.settle(self.balance.checked_sub(*amount)),
            AccountEvent::Closed {} => self.status = AccountStatus::Closed,
            leg => apply_leg(self, leg),
        }
    }
}

#[cfg(test)]
mod tests {
    use annals::StreamKey;
    use annals::testing::given;

    use super::*;
    use AccountCommand as C;
    use AccountEvent as E;

    fn opened() -> E {
        E::Opened {
            owner: "Alice".into(),
        }
    }

    #[test]
    fn opening_records_the_owner() {
        let account = given::<Account>([])
            .when(C::Open {
                owner: "Alice".into(),
            })
            .then([opened()]);
        assert_eq!(account.status, AccountStatus::Open);
        assert_eq!(account.owner, "Alice");
        assert_eq!(account.balance, 0);
    }

    #[test]
    fn opening_refuses_control_characters_in_the_owner() {
        given::<Account>([])
            .when(C::Open {
                owner: "a\u{0}b".into(),
            })
            .then_error(AccountError::OwnerHasControlCharacter { at: 1, code: 0 });
        given::<Account>([])
            .when(C::Open {
                owner: "Ann\nLee".into(),
            })
            .then_error(AccountError::OwnerHasControlCharacter { at: 3, code: 10 });
    }

    #[test]
    fn opening_refuses_a_blank_owner() {
        for owner in ["", "   ", "\t\n"] {
            given::<Account>([])
                .when(C::Open {
                    owner: owner.into(),
                })
                .then_error_matches(|e| matches!(e, AccountError::InvalidOwner { .. }));
        }
    }

    #[test]
    fn opening_accepts_200_characters_and_refuses_201() {
        let longest = "é".repeat(MAX_OWNER_LEN);
        given::<Account>([])
            .when(C::Open {
                owner: longest.clone(),
            })
            .then([E::Opened { owner: longest }]);
        given::<Account>([])
            .when(C::Open {
                owner: "é".repeat(MAX_OWNER_LEN + 1),
            })
            .then_error(AccountError::InvalidOwner { length: 201 });
    }

    #[test]
    fn opening_an_existing_account_is_refused_even_when_closed() {
        given::<Account>([opened()])
            .when(C::Open {
                owner: "Bob".into(),
            })
            .then_error(AccountError::AlreadyExists);
        given::<Account>([opened(), E::Closed {}])
            .when(C::Open {
                owner: "Bob".into(),
            })
            .then_error(AccountError::AlreadyExists);
    }

    #[test]
    fn depositing_adds_to_the_balance() {
        let account = given::<Account>([opened(), E::Deposited { amount: 500 }])
            .when(C::Deposit { amount: 250 })
            .then([E::Deposited { amount: 250 }]);
        assert_eq!(account.balance, 750);
    }

    #[test]
    fn amounts_must_be_strictly_positive_and_at_most_the_maximum() {
        for command in [
            C::Deposit { amount: 0 },
            C::Withdraw { amount: 0 },
            C::Deposit {
                amount: MAX_AMOUNT + 1,
            },
            C::Withdraw { amount: u64::MAX },
        ] {
            given::<Account>([opened()])
                .when(command)
                .then_error_matches(|e| matches!(e, AccountError::InvalidAmount { .. }));
        }
        given::<Account>([opened()])
            .when(C::Deposit { amount: MAX_AMOUNT })
            .then([E::Deposited { amount: MAX_AMOUNT }]);
    }

    #[test]
    fn a_deposit_past_the_maximum_balance_is_an_overflow_not_a_wrap() {
        given::<Account>([
            opened(),
            E::Deposited {
                amount: MAX_BALANCE,
            },
        ])
        .when(C::Deposit { amount: 1 })
        .then_error(AccountError::AmountOverflow {
            balance: MAX_BALANCE,
            amount: 1,
        });
        given::<Account>([
            opened(),
            E::Deposited {
                amount: MAX_BALANCE - 1,
            },
        ])
        .when(C::Deposit { amount: 1 })
        .then([E::Deposited { amount: 1 }]);
    }

    #[test]
    fn withdrawing_takes_from_the_balance_down_to_zero() {
        let account = given::<Account>([opened(), E::Deposited { amount: 300 }])
            .when(C::Withdraw { amount: 300 })
            .then([E::Withdrawn { amount: 300 }]);
        assert_eq!(account.balance, 0);
    }

    #[test]
    fn withdrawing_beyond_the_balance_is_refused() {
        given::<Account>([opened(), E::Deposited { amount: 300 }])
            .when(C::Withdraw { amount: 301 })
            .then_error(AccountError::InsufficientFunds {
                balance: 300,
                requested: 301,
            });
    }

    #[test]
    fn closing_needs_a_zero_balance() {
        given::<Account>([opened(), E::Deposited { amount: 1 }])
            .when(C::Close)
            .then_error(AccountError::BalanceNotZero { balance: 1 });
        let account = given::<Account>([
            opened(),
            E::Deposited { amount: 1 },
            E::Withdrawn { amount: 1 },
        ])
        .when(C::Close)
        .then([E::Closed {}]);
        assert_eq!(account.status, AccountStatus::Closed);
    }

    #[test]
    fn a_closed_account_refuses_everything() {
        for command in [
            C::Deposit { amount: 1 },
            C::Withdraw { amount: 1 },
            C::Close,
        ] {
            given::<Account>([opened(), E::Closed {}])
                .when(command)
                .then_error(AccountError::Closed);
        }
    }

    #[test]
    fn an_unopened_account_is_not_found() {
        for command in [
            C::Deposit { amount: 1 },
            C::Withdraw { amount: 1 },
            C::Close,
        ] {
            given::<Account>([])
                .when(command)
                .then_error(AccountError::NotFound);
        }
    }

    #[test]
    fn events_keep_their_persisted_names() {
        use annals::Event;
        let names: Vec<String> = [
            opened(),
            E::Deposited { amount: 1 },
            E::Withdrawn { amount: 1 },
            E::Closed {},
        ]
        .iter()
        .map(|e| e.encode().map(|(name, _)| name))
        .collect::<Result<_, _>>()
        .unwrap();
        assert_eq!(
            names,
            [
                "AccountOpened",
                "MoneyDeposited",
                "MoneyWithdrawn",
                "AccountClosed"
            ]
        );
    }

    #[test]
    fn account_ids_are_url_safe() {
        assert!(AccountId::new("acc-1_x.Y").is_ok());
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(AccountId::new(bad).is_err(), "{bad:?}");
        }
        let id = AccountId::new("acc-1").unwrap();
        assert_eq!(id.stream().as_str(), "account-acc-1");
        assert_eq!(AccountId::from_stream(id.stream()), Some(id.clone()));
        assert!(AccountId::generate().as_str().starts_with("acc-"));
    }
}
