//! Integration tests of the event feed, against real NATS JetStream and real PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod broker_restart;
mod crash;
mod delivery;
mod inbox;
mod inbox_batch;
mod inbox_faults;
mod inbox_outage;
mod relay_faults;
mod relay_memory;
mod relay_outage;
mod support;
mod two_relays;
