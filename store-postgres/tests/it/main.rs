//! Integration tests of the PostgreSQL store against the real server; every test gets a fresh database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod conformance;
mod gap_safe_global_order;
mod support;
