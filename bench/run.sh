#!/usr/bin/env bash
# pgwire-proxy benchmark suite.
#
#   bash bench/run.sh <path-to-pgwire-proxy-binary>      (or: make bench)
#
# Starts a throwaway PostgreSQL 15, PgBouncer (session mode) and pgwire-proxy on free
# 127.0.0.1 ports, measures every case against all targets in the same run, alternating
# (direct, pgbouncer, proxy, direct, ...), takes the median of BENCH_REPS repetitions and
# prints a markdown table with absolute numbers and ratios to direct. See bench/README.md.
#
# Environment:
#   BENCH_T=10          pgbench -T seconds           BENCH_REPS=3   repetitions (median)
#   BENCH_QUICK=1       smoke test: -T 3, 1 rep, results not written to RESULTS.md
#   BENCH_CASES="a b x c d e" subset of cases to run (f is measured during a; x is the
#                       extended protocol: select-only with -M extended and -M prepared)
#   BENCH_IDLE_SESSIONS=1000  sessions for case e
#   BENCH_RESULTS=path  where to write the "Latest run" section (default bench/RESULTS.md
#                       for full runs, nothing for quick runs; set to "" to skip)
#   BENCH_PROXY_FLAGS   extra flags for every pgwire-proxy instance (word-split)
#   BENCH_KEEP=1        keep the temporary directory (logs) after the run
#
# If the binary is missing, the proxy columns are reported as n/a (useful while developing).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BINARY=${1:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
PYTHON=${PYTHON:-/usr/bin/python3}

QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    T=${BENCH_T:-3}
    REPS=${BENCH_REPS:-1}
    RESULTS=${BENCH_RESULTS-}
else
    T=${BENCH_T:-10}
    REPS=${BENCH_REPS:-3}
    RESULTS=${BENCH_RESULTS-$HERE/RESULTS.md}
fi
CASES=" ${BENCH_CASES:-a b x c d e} "
IDLE_N=${BENCH_IDLE_SESSIONS:-1000}
read -r -a EXTRA_PROXY_FLAGS <<<"${BENCH_PROXY_FLAGS:-}"

[[ $T =~ ^[0-9]+$ && $T -ge 1 ]] || { echo "BENCH_T must be a positive integer" >&2; exit 2; }
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 ]] || { echo "BENCH_REPS must be a positive integer" >&2; exit 2; }
[[ $IDLE_N =~ ^[0-9]+$ && $IDLE_N -ge 1 ]] || { echo "BENCH_IDLE_SESSIONS must be a positive integer" >&2; exit 2; }

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

HAVE_PROXY=1
if [[ -z $BINARY ]]; then
    echo "usage: bash bench/run.sh <path-to-pgwire-proxy-binary>" >&2
    exit 2
fi
if [[ ! -x $BINARY ]]; then
    log "WARNING: $BINARY is not an executable; pgwire-proxy columns will be n/a"
    HAVE_PROXY=0
else
    BINARY=$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")
fi
[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL and PgBouncer are started as 'postgres' via runuser)"
for f in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/pgbench" "$PGBIN/psql" "$PGBOUNCER"; do
    [[ -x $f ]] || die "missing $f"
done
command -v cc >/dev/null || die "missing C compiler (cc)"

# --------------------------------------------------------------------------------------
# Process bookkeeping and cleanup: only PIDs started by this script are ever signalled.
# --------------------------------------------------------------------------------------
WORK=""
PG_STARTED=0
declare -A PORT=() PID=()
OWN_PIDS=()        # every daemon PID this script started (proxy children, pgbouncers)
USED_PORTS=" "

proc_state() { # prints the /proc state letter of PID, or nothing if gone
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    printf '%s' "${s%% *}"
}

