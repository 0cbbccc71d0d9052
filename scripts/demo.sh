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
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "demo: PostgreSQL server binaries not found (run: make deps)" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() { # free_port [preferred]: the preferred port if it is free, else any free port
  /usr/bin/python3 - "${1:-0}" <<'PY'
import socket, sys
want = int(sys.argv[1])
for port in ([want] if want else []) + [0]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        chosen = s.getsockname()[1]
        s.close()
    print(chosen)
    break
PY
}

TMP=$(mktemp -d /tmp/pgwp-demo.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP"
PGDATA_DIR=$TMP/data
PROXY_LOG=$TMP/proxy.log
PROXY_PID=
PG_STARTED=

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$PROXY_PID" ] && kill -0 "$PROXY_PID" 2>/dev/null; then
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROXY_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_STARTED" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 ||
      as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
  fi
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
as_pg "$PG_BIN/initdb" --nosync -D "$PGDATA_DIR" -U postgres -A trust --no-locale -E UTF8 \
  >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
fsync = off
full_page_writes = off
synchronous_commit = off
CONF
cat >"$PGDATA_DIR/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
HBA
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$TMP/postgresql.log" -w -t 60 start >/dev/null ||
  { tail -n 20 "$TMP/postgresql.log" >&2; die "PostgreSQL did not start"; }
PG_STARTED=1

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
