//! Integration tests of the projections crate: the memory backend in process, PostgreSQL against the real
//! server (every PostgreSQL test gets a fresh database).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod cli_subcommands;
mod document_read_model;
mod failure_policies;
mod leases_and_crashes;
mod live_follow_concurrent_writers;
mod permanent_errors;
mod rebuild_blue_green;
mod rebuilds_leave_nothing_behind;
mod renamed_events;
mod sql_projection;
mod support;
mod takeover_when_the_owner_dies;
mod typed_projections;