stop_pid() { # stop_pid PID: TERM, wait up to 10 s, then KILL; reaps own children
    local pid=$1 i st
    [[ -n $pid ]] || return 0
    st=$(proc_state "$pid")
    if [[ -n $st && $st != Z ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            st=$(proc_state "$pid")
            [[ -z $st || $st == Z ]] && break
            sleep 0.1
        done
        st=$(proc_state "$pid")
        if [[ -n $st && $st != Z ]]; then
            log "pid $pid did not stop on TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local p keep=()
    for p in "${OWN_PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    OWN_PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? p
    set +e
    trap - EXIT INT TERM
    for p in "${OWN_PIDS[@]}"; do
        stop_pid "$p"
    done
    if [[ $PG_STARTED == 1 ]]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then
            log "logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { # a currently free TCP port on 127.0.0.1, distinct from ports handed out before
    local p i
    for ((i = 0; i < 50; i++)); do
        p=$("$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        if [[ $USED_PORTS != *" $p "* ]]; then
            USED_PORTS+="$p "
            printf '%s' "$p"
            return 0
        fi
    done
    die "could not find a free port"
}

psql_at() { # psql_at PORT SQL: run one statement, unaligned tuples-only output
    "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

wait_ready() { # wait_ready PORT PID NAME: until `select 1` works (<= 30 s); 1 on failure
    local port=$1 pid=$2 name=$3 i st
    for ((i = 0; i < 300; i++)); do
        if psql_at "$port" 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n $pid ]]; then
            st=$(proc_state "$pid")
            if [[ -z $st || $st == Z ]]; then
                log "$name exited during start-up (see $WORK)"
                return 1
            fi
        fi
        sleep 0.1
    done
    log "$name did not answer 'select 1' on port $port within 30 s (see $WORK)"
    return 1
}

# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------
start_postgres() {
    PORT[direct]=$(free_port)
    mkdir -p "$WORK/pg"
    chown postgres:postgres "$WORK/pg"
    log "initdb (PostgreSQL 15) in $WORK/pg/data"
    runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres -A trust -E UTF8 \
        --locale=C --no-sync >"$WORK/initdb.log" 2>&1 || die "initdb failed (see $WORK/initdb.log)"
    cat >>"$WORK/pg/data/postgresql.conf" <<EOF

# pgwire-proxy bench
listen_addresses = '127.0.0.1'
port = ${PORT[direct]}
unix_socket_directories = '$WORK/pg'
max_connections = 1200
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
autovacuum = off
EOF
    log "starting PostgreSQL on 127.0.0.1:${PORT[direct]}"
    PG_STARTED=1
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/postgres.log" -w -t 60 \
        start >/dev/null || die "PostgreSQL did not start (see $WORK/pg/postgres.log)"
    PID[direct]=$(head -n1 "$WORK/pg/data/postmaster.pid")
    wait_ready "${PORT[direct]}" "" postgres || die "PostgreSQL is not answering"
    log "pgbench -i -s 10"
    "$PGBIN/pgbench" -i -s 10 -q -h 127.0.0.1 -p "${PORT[direct]}" -U postgres postgres \
        >"$WORK/pgbench-init.log" 2>&1 || die "pgbench -i failed (see $WORK/pgbench-init.log)"
    psql_at "${PORT[direct]}" 'vacuum analyze' >/dev/null
    PG_VERSION=$(psql_at "${PORT[direct]}" 'show server_version')
}

# upstream_host NAME: how instance NAME reaches PostgreSQL. Both PgBouncer and the proxy use
# PostgreSQL's Unix socket (a proxy deployed on the database host); instances whose name
# ends in _tcp use 127.0.0.1 instead, to show what the second TCP hop costs.
upstream_host() {
    if [[ $1 == *_tcp ]]; then printf '127.0.0.1'; else printf '%s' "$WORK/pg"; fi
}

# start_pgbouncer NAME: fresh PgBouncer (session mode) instance; sets PORT[NAME], PID[NAME]
start_pgbouncer() {
    local name=$1 dir=$WORK/$1 port i pid=""
    port=$(free_port)
    mkdir -p "$dir"
    printf '"postgres" ""\n' >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
postgres = host=$(upstream_host "$name") port=${PORT[direct]} dbname=postgres user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
default_pool_size = 100
max_client_conn = 1200
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    chown -R postgres:postgres "$dir"
    # PgBouncer refuses to run as root; runuser's PAM session resets the soft fd limit to
    # 1024, too low for max_client_conn 1200, so raise it (within the hard limit) first.
    # shellcheck disable=SC2016 # expanded by the inner sh
    runuser -u postgres -- sh -c 'ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" -d "$1"' \
        "$PGBOUNCER" "$dir/pgbouncer.ini" >"$dir/start.log" 2>&1 ||
        die "PgBouncer $name did not start (see $dir)"
    for ((i = 0; i < 100; i++)); do
        if [[ -s $dir/pgbouncer.pid ]]; then
            pid=$(<"$dir/pgbouncer.pid")
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == pgbouncer ]] && break
            pid=""
        fi
        sleep 0.1
    done
    [[ -n $pid ]] || die "PgBouncer $name wrote no pidfile (see $dir)"
    OWN_PIDS+=("$pid")
    PORT[$name]=$port
    PID[$name]=$pid
    wait_ready "$port" "$pid" "PgBouncer $name" || die "PgBouncer $name is not answering"
}

# start_proxy NAME [FLAGS...]: fresh pgwire-proxy instance; sets PORT[NAME], PID[NAME].
# Not fatal: if the binary is missing or the instance does not answer, NAME stays unset
# and its measurements are reported as n/a.
start_proxy() {
    local name=$1 port pid
    shift
    [[ $HAVE_PROXY == 1 ]] || return 0
    port=$(free_port)
    # In its own session, as PgBouncer's -d and a service manager give it: with the kernel's
    # autogroup scheduling (on by default), a process in the script's session would share a
    # scheduling group, hence a CPU share, with pgbench. setsid does not fork here (a
    # background job is no group leader), so $! is the proxy's PID.
    setsid "$BINARY" --listen "127.0.0.1:$port" \
        --upstream "host=$(upstream_host "$name") port=${PORT[direct]} dbname=postgres user=postgres" \
        --max-connections 1100 "$@" ${EXTRA_PROXY_FLAGS[@]+"${EXTRA_PROXY_FLAGS[@]}"} \
        </dev/null >"$WORK/$name.log" 2>&1 &
    pid=$!
    OWN_PIDS+=("$pid")
    PORT[$name]=$port
    PID[$name]=$pid
    if ! wait_ready "$port" "$pid" "pgwire-proxy $name"; then
        log "pgwire-proxy $name: $(tail -n 3 "$WORK/$name.log" | tr '\n' ' ')"
        stop_target "$name"
    fi
}

