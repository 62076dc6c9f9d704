//! Integration tests of the projections crate: the memory backend in process, PostgreSQL against the real
//! server (every PostgreSQL test gets a fresh database).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

#[cfg(feature = "cli")]
mod cli_subcommands;
mod document_read_model;
mod effects;
mod failure_policies;
#[cfg(feature = "postgres")]
mod leased;
#[cfg(feature = "postgres")]
mod leases_and_crashes;
mod live_follow_concurrent_writers;
mod permanent_errors;
mod rebuild_blue_green;
mod rebuilds_leave_nothing_behind;
mod renamed_events;
#[cfg(feature = "postgres")]
mod sql_projection;
#[cfg(feature = "sqlite")]
mod sqlite_backend;
#[cfg(feature = "sqlite")]
mod sqlite_leases_and_fencing;
mod stateful_projections;
mod support;
#[cfg(feature = "postgres")]
mod takeover_when_the_owner_dies;
#[cfg(feature = "postgres")]
mod typed_projections;
