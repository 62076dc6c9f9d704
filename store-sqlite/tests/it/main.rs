//! Integration tests of the SQLite store; every test gets a fresh file in the temporary directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod bad_files_are_refused;
mod conformance;
mod cross_process;
mod full_disk;
mod model_checker;
mod positions_stay_contiguous_after_rollbacks;
mod read_only_files;
mod support;
mod values_beyond_i64;