# start_floor NAME: the bytes-only relay (bench/floor.c), started like the proxy
start_floor() {
    local name=$1 port pid
    port=$(free_port)
    setsid "$WORK/floor" "$port" "$(upstream_host "$name")" "${PORT[direct]}" \
        </dev/null >"$WORK/$name.log" 2>&1 &
    pid=$!
    OWN_PIDS+=("$pid")
    PORT[$name]=$port
    PID[$name]=$pid
    wait_ready "$port" "$pid" "floor relay $name" || die "floor relay $name is not answering"
}

stop_target() { # stop_target NAME (PgBouncer, floor or proxy instance)
    local pid=${PID[$1]:-}
    [[ -n $pid ]] || return 0
    stop_pid "$pid"
    forget_pid "$pid"
    unset "PID[$1]" "PORT[$1]"
}

# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # utime+stime (all threads) of PID, in clock ticks; empty if unknown
    local s f
    [[ -n ${1:-} ]] || return 0
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    read -r -a f <<<"$s"
    # fields after "(comm)" start at field 3; utime is field 14, stime field 15
    printf '%s' $((f[11] + f[12]))
}

declare -A R=() # R[metric:target] = space-separated per-rep values ("fail" for failures)
add() { R[$1:$2]="${R[$1:$2]:-}$3 "; }

# run_pgbench TARGET METRIC-PREFIX pgbench-args...: records PREFIX_tps, PREFIX_lat,
# and PREFIX_cpu (target CPU seconds per 100k transactions, when the target PID is known)
run_pgbench() {
    local target=$1 prefix=$2 out c0 c1 tps lat ntx
    shift 2
    if [[ -z ${PORT[$target]:-} ]]; then
        add "${prefix}_tps" "$target" fail
        add "${prefix}_lat" "$target" fail
        return 0
    fi
    c0=$(cpu_ticks "${PID[$target]:-}")
    if ! out=$(timeout $((T + 120)) "$PGBIN/pgbench" -h 127.0.0.1 -p "${PORT[$target]}" -U postgres \
        "$@" -T "$T" postgres 2>&1); then
        log "pgbench on $target failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
        add "${prefix}_tps" "$target" fail
        add "${prefix}_lat" "$target" fail
        add "${prefix}_cpu" "$target" fail
        return 0
    fi
    c1=$(cpu_ticks "${PID[$target]:-}")
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n1)
    ntx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | head -n1)
    add "${prefix}_tps" "$target" "${tps:-fail}"
    add "${prefix}_lat" "$target" "${lat:-fail}"
    if [[ $target != direct && -n $c0 && -n $c1 && ${ntx:-0} -gt 0 ]]; then
        add "${prefix}_cpu" "$target" "$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$ntx" \
            'BEGIN { printf "%.4f", d / hz / n * 100000 }')"
    fi
}

# run_psql_time TARGET METRIC SQL: wall time of psql streaming the result to /dev/null
run_psql_time() {
    local target=$1 metric=$2 sql=$3 t0 t1
    if [[ -z ${PORT[$target]:-} ]]; then
        add "$metric" "$target" fail
        return 0
    fi
    t0=$(date +%s.%N)
    if ! timeout 600 "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORT[$target]}" \
        -U postgres -d postgres -c "$sql" >/dev/null 2>"$WORK/psql.err"; then
        log "psql on $target failed: $(head -c 300 "$WORK/psql.err" | tr '\n' ' ')"
        add "$metric" "$target" fail
        return 0
    fi
    t1=$(date +%s.%N)
    add "$metric" "$target" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
}

idle_kv() { sed -n "s/^$1=//p" <<<"$2" | head -n1; }

# run_idle LABEL [INSTANCE]: IDLE_N concurrent idle sessions against INSTANCE (default
# LABEL), results recorded under LABEL; memory is measured for every target but direct
run_idle() {
    local label=$1 inst=${2:-$1} out pidarg=()
    if [[ -z ${PORT[$inst]:-} ]]; then
        add e_mem "$label" fail
        add e_sel "$label" fail
        add e_sel2 "$label" fail
        add e_open "$label" fail
        return 0
    fi
    [[ $label != direct ]] && pidarg=(-p "${PID[$inst]}")
    if ! out=$(timeout 300 "$WORK/idle_sessions" -n "$IDLE_N" -t 240 "${pidarg[@]}" \
        -d "host=127.0.0.1 port=${PORT[$inst]} dbname=postgres user=postgres" 2>"$WORK/idle.err"); then
        log "idle_sessions on $label failed: $(head -c 300 "$WORK/idle.err" | tr '\n' ' ')"
        add e_mem "$label" fail
        add e_sel "$label" fail
        add e_sel2 "$label" fail
        add e_open "$label" fail
        return 0
    fi
    if [[ $label != direct ]]; then
        add e_mem "$label" "$(idle_kv kib_per_session "$out")"
        add e_rss0 "$label" "$(idle_kv rss_before_kib "$out")"
        add e_rss1 "$label" "$(idle_kv rss_after_kib "$out")"
    fi
    add e_sel "$label" "$(idle_kv select1_ms_median "$out")"
    add e_sel2 "$label" "$(idle_kv select1_again_ms_median "$out")"
    add e_open "$label" "$(idle_kv open_seconds "$out")"
    log "   $label: $(tr '\n' ' ' <<<"$out")"
}

