//! The Annals showcase: a bank-account HTTP service built only from the framework's public API.
//!
//! - [`account`]: the domain, an [`Account`](account::Account) aggregate with pure `decide`/`apply` and
//!   given/when/then tests.
//! - An axum service over [`annals::Repository`]: JSON in and out, one error shape, idempotency keys, correlation
//!   ids, concurrency handled by the repository's optimistic retries.
//! - Read models (`balances`, `history`) as projections, run in-process.
//! - The event feed: [`feed`] publishes every committed event to NATS JetStream (`bank serve --nats-url`), and
//!   [`notifier`] is the second service, `bank-notifier`, that consumes them through an inbox.
//!
//! ```
//! use annals::testing::given;
//! use bank_account::account::{Account, AccountCommand, AccountEvent};
//!
//! given::<Account>([AccountEvent::Opened { owner: "Alice".into() }])
//!     .when(AccountCommand::Deposit { amount: 1_000 })
//!     .then([AccountEvent::Deposited { amount: 1_000 }]);
//! ```

pub mod account;
mod api;
pub mod feed;
pub mod notifier;
pub mod read_models;
mod service;
pub mod transfer;
pub mod transfer_legs;
pub mod transfer_process;

pub use service::{DATA_FILE, DEFAULT_DATA_DIR, DEFAULT_SCHEMA, Service, StoreConfig, projections};
