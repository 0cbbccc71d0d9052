# Sourced by scripts/demo.sh and tests/soak.sh: a throwaway PostgreSQL (initdb as the postgres
# user when run as root, 127.0.0.1 only, no fsync) and the process helpers around it.
# The caller sets PGWP_TAG (its name, for messages) before sourcing.

# PG_BIN: the newest PostgreSQL server binaries (or $PG_BIN as given).
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "$PGWP_TAG: PostgreSQL server binaries not found (run: make deps)" >&2
  exit 2
fi

as_pg() { # initdb and pg_ctl refuse to run as root
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

work_dir() { # work_dir NAME: a new temporary directory the postgres user can use
  local d
  d=$(mktemp -d "/tmp/pgwp-$1.XXXXXX")
  chmod 755 "$d"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$d"; fi
  echo "$d"
}

stop_pid() { # stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

pg_start() { # pg_start DIR PORT [extra postgresql.conf lines]: initdb DIR/data and start it
  local dir=$1 port=$2 extra=${3:-}
  as_pg "$PG_BIN/initdb" --nosync -D "$dir/data" -U postgres -A trust --no-locale -E UTF8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
full_page_writes = off
synchronous_commit = off
$extra
CONF
  cat >"$dir/data/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
HBA
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgresql.log" -w -t 60 start >/dev/null ||
    { tail -n 20 "$dir/postgresql.log" >&2; return 1; }
}

pg_stop() { # pg_stop DIR: fast shutdown, immediate if that fails
  as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 ||
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m immediate -w stop >/dev/null 2>&1 || true
}