wait_backends_below() { # wait (≤ 60 s) until PostgreSQL has fewer than $1 client backends
    local i n
    for ((i = 0; i < 600; i++)); do
        n=$(psql_at "${PORT[direct]}" \
            "select count(*) from pg_stat_activity where backend_type = 'client backend'" 2>/dev/null) || n=999999
        ((n < $1)) && return 0
        sleep 0.1
    done
    log "warning: PostgreSQL still has $n client backends"
}

has_case() { [[ $CASES == *" $1 "* ]]; }


# --------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/pgwp-bench.XXXXXX)
chmod 755 "$WORK"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    log "warning: load average is already $LOAD_START on $(nproc) CPUs; other work will add noise"
fi
log "work dir $WORK; T=${T}s, reps=$REPS, cases:$CASES"

log "compiling bench/idle_sessions.c and bench/floor.c"
cc -O2 -Wall -Wextra -std=c11 -I"$("$PGBIN/pg_config" --includedir)" -o "$WORK/idle_sessions" \
    "$HERE/idle_sessions.c" -lpq || die "could not compile idle_sessions.c (needs libpq-dev)"
cc -O2 -Wall -Wextra -std=c11 -o "$WORK/floor" "$HERE/floor.c" || die "could not compile floor.c"

start_postgres
start_pgbouncer pgbouncer
TARGETS=(direct pgbouncer proxy)

if has_case a; then
    start_pgbouncer pgbouncer_tcp
    start_floor floor
    start_floor floor_tcp
    start_proxy proxy
    start_proxy proxy_policy --deny alter_system
    start_proxy proxy_nostats --statement-stats 0
    start_proxy proxy_tcp
    for ((r = 1; r <= REPS; r++)); do
        for tg in direct pgbouncer floor proxy proxy_nostats proxy_policy pgbouncer_tcp floor_tcp \
            proxy_tcp; do
            log "a. select-only: $tg rep $r/$REPS (${T}s)"
            run_pgbench "$tg" a -n -S -M simple -c 16 -j 2
        done
    done
    stop_target proxy
    stop_target proxy_policy
    stop_target proxy_nostats
    stop_target proxy_tcp
    stop_target pgbouncer_tcp
    stop_target floor
    stop_target floor_tcp
fi

if has_case b; then
    start_floor floor
    start_proxy proxy
    start_proxy proxy_policy --deny alter_system
    for ((r = 1; r <= REPS; r++)); do
        for tg in direct pgbouncer floor proxy proxy_policy; do
            log "b. tpcb-like: $tg rep $r/$REPS (${T}s)"
            run_pgbench "$tg" b -n -M simple -c 8 -j 2
        done
    done
    stop_target proxy
    stop_target proxy_policy
    stop_target floor
fi

if has_case x; then
    start_floor floor
    start_proxy proxy_ext --extended-protocol allow
    start_proxy proxy_ext_policy --extended-protocol allow --deny alter_system
    for ((r = 1; r <= REPS; r++)); do
        for mode in extended prepared; do
            for tg in direct pgbouncer floor proxy_ext proxy_ext_policy; do
                log "x. select-only -M $mode: $tg rep $r/$REPS (${T}s)"
                run_pgbench "$tg" "x_$mode" -n -S -M "$mode" -c 16 -j 2
            done
        done
    done
    stop_target proxy_ext
    stop_target proxy_ext_policy
    stop_target floor
fi

if has_case c; then
    start_proxy proxy --max-rows 0 --max-bytes 0
    log "c. warm-up (direct, untimed)"
    psql_at "${PORT[direct]}" 'select * from pgbench_accounts' >/dev/null
    psql_at "${PORT[direct]}" "select g, repeat('x', 1000) from generate_series(1, 200000) g" >/dev/null
    for ((r = 1; r <= REPS; r++)); do
        for tg in "${TARGETS[@]}"; do
            log "c1. 1,000,000 narrow rows: $tg rep $r/$REPS"
            run_psql_time "$tg" c1 'select * from pgbench_accounts'
        done
    done
    for ((r = 1; r <= REPS; r++)); do
        for tg in "${TARGETS[@]}"; do
            log "c2. 200,000 rows of 1 kB: $tg rep $r/$REPS"
            run_psql_time "$tg" c2 "select g, repeat('x', 1000) from generate_series(1, 200000) g"
        done
    done
    stop_target proxy
fi

if has_case d; then
    # SCRAM-SHA-256 with a stored verifier (4096 iterations, PostgreSQL's default): the
    # server's work is two HMACs and a hash; PBKDF2 is pgbench's (libpq's) cost
    if [[ $HAVE_PROXY == 1 ]]; then
        printf '"postgres" "%s"\n' "$(printf 'bench-pw\n' | "$BINARY" --hash-password)" \
            >"$WORK/userlist.txt"
        chmod 600 "$WORK/userlist.txt"
    fi
    export PGPASSWORD=bench-pw # sent only to a server that asks: the scram instances
    start_proxy proxy --workers 1
    start_proxy proxy_tcp
    start_proxy proxy_scram --workers 1 --auth-type scram-sha-256 --auth-file "$WORK/userlist.txt" \
        --auth-secret-file "$WORK/auth.secret"
    for ((r = 1; r <= REPS; r++)); do
        for tg in "${TARGETS[@]}" proxy_tcp proxy_scram; do
            log "d. connection rate (-C): $tg rep $r/$REPS (${T}s)"
            run_pgbench "$tg" d -n -S -M simple -C -c 8 -j 2
        done
        # a second client's select-only latency on the same (only) worker while the connect
        # storm runs: authentication must not stall the other sessions of its worker
        for tg in proxy proxy_scram; do
            log "d. select latency during a connect storm: $tg rep $r/$REPS (${T}s)"
            run_pgbench "$tg" d_storm -n -S -M simple -C -c 8 -j 2 >/dev/null &
            storm=$!
            run_pgbench "$tg" d_quiet -n -S -M simple -c 1 -j 1
            wait "$storm" || true
        done
    done
    unset PGPASSWORD
    stop_target proxy
    stop_target proxy_tcp
    stop_target proxy_scram
