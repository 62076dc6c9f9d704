#!/usr/bin/env bash
# Soaks the model checker: runs every checker test (memory and PostgreSQL) for a long time.
#   scripts/soak.sh [SECONDS] [SEED]
# SECONDS per store configuration (default 600); SEED replays a seed (default: each test draws and prints one).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
seed="${2:-}"
scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export ANNALS_CHECK_SECS="$secs"
if [[ -n "$seed" ]]; then
    export ANNALS_CHECK_SEED="$seed"
fi
echo "soak: ${secs} s per configuration, seed ${seed:-drawn per test}"
status=0
cargo test -p annals-memory --test model_checker model_checker -- --nocapture || status=$?
cargo test -p annals-postgres --test it model_checker -- --nocapture || status=$?
exit "$status"
