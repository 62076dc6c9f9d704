//! Integration tests of the event feed, against real NATS JetStream and real PostgreSQL.

mod broker_restart;
mod crash;
mod delivery;
mod inbox;
mod support;
mod two_relays;