fi

if has_case e; then
    # A fresh PgBouncer and proxy per repetition, so "before" is a clean baseline.
    for ((r = 1; r <= REPS; r++)); do
        for tg in "${TARGETS[@]}"; do
            wait_backends_below 200
            log "e. $IDLE_N idle sessions: $tg rep $r/$REPS"
            case $tg in
                direct) run_idle direct ;;
                pgbouncer)
                    start_pgbouncer pgbouncer_idle
                    run_idle pgbouncer pgbouncer_idle
                    stop_target pgbouncer_idle
                    ;;
                proxy)
                    # idle_sessions opens every session at once from one address, which is
                    # what the per-address startup cap (64 by default) exists to refuse
                    start_proxy proxy_idle --max-startup-per-address "$((IDLE_N + 16))" \
                        --max-startup-connections "$((IDLE_N + 16))"
                    run_idle proxy proxy_idle
                    stop_target proxy_idle
                    ;;
            esac
        done
    done
fi

# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
median() { # median of the numeric values in R[$1]; "n/a" if none
    tr ' ' '\n' <<<"${R[$1]:-}" | awk '/^-?[0-9]+(\.[0-9]+)?$/ { print }' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a";
              else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt() { # fmt VALUE DECIMALS
    [[ $1 == n/a ]] && { printf 'n/a'; return; }
    awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'
}
ratio() { # ratio A B: A / B formatted "0.00×", or n/a
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) printf "n/a";
                                     else printf "%.2f×", a / b }'
}
meets() { # meets RATIO(0.00×) OP THRESHOLD -> yes/no/n/a
    awk -v r="${1%×}" -v op="$2" -v t="$3" 'BEGIN { if (r == "n/a") { print "n/a"; exit }
        ok = (op == ">=") ? (r + 0 >= t + 0) : (r + 0 <= t + 0); print ok ? "yes" : "**no**" }'
}
both() { # both A B -> yes if both yes
    if [[ $1 == n/a || $2 == n/a ]]; then printf 'n/a'
    elif [[ $1 == yes && $2 == yes ]]; then printf 'yes'
    else printf '**no**'; fi
}

TABLE="| case | metric | direct | PgBouncer | pgwire-proxy | proxy vs direct | PgBouncer vs direct | target | met |
|---|---|---:|---:|---:|---:|---:|---|---|"
row() { TABLE+=$'\n'"| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 | $9 |"; }

if has_case a; then
    d=$(median a_tps:direct) b=$(median a_tps:pgbouncer) p=$(median a_tps:proxy) q=$(median a_tps:proxy_policy)
    rp=$(ratio "$p" "$d") rb=$(ratio "$b" "$d")
    gtb=$(awk -v p="$p" -v b="$b" 'BEGIN { if (p == "n/a" || b == "n/a") print "n/a"; else print (p > b) ? "yes" : "no" }')
    row "a. select-only \`-S -c16 -j2\`" "TPS (higher is better)" "$(fmt "$d" 0)" "$(fmt "$b" 0)" "$(fmt "$p" 0)" \
        "$rp" "$rb" "≥ 0.90× and > PgBouncer" "$(both "$(meets "$rp" '>=' 0.90)" "$gtb")"
    row "a. select-only, policy parsing on (\`--deny alter_system\`)" "TPS" "$(fmt "$d" 0)" "—" "$(fmt "$q" 0)" \
        "$(ratio "$q" "$d")" "—" "≥ 0.90× (on ÷ off: $(ratio "$q" "$p"))" "$(meets "$(ratio "$q" "$d")" '>=' 0.90)"
    b=$(median a_tps:pgbouncer_tcp) t=$(median a_tps:proxy_tcp)
    rp=$(ratio "$t" "$d")
    gtb=$(awk -v p="$t" -v b="$b" 'BEGIN { if (p == "n/a" || b == "n/a") print "n/a"; else print (p > b) ? "yes" : "no" }')
    row "a. select-only, both reaching PostgreSQL over TCP" "TPS" "$(fmt "$d" 0)" "$(fmt "$b" 0)" "$(fmt "$t" 0)" \
        "$rp" "$(ratio "$b" "$d")" "≥ 0.90× and > PgBouncer" "$(both "$(meets "$rp" '>=' 0.90)" "$gtb")"
    d=$(median a_lat:direct) b=$(median a_lat:pgbouncer) p=$(median a_lat:proxy) q=$(median a_lat:proxy_policy)
    row "a. select-only" "mean latency ms (ratio = direct ÷ target)" "$(fmt "$d" 3)" "$(fmt "$b" 3)" "$(fmt "$p" 3)" \
        "$(ratio "$d" "$p")" "$(ratio "$d" "$b")" "—" "—"
    row "a. select-only, policy on" "mean latency ms (ratio = direct ÷ target)" "$(fmt "$d" 3)" "—" "$(fmt "$q" 3)" \
        "$(ratio "$d" "$q")" "—" "—" "—"
