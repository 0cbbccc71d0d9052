#!/usr/bin/env bash
# Soak test: SOAK_SECONDS (default 120) of mixed workload against pgwire-proxy in front of a
# throwaway PostgreSQL, then a consistency check from the proxy's metrics.
#
#   tests/soak.sh [PATH/TO/pgwire-proxy]        (default: build/pgwire-proxy)
#   SOAK_SECONDS=600 tests/soak.sh              (longer)
#   SOAK_KEEP=1 tests/soak.sh                   (keep the work directory with all logs)
#
# Workload, all through the proxy at once:
#   * pgbench -M simple, built-in tpcb-like, -c 4 -j 2
#   * a loop of psql large results (9,000 rows x 100 bytes, under the 10,000-row limit)
#   * a loop of row-limit violations (expected ERROR 54000)
#   * periodic cancels: psql running pg_sleep(10) gets SIGINT after 1 s and sends a
#     CancelRequest through the proxy (expected ERROR 57014)
#   * a connect / select 1 / disconnect loop
#
# Checks (exit 1 when one fails):
#   * every Query the clients sent was answered: sum of queries_total == what the clients
#     counted (pgbench's own set-up queries are calibrated with a one-transaction run first);
#   * outcomes match the workload: limited == limit violations sent, errors of class 57 ==
#     cancels observed == CancelRequests forwarded; no error of any other class, no unexpected
#     client failure;
#   * sessions_active back to 0; no upstream backend of the proxy left;
#   * the proxy's descriptors and RSS after the run within a margin of before
#     (SOAK_FD_MARGIN, default 2; SOAK_RSS_MARGIN_KB, default 32768);
#   * the proxy is alive and its log has no sanitizer report.
set -euo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-120}
FD_MARGIN=${SOAK_FD_MARGIN:-2}
RSS_MARGIN_KB=${SOAK_RSS_MARGIN_KB:-32768}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-${PGWP_BINARY:-$HERE/../build/pgwire-proxy}}
if [ ! -x "$BIN" ]; then
  echo "soak: proxy binary $BIN not found (make build)" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
PGWP_TAG=soak
# shellcheck source=scripts/throwaway-pg.sh
. "$HERE/../scripts/throwaway-pg.sh"
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench

listening() { # listening PORT: without connecting (a probe would be a silent client)
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

TMP=$(work_dir soak)
PROXY_LOG=$TMP/proxy.log
PROXY_PID=
PG_STARTED=
LOOP_PIDS=()

cleanup() {
  trap - EXIT INT TERM
  for p in "${LOOP_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_pid "$PROXY_PID"
  if [ -n "$PG_STARTED" ]; then pg_stop "$TMP"; fi
  if [ "${SOAK_KEEP:-0}" = 1 ]; then
    echo "soak: work directory kept: $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- PostgreSQL -----------------------------------------------------------------------------
PG_PORT=$(free_port)
PG_STARTED=1
pg_start "$TMP" "$PG_PORT" "max_connections = 100" || exit 1
DIRECT="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
"$PGBENCH" -i -q -s 1 "$DIRECT" >"$TMP/pgbench-init.log" 2>&1

# ---- proxy ----------------------------------------------------------------------------------
PORT=$(free_port)
MPORT=$(free_port)
env -u PGWIRE_PROXY_CONFIG "$BIN" --listen "127.0.0.1:$PORT" --upstream "$DIRECT" \
  --metrics-listen "127.0.0.1:$MPORT" --max-rows 10000 --log-level "${SOAK_LOG_LEVEL:-info}" \
  >"$PROXY_LOG" 2>&1 </dev/null &
PROXY_PID=$!
for _ in $(seq 200); do
  listening "$PORT" && listening "$MPORT" && break
  kill -0 "$PROXY_PID" 2>/dev/null || { echo "soak: proxy exited:"; cat "$PROXY_LOG"; exit 1; }
  sleep 0.05
done
listening "$PORT" || { echo "soak: proxy does not listen"; exit 1; }
PROXY="host=127.0.0.1 port=$PORT user=soak dbname=postgres connect_timeout=10"

fds() { ls "/proc/$PROXY_PID/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PROXY_PID/status"; }
metrics() { curl -sf "http://127.0.0.1:$MPORT/metrics"; }
queries_sum() { metrics | awk '/^pgwire_proxy_queries_total\{/ {s += $2} END {print s + 0}'; }
q() { "$PSQL" -X -q -At -d "$PROXY" "$@"; }
active_sessions() { metrics | awk '/^pgwire_proxy_sessions_active / {print $2}'; }

wait_idle() { # until the proxy has no session (bound 30 s)
  for _ in $(seq 300); do
    [ "$(active_sessions)" = 0 ] && return 0
    sleep 0.1
  done
  echo "soak: sessions_active still $(active_sessions) 30 s after the workload" >&2
  return 1
}

# warm-up, so first-use allocations are in the baseline
for _ in $(seq 20); do q -c "select 1" >/dev/null; done
q -c "select repeat('x',100) from generate_series(1,9000)" >/dev/null
wait_idle

# calibration: queries pgbench sends besides its transactions (scale check, ...)
before=$(queries_sum)
"$PGBENCH" -M simple -n -c 4 -j 2 -t 1 "$PROXY" >"$TMP/pgbench-calib.log" 2>&1
wait_idle
after=$(queries_sum)
PGBENCH_OVERHEAD=$(( after - before - 4 * 7 ))
# the warm-up needs no accounting: the run's deltas start here
START_METRICS=$TMP/metrics-start.txt
metrics >"$START_METRICS"
FDS_BEFORE=$(fds)
RSS_BEFORE=$(rss_kb)

# ---- workload -------------------------------------------------------------------------------
END=$(( $(date +%s) + SOAK_SECONDS ))
W=$TMP/work
mkdir -p "$W"

loop_large() {
  local ok=0 bad=0
  while [ "$(date +%s)" -lt "$END" ]; do
    if [ "$(q -c "select repeat('x',100) from generate_series(1,9000)" | wc -l)" = 9000 ]; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
    fi
  done
  echo "$ok $bad" >"$W/large"
}

loop_limit() {
  local ok=0 bad=0
  while [ "$(date +%s)" -lt "$END" ]; do
    if q -c "select generate_series(1,20000)" >/dev/null 2>"$W/limit.err"; then
      bad=$((bad + 1))
    elif grep -q "row limit of 10000 exceeded" "$W/limit.err"; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1)); cat "$W/limit.err" >>"$W/unexpected.txt"
    fi
    sleep 0.5
  done
  echo "$ok $bad" >"$W/limit"
}

