#!/usr/bin/env bash
# Starts a throwaway PostgreSQL with a sample table and pgwire-proxy in front of it, prints the
# psql line to connect, and waits. Ctrl+C / SIGTERM stops the proxy, then PostgreSQL, and
# removes everything. DEMO_NO_WAIT=1: start, print, check `select 1` through the proxy, stop.
set -euo pipefail

BIN=${1:-}
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
  echo "usage: $0 PATH/TO/pgwire-proxy  (build it with: make build)" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
PGWP_TAG=demo
# shellcheck source=scripts/throwaway-pg.sh
. "$(dirname "$0")/throwaway-pg.sh"

TMP=$(work_dir demo)
PROXY_LOG=$TMP/proxy.log
PROXY_PID=
PG_STARTED=

cleanup() {
  trap - EXIT INT TERM
  stop_pid "$PROXY_PID"
  if [ -n "$PG_STARTED" ]; then pg_stop "$TMP"; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

die() {
  echo "demo: $*" >&2
  [ -s "$PROXY_LOG" ] && { echo "--- proxy log ---" >&2; tail -n 30 "$PROXY_LOG" >&2; }
  exit 1
}

PGPORT=$(free_port)
PG_STARTED=1 # from here on, cleanup stops it (pg_ctl stop is harmless if it never started)
pg_start "$TMP" "$PGPORT" || die "PostgreSQL did not start"

"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PGPORT" -U postgres -d postgres <<'SQL' >/dev/null
create table demo_items (id int primary key, name text not null, price numeric(8,2));
insert into demo_items values (1, 'apple', 0.50), (2, 'pear', 0.75), (3, 'plum', 1.20);
SQL

PPORT=$(free_port 5433)
[ "$PPORT" = 5433 ] || echo "demo: port 5433 is busy, the proxy listens on $PPORT instead"
setsid "$BIN" --listen "127.0.0.1:$PPORT" \
  --upstream "host=127.0.0.1 port=$PGPORT dbname=postgres user=postgres" >"$PROXY_LOG" 2>&1 &
PROXY_PID=$!

ready=
for _ in $(seq 100); do # up to ~10 s
  kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited during start-up"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PPORT") 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || die "the proxy did not accept connections on 127.0.0.1:$PPORT within 10 s"

CONNINFO="host=127.0.0.1 port=$PPORT user=postgres dbname=postgres"
echo "demo: PostgreSQL on 127.0.0.1:$PGPORT, pgwire-proxy on 127.0.0.1:$PPORT (table demo_items). Connect with:"
echo "  psql \"$CONNINFO\""

if [ "${DEMO_NO_WAIT:-}" = 1 ]; then
  out=$(PGCONNECT_TIMEOUT=10 timeout 30 "$PG_BIN/psql" -X -At "$CONNINFO" -c 'select 1' 2>&1) ||
    die "self-check through the proxy failed: $out"
  [ "$out" = 1 ] || die "self-check through the proxy returned '$out', expected 1"
  echo "demo: self-check ok (select 1 through the proxy), stopping"
  exit 0
fi

echo "demo: proxy log: $PROXY_LOG; press Ctrl+C to stop"
wait "$PROXY_PID" || true
PROXY_PID=
die "the proxy exited"
