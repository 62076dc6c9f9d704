//! Integration tests of the `annals` core on the memory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aggregate_cache;
mod cancellation;
mod domain;
mod given_when_then;
mod repository;
mod unavailable;