fi
if has_case b; then
    d=$(median b_tps:direct) b=$(median b_tps:pgbouncer) p=$(median b_tps:proxy)
    rp=$(ratio "$p" "$d")
    row "b. tpcb-like \`-c8 -j2\`" "TPS (higher is better)" "$(fmt "$d" 0)" "$(fmt "$b" 0)" "$(fmt "$p" 0)" \
        "$rp" "$(ratio "$b" "$d")" "≥ 0.95×" "$(meets "$rp" '>=' 0.95)"
fi
if has_case x; then
    for mode in extended prepared; do
        d=$(median "x_${mode}_tps:direct") b=$(median "x_${mode}_tps:pgbouncer") p=$(median "x_${mode}_tps:proxy_ext")
        q=$(median "x_${mode}_tps:proxy_ext_policy")
        rp=$(ratio "$p" "$d")
        gtb=$(awk -v p="$p" -v b="$b" 'BEGIN { if (p == "n/a" || b == "n/a") print "n/a"; else print (p > b) ? "yes" : "no" }')
        row "x. select-only \`-S -M $mode -c16 -j2\` (\`--extended-protocol allow\`)" "TPS" "$(fmt "$d" 0)" "$(fmt "$b" 0)" \
            "$(fmt "$p" 0)" "$rp" "$(ratio "$b" "$d")" "≥ 0.90× and > PgBouncer" "$(both "$(meets "$rp" '>=' 0.90)" "$gtb")"
        row "x. same, policy parsing on (\`--deny alter_system\`)" "TPS" "$(fmt "$d" 0)" "—" "$(fmt "$q" 0)" \
            "$(ratio "$q" "$d")" "—" "≥ 0.90× (on ÷ off: $(ratio "$q" "$p"))" "$(meets "$(ratio "$q" "$d")" '>=' 0.90)"
    done
fi
if has_case c; then
    d=$(median c1:direct) b=$(median c1:pgbouncer) p=$(median c1:proxy)
    rp=$(ratio "$d" "$p")
    row "c1. 1,000,000 narrow rows → psql → /dev/null" "wall s (ratio = direct ÷ target, higher is better)" \
        "$(fmt "$d" 3)" "$(fmt "$b" 3)" "$(fmt "$p" 3)" "$rp" "$(ratio "$d" "$b")" "≥ 0.95×" "$(meets "$rp" '>=' 0.95)"
    d=$(median c2:direct) b=$(median c2:pgbouncer) p=$(median c2:proxy)
    rp=$(ratio "$d" "$p")
    row "c2. 200,000 rows × 1 kB → psql → /dev/null" "wall s (ratio = direct ÷ target, higher is better)" \
        "$(fmt "$d" 3)" "$(fmt "$b" 3)" "$(fmt "$p" 3)" "$rp" "$(ratio "$d" "$b")" "≥ 0.95×" "$(meets "$rp" '>=' 0.95)"
fi
if has_case d; then
    d=$(median d_tps:direct) b=$(median d_tps:pgbouncer) p=$(median d_tps:proxy)
    rp=$(ratio "$p" "$d")
    row "d. connection rate \`-S -C -c8 -j2\`" "connections/s = TPS (higher is better)" "$(fmt "$d" 0)" "$(fmt "$b" 0)" \
        "$(fmt "$p" 0)" "$rp" "$(ratio "$b" "$d")" "≥ 0.90×" "$(meets "$rp" '>=' 0.90)"
    t=$(median d_tps:proxy_tcp) rp=$(ratio "$t" "$d")
    row "d. connection rate, proxy reaching PostgreSQL over TCP" "connections/s" "$(fmt "$d" 0)" "—" \
        "$(fmt "$t" 0)" "$rp" "—" "≥ 0.90×" "$(meets "$rp" '>=' 0.90)"
    t=$(median d_tps:proxy_scram) rp=$(ratio "$t" "$p")
    row "d. connection rate, clients authenticated with scram-sha-256 (4096 iterations)" \
        "connections/s (ratio = scram ÷ trust proxy)" "—" "—" "$(fmt "$t" 0)" "$rp" "—" "—" "—"
    q=$(median d_quiet_lat:proxy) s=$(median d_quiet_lat:proxy_scram)
    row "d. a second client's select-only latency during the connect storm, 1 worker" \
        "ms, trust storm → scram storm (lower is better)" "—" "—" "$(fmt "$q" 3) → $(fmt "$s" 3)" \
        "$(ratio "$s" "$q")" "—" "—" "—"
