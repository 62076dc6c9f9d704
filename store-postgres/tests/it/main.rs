//! Integration tests of the PostgreSQL store against the real server; every test gets a fresh database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod append_in_transaction;
mod appends_after_a_read;
mod conformance;
mod connection_faults;
mod corrupt_rows_are_reported;
mod dead_pooled_connections;
mod gap_safe_global_order;
mod group_commit;
mod held_connections;
mod hot_standby_is_refused;
mod killed_connections_are_retried;
mod model_checker;
mod replay_checks_scale_with_the_table;
mod safe_after_restore_and_misconfiguration;
mod schemas_isolate_tenants;
mod shared_pool_connections;
mod single_event_appends;
mod support;
mod tls_connections;
mod unit_of_work;
mod unit_of_work_is_all_or_nothing;
mod waiting_for_events;
mod write_paths_agree;
