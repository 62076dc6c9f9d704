//! End-to-end tests of the bank-account service over real HTTP, on the embedded memory store and on PostgreSQL
//! (each PostgreSQL test in its own fresh database).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_contract;
mod concurrency;
mod idempotency;
mod support;