fi
if has_case e; then
    b=$(median e_mem:pgbouncer) p=$(median e_mem:proxy)
    mem_ok=$(awk -v p="$p" 'BEGIN { if (p == "n/a") print "n/a"; else print (p <= 64) ? "yes" : "**no**" }')
    row "e. $IDLE_N idle sessions" "process RSS growth, KiB/session (lower is better)" "—" "$(fmt "$b" 1)" \
        "$(fmt "$p" 1)" "—" "—" "≤ 64 KiB/session" "$mem_ok"
    d=$(median e_sel:direct) b=$(median e_sel:pgbouncer) p=$(median e_sel:proxy)
    row "e. $IDLE_N idle sessions" "first \`select 1\` on an idle session with all open, ms (ratio = direct ÷ target)" \
        "$(fmt "$d" 3)" "$(fmt "$b" 3)" "$(fmt "$p" 3)" "$(ratio "$d" "$p")" "$(ratio "$d" "$b")" "—" "—"
    d=$(median e_sel2:direct) b=$(median e_sel2:pgbouncer) p=$(median e_sel2:proxy)
    row "e. $IDLE_N idle sessions" "second \`select 1\` on the same session, ms (ratio = direct ÷ target)" \
        "$(fmt "$d" 3)" "$(fmt "$b" 3)" "$(fmt "$p" 3)" "$(ratio "$d" "$p")" "$(ratio "$d" "$b")" "—" "—"
    d=$(median e_open:direct) b=$(median e_open:pgbouncer) p=$(median e_open:proxy)
    row "e. $IDLE_N idle sessions" "time to open all, s (ratio = direct ÷ target)" \
        "$(fmt "$d" 2)" "$(fmt "$b" 2)" "$(fmt "$p" 2)" "$(ratio "$d" "$p")" "$(ratio "$d" "$b")" "—" "—"
fi
if has_case a; then
    b=$(median a_cpu:pgbouncer) p=$(median a_cpu:proxy) q=$(median a_cpu:proxy_policy)
    rp=$(ratio "$p" "$b") rq=$(ratio "$q" "$b")
    row "f. CPU per 100,000 select-only queries (during a)" "CPU s, utime+stime (lower is better)" "—" "$(fmt "$b" 3)" \
        "$(fmt "$p" 3)" "proxy ÷ PgBouncer: $rp" "—" "≤ PgBouncer (≤ 1.00×)" "$(meets "$rp" '<=' 1.00)"
    row "f. same, policy parsing on" "CPU s" "—" "$(fmt "$b" 3)" "$(fmt "$q" 3)" "proxy ÷ PgBouncer: $rq" "—" \
        "≤ PgBouncer" "$(meets "$rq" '<=' 1.00)"
    s=$(median a_cpu:proxy_nostats) rs=$(ratio "$p" "$s")
    row "f. same, statement statistics off (\`--statement-stats 0\`)" "CPU s" "—" "—" "$(fmt "$s" 3)" \
        "statistics on ÷ off: $rs" "—" "on ≤ 1.03× off" "$(meets "$rs" '<=' 1.03)"
    b=$(median a_cpu:pgbouncer_tcp) t=$(median a_cpu:proxy_tcp) rt=$(ratio "$t" "$b")
    row "f. same, both reaching PostgreSQL over TCP" "CPU s" "—" "$(fmt "$b" 3)" "$(fmt "$t" 3)" \
        "proxy ÷ PgBouncer: $rt" "—" "≤ PgBouncer" "$(meets "$rt" '<=' 1.00)"
fi

# Against the floor relay: the physical limit of a user-space relay of the same model.
FLOOR="| case | floor | pgwire-proxy | policy on | PgBouncer | proxy ÷ floor | policy on ÷ floor | PgBouncer ÷ floor | target | met |
|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
frow() { FLOOR+=$'\n'"| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 | $9 | ${10} |"; }
floor_tps_row() { # floor_tps_row LABEL PREFIX FLOOR PROXY POLICY BOUNCER
    local f p q b rp rq rb ok
    f=$(median "$2_tps:$3") p=$(median "$2_tps:$4") b=$(median "$2_tps:$6")
    q=n/a
    [[ -n $5 ]] && q=$(median "$2_tps:$5")
    rp=$(ratio "$p" "$f") rq=$(ratio "$q" "$f") rb=$(ratio "$b" "$f")
    ok=$(both "$(meets "$rp" '>=' 0.95)" "$(awk -v p="$p" -v b="$b" 'BEGIN {
        if (p == "n/a" || b == "n/a") print "n/a"; else print (p > b) ? "yes" : "**no**" }')")
    [[ -n $5 ]] && ok=$(both "$ok" "$(meets "$rq" '>=' 0.95)")
    frow "$1" "$(fmt "$f" 0)" "$(fmt "$p" 0)" "$(fmt "$q" 0)" "$(fmt "$b" 0)" "$rp" "$rq" "$rb" \
        "≥ 0.95× the floor (policy off and on) and > PgBouncer" "$ok"
}
floor_cpu_row() { # floor_cpu_row LABEL PREFIX FLOOR PROXY POLICY BOUNCER
    local f p q b rp rq rb ok
    f=$(median "$2_cpu:$3") p=$(median "$2_cpu:$4") b=$(median "$2_cpu:$6")
    q=n/a
    [[ -n $5 ]] && q=$(median "$2_cpu:$5")
    rp=$(ratio "$p" "$f") rq=$(ratio "$q" "$f") rb=$(ratio "$b" "$f")
    ok=$(meets "$rp" '<=' 1.10)
    [[ -n $5 ]] && ok=$(both "$ok" "$(meets "$rq" '<=' 1.10)")
    frow "$1" "$(fmt "$f" 3)" "$(fmt "$p" 3)" "$(fmt "$q" 3)" "$(fmt "$b" 3)" "$rp" "$rq" "$rb" \
        "≤ 1.10× the floor's CPU (lower is better)" "$ok"
}
if has_case a; then
    floor_tps_row "a. select-only, TPS" a floor proxy proxy_policy pgbouncer
    floor_cpu_row "a. select-only, CPU s per 100,000 queries" a floor proxy proxy_policy pgbouncer
    floor_tps_row "a. select-only over TCP, TPS" a floor_tcp proxy_tcp "" pgbouncer_tcp
    floor_cpu_row "a. select-only over TCP, CPU s per 100,000" a floor_tcp proxy_tcp "" pgbouncer_tcp
