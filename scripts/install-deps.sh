#!/usr/bin/env bash
# Installs the Debian packages that building, testing, the demo and the benchmarks need.
# Idempotent: asks dpkg what is missing and runs apt-get only for that. Non-interactive
# (CI=true, no stdin). Prints one line saying what it did; apt's own output goes to a log
# that is shown only when apt fails.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libpq-dev libssl-dev openssl libpg-query-dev libprotobuf-c-dev libmicrohttpd-dev
  libinih-dev libcmocka-dev
  postgresql-15 postgresql-client-15 postgresql-contrib
  python3-pytest python3-psycopg2 python3-psycopg python3-asyncpg
  pgbouncer tmux procps valgrind
  libpostgresql-jdbc-java haproxy python3-yaml strace docker-compose
)

missing=()
for p in "${PKGS[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages already installed, nothing to do"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: missing ${missing[*]}; not root and no sudo: install them as root" >&2
    exit 1
  fi
fi

log=$(mktemp -t install-deps.XXXXXX.log)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends "${missing[@]}"; } </dev/null >"$log" 2>&1; then
  echo "install-deps: apt-get failed installing ${missing[*]}; last lines of its output:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
echo "install-deps: installed ${#missing[@]} missing package(s): ${missing[*]}"
