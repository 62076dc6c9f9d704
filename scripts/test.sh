#!/usr/bin/env bash
# Runs the whole test suite: starts the services it needs, then one `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
exec cargo test --workspace --locked "$@"
