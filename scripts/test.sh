#!/usr/bin/env bash
# Runs the whole test suite: starts the services it needs, then one `cargo test` over the workspace; then the
# event feed's tests (annals-nats, and the bank example's event feed with bank-notifier) once more against a
# current nats-server (scripts/services.sh nats-new), as well as Debian's 2.9.10 in the first pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo test --workspace --locked "$@"
scripts/services.sh nats-new
echo "== the event feed's tests against $("$(scripts/services.sh nats-new-bin)" --version)"
# The 60 s broker outage runs once, in the first pass: it tests the relay's retries, not the server's version.
NATS_URL=127.0.0.1:4223 NATS_SERVER_BIN="$(scripts/services.sh nats-new-bin)" \
  cargo test --locked -p annals-nats --test it "$@" -- --skip relay_outage
NATS_URL=127.0.0.1:4223 NATS_SERVER_BIN="$(scripts/services.sh nats-new-bin)" \
  cargo test --locked -p bank-account --test it event_feed "$@"