loop_cancel() {
  local ok=0 bad=0 rc
  while [ "$(date +%s)" -lt "$END" ]; do
    rc=0
    timeout --foreground -s INT 1 "$PSQL" -X -q -At -d "$PROXY" -c "select pg_sleep(10)" \
      >/dev/null 2>"$W/cancel.err" || rc=$?
    if [ "$rc" != 0 ] && grep -q "canceling statement due to user request" "$W/cancel.err"; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1)); { echo "rc=$rc"; cat "$W/cancel.err"; } >>"$W/unexpected.txt"
    fi
    sleep 1
  done
  echo "$ok $bad" >"$W/cancel"
}

loop_connect() {
  local ok=0 bad=0
  while [ "$(date +%s)" -lt "$END" ]; do
    if [ "$(q -c "select 1" 2>>"$W/unexpected.txt")" = 1 ]; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
    fi
  done
  echo "$ok $bad" >"$W/connect"
}

loop_large & LOOP_PIDS+=($!)
loop_limit & LOOP_PIDS+=($!)
loop_cancel & LOOP_PIDS+=($!)
loop_connect & LOOP_PIDS+=($!)
PGBENCH_RC=0
"$PGBENCH" -M simple -n -c 4 -j 2 -T "$SOAK_SECONDS" "$PROXY" >"$TMP/pgbench.log" 2>&1 ||
  PGBENCH_RC=$?
for p in "${LOOP_PIDS[@]}"; do wait "$p" || true; done
LOOP_PIDS=()
IDLE_OK=1
wait_idle || IDLE_OK=0
metrics >"$TMP/metrics-end.txt"
LEFT_UPSTREAM=$("$PSQL" -X -At -d "$DIRECT" -c \
  "select count(*) from pg_stat_activity where application_name like '%[soak@%'")
# descriptors and memory: polled back to the baseline within a bound
FDS_AFTER=$(fds); RSS_AFTER=$(rss_kb)
for _ in $(seq 100); do
  FDS_AFTER=$(fds); RSS_AFTER=$(rss_kb)
  [ "$FDS_AFTER" -le $((FDS_BEFORE + FD_MARGIN)) ] &&
    [ "$RSS_AFTER" -le $((RSS_BEFORE + RSS_MARGIN_KB)) ] && break
  sleep 0.1
done
PROXY_ALIVE=0
kill -0 "$PROXY_PID" 2>/dev/null && PROXY_ALIVE=1

# ---- summary --------------------------------------------------------------------------------
export TMP W PGBENCH_RC PGBENCH_OVERHEAD FDS_BEFORE FDS_AFTER RSS_BEFORE RSS_AFTER FD_MARGIN \
  RSS_MARGIN_KB IDLE_OK LEFT_UPSTREAM PROXY_ALIVE SOAK_SECONDS PROXY_LOG
/usr/bin/python3 - <<'PY'
import os, re, sys

env = os.environ
tmp, w = env["TMP"], env["W"]


