#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz_*) in BUILD_DIR for SECONDS each, starting from a copy of
# tests/fuzz/corpus/<target>/ so the repository is never written to. Prints one line per target
# and exits 1 if any target crashed, leaked, hit a UBSan report or did not run at all.
#
#   tests/fuzz/run.sh build-fuzz 20
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
seconds=$2
case $seconds in
'' | *[!0-9]*)
    echo "$0: SECONDS must be a whole number, got '$seconds'" >&2
    exit 2
    ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/pgwp-fuzz.XXXXXX")
failed=0
found=0

for bin in "$build"/fuzz_*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name=$(basename "$bin")
    found=$((found + 1))
    dir="$work/$name"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    if [ -d "$here/corpus/$name" ]; then
        cp -R "$here/corpus/$name/." "$dir/corpus/"
    fi
    seeds=$(find "$dir/corpus" -type f | wc -l)

    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
        "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 \
        -artifact_prefix="$dir/artifacts/" -print_final_stats=1 "$dir/corpus" \
        >"$dir/log" 2>&1
    rc=$?

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
    corpus=$(find "$dir/corpus" -type f | wc -l)
    # a recoverable UBSan report does not change the exit code: look for it too
    if [ $rc -ne 0 ] || grep -qE 'runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' \
        "$dir/log"; then
        failed=1
        printf '%-20s FAIL  exit %d after %s runs; log and reproducer kept in %s\n' \
            "$name" "$rc" "${runs:-?}" "$dir"
        grep -E 'runtime error:|ERROR: |SUMMARY: |Test unit written to' "$dir/log" | head -n 20 |
            sed 's/^/    /'
        for a in "$dir"/artifacts/*; do
            [ -f "$a" ] || continue
            echo "    reproduce: $bin $a"
            od -A d -t x1 "$a" | head -n 8 | sed 's/^/    /'
        done
    else
        printf '%-20s ok    %s runs in %ss, corpus %d -> %d\n' \
            "$name" "${runs:-?}" "$seconds" "$seeds" "$corpus"
    fi
done

if [ $found -eq 0 ]; then
    echo "no fuzz_* binaries in '$build' (configure with -DPGWP_FUZZ=ON -DCMAKE_C_COMPILER=clang)" >&2
    rm -rf "$work"
    exit 1
fi
if [ $failed -ne 0 ]; then
    exit 1
fi
rm -rf "$work"
exit 0