fi
if has_case x; then
    for mode in extended prepared; do
        floor_tps_row "x. select-only -M $mode, TPS" "x_$mode" floor proxy_ext proxy_ext_policy pgbouncer
        floor_cpu_row "x. select-only -M $mode, CPU s per 100,000 queries" "x_$mode" floor proxy_ext proxy_ext_policy pgbouncer
    done
fi
if has_case b; then
    floor_tps_row "b. tpcb-like, TPS" b floor proxy proxy_policy pgbouncer
    floor_cpu_row "b. tpcb-like, CPU s per 100,000 transactions" b floor proxy proxy_policy pgbouncer
fi

# Per-repetition raw values, so noise is visible.
RAW="| measurement | target | values per repetition |
|---|---|---|"
for key in a_tps a_lat a_cpu b_tps b_lat b_cpu x_extended_tps x_extended_cpu x_prepared_tps x_prepared_cpu \
    c1 c2 d_tps d_quiet_lat d_storm_tps e_rss0 e_rss1 e_mem e_sel e_sel2 e_open; do
    for tg in direct pgbouncer floor proxy proxy_nostats proxy_policy proxy_ext proxy_ext_policy pgbouncer_tcp floor_tcp proxy_tcp \
        proxy_scram; do
        [[ -n ${R[$key:$tg]:-} ]] && RAW+=$'\n'"| $key | $tg | ${R[$key:$tg]% } |"
    done
done

GITREV=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$HERE/.." status --porcelain -- src 2>/dev/null) ]]; then GITREV+=" (src/ modified)"; fi
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
BOUNCER_VERSION=$("$PGBOUNCER" --version 2>/dev/null | head -n1)
[[ $HAVE_PROXY == 1 ]] || GITREV+=" — binary missing, proxy not measured"

SECTION="## Latest run

- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, kernel $(uname -r), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)
- PostgreSQL ${PG_VERSION:-?} (fsync=off, shared_buffers=256MB, pgbench -i -s 10), ${BOUNCER_VERSION:-PgBouncer} (session mode, pool 100), pgwire-proxy $GITREV
- clients always reach every target over 127.0.0.1 TCP; PgBouncer and the proxy reach PostgreSQL over its Unix socket, as when deployed on the database host, except in the rows that say TCP
- PostgreSQL, every PgBouncer and every proxy instance run in a session of their own (kernel autogroup $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo n/a)), as services would
- settings: pgbench -T $T, $REPS repetition(s), median shown, targets alternated within each repetition$([[ $QUICK == 1 ]] && printf ' (QUICK smoke run — not representative)')
- load average (1/5/15 min): $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end — anything well above 0 at start means other work shared the machine
- noise: pgbench, PostgreSQL and the proxy/PgBouncer share all $(nproc) cores (nothing pinned); expect run-to-run differences of several percent — compare the per-repetition values below before trusting a ratio near its target.

Ratios are always \"higher is better\": throughput ratios are target ÷ direct, time and latency
ratios are direct ÷ target. f compares CPU seconds proxy ÷ PgBouncer (lower is better).

$TABLE

Against the floor (\`bench/floor.c\`: a bytes-only epoll relay of the same model, one upstream
connection per client, no parsing; the physical limit of a user-space relay here):

$FLOOR

<details><summary>Per-repetition values</summary>

$RAW

</details>"

printf '%s\n' "$SECTION"

if [[ -n $RESULTS ]]; then
    BEGIN_MARK='<!-- latest-run:begin (generated by bench/run.sh; edits here are overwritten) -->'
    END_MARK='<!-- latest-run:end -->'
    if [[ ! -f $RESULTS ]]; then
        cat >"$RESULTS" <<EOF
# pgwire-proxy benchmark results

Generated by \`make bench\` (\`bash bench/run.sh <binary>\`); see bench/README.md for what each
case measures. The "Latest run" section is regenerated by every full run; the
"Optimisation log" below is written by hand and kept.

$BEGIN_MARK
$END_MARK

## Optimisation log

(What was changed, why, and the before/after numbers. Newest first.)
EOF
    fi
    if ! grep -qF "$BEGIN_MARK" "$RESULTS" || ! grep -qF "$END_MARK" "$RESULTS"; then
        printf '\n%s\n%s\n' "$BEGIN_MARK" "$END_MARK" >>"$RESULTS"
    fi
    printf '%s\n' "$SECTION" >"$WORK/section.md"
    awk -v f="$WORK/section.md" -v b="$BEGIN_MARK" -v e="$END_MARK" '
        $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }' "$RESULTS" >"$WORK/results.new"
    cat "$WORK/results.new" >"$RESULTS"
    log "wrote $RESULTS"
fi
log "done"