def parse(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


start, end = parse(f"{tmp}/metrics-start.txt"), parse(f"{tmp}/metrics-end.txt")
delta = lambda k: int(end.get(k, 0) - start.get(k, 0))
outcomes = {o: delta(f'pgwire_proxy_queries_total{{outcome="{o}"}}')
            for o in ("ok", "error", "denied", "limited", "rejected")}
answered = sum(outcomes.values())
errclass = {}
for k in set(start) | set(end):
    m = re.match(r'pgwire_proxy_errors_total\{class="(.*)"\}', k)
    if m and delta(k):
        errclass[m.group(1)] = delta(k)


def counts(name):
    try:
        ok, bad = open(f"{w}/{name}").read().split()
        return int(ok), int(bad)
    except (OSError, ValueError):
        return 0, 1


large, limit, cancel, connect = (counts(n) for n in ("large", "limit", "cancel", "connect"))
bench = open(f"{tmp}/pgbench.log").read()
m = re.search(r"number of transactions actually processed: (\d+)", bench)
tx = int(m.group(1)) if m else 0
m = re.search(r"number of failed transactions: (\d+)", bench)
tx_failed = int(m.group(1)) if m else 0
tps = re.search(r"tps = ([\d.]+)", bench)
overhead = int(env["PGBENCH_OVERHEAD"])
clients = 4
# every loop iteration sends exactly one Query, answered or not
sent_loops = sum(a + b for a, b in (large, limit, cancel, connect))
sent = tx * 7 + overhead + sent_loops

problems = []
# pgbench may stop a client in the middle of its last transaction when -T runs out
if not (0 <= answered - sent <= clients * 7):
    problems.append(f"queries answered ({answered}) != queries the clients sent ({sent}, "
                    f"up to {clients * 7} more from transactions cut by pgbench -T)")
if outcomes["limited"] != limit[0]:
    problems.append(f"limited outcomes {outcomes['limited']} != limit violations {limit[0]}")
if errclass.get("57", 0) != cancel[0]:
    problems.append(f"class-57 errors {errclass.get('57', 0)} != cancels seen {cancel[0]}")
forwarded = delta('pgwire_proxy_cancel_requests_total{outcome="forwarded"}')
if forwarded != cancel[0]:
    problems.append(f"cancel requests forwarded {forwarded} != cancels sent {cancel[0]}")
if errclass.get("54", 0) != limit[0]:
    problems.append(f"class-54 errors {errclass.get('54', 0)} != limit violations {limit[0]}")
stray = {c: n for c, n in errclass.items() if c not in ("54", "57")}
if stray:
    problems.append(f"errors not caused by the workload: {stray}")
for name, (ok, bad) in (("large", large), ("limit", limit), ("cancel", cancel),
                        ("connect", connect)):
    if bad or not ok:
        problems.append(f"{name} loop: {ok} as expected, {bad} not")
if env["PGBENCH_RC"] != "0" or tx == 0 or tx_failed:
    problems.append(f"pgbench: exit {env['PGBENCH_RC']}, {tx} transactions, {tx_failed} failed")
if outcomes["denied"] or outcomes["rejected"]:
    problems.append(f"unexpected denied/rejected outcomes: {outcomes}")
if env["IDLE_OK"] != "1":
    problems.append("sessions_active did not return to 0")
if env["LEFT_UPSTREAM"] != "0":
    problems.append(f"{env['LEFT_UPSTREAM']} upstream backends of the proxy left")
if env["PROXY_ALIVE"] != "1":
    problems.append("the proxy died")
fb, fa, rb, ra = (int(env[k]) for k in ("FDS_BEFORE", "FDS_AFTER", "RSS_BEFORE", "RSS_AFTER"))
if fa > fb + int(env["FD_MARGIN"]):
    problems.append(f"descriptors grew: {fb} -> {fa}")
if ra > rb + int(env["RSS_MARGIN_KB"]):
    problems.append(f"RSS grew: {rb} -> {ra} kB")
log = open(env["PROXY_LOG"], errors="replace").read()
for needle in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
    if needle in log:
        problems.append(f"{needle} in the proxy log")
try:
    unexpected = open(f"{w}/unexpected.txt").read().strip()
except OSError:
    unexpected = ""

print(f"""
pgwire-proxy soak: {env['SOAK_SECONDS']} s
  pgbench tpcb -M simple -c 4: {tx} transactions ({tps.group(1) if tps else '?'} tps), {tx_failed} failed; set-up queries {overhead}
  loops (as expected / not): large results {large[0]}/{large[1]}, limit violations {limit[0]}/{limit[1]}, cancels {cancel[0]}/{cancel[1]}, connect+select {connect[0]}/{connect[1]}
  queries sent by clients: {sent}   answered (sum of queries_total): {answered}
  queries_total by outcome: {outcomes}
  errors_total by class: {errclass or '{}'}   (54 = limits, 57 = cancels; anything else is unexpected)
  connections accepted: {delta('pgwire_proxy_connections_total{outcome="accepted"}')}, cancel requests forwarded: {delta('pgwire_proxy_cancel_requests_total{outcome="forwarded"}')}
  rows sent: {delta('pgwire_proxy_rows_sent_total')}, bytes sent: {delta('pgwire_proxy_bytes_sent_total')}
  proxy fds: {fb} -> {fa}   RSS: {rb} -> {ra} kB""")
if unexpected:
    print("  unexpected client output:\n    " + unexpected[:2000].replace("\n", "\n    "))
if problems:
    print("FAILED:\n  - " + "\n  - ".join(problems))
    sys.exit(1)
print("OK")
PY
