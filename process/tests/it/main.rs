//! Integration tests of the process-manager crate, on the memory store and on the real PostgreSQL server (every
//! PostgreSQL test gets a fresh database).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod handled_once_in_effect;
mod no_input_stops_a_process;
mod pipeline;
mod runners_restart_after_an_outage;
mod stalled_target;
mod support;
mod timer_comes_back;
mod timers;
