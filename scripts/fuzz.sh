#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS_PER_TARGET seconds (default 20), one
# after the other, and prints one JSON line per target:
#   {"target":"config","seconds":20.1,"execs":123456,"execs_per_sec":6142,"ok":true}
# Each run starts from a fresh, writable temporary corpus plus fuzz/seeds/<target> (read
# only: libFuzzer writes new inputs to its first corpus directory alone). A crash, leak,
# timeout or out-of-memory input is printed with its path and base64, and the script exits
# non-zero after the remaining targets ran. See fuzz/README.md.
#
# Installs cargo-fuzz when it is missing. FUZZ_SANITIZER=none builds without AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 64
fi

# The machine's one toolchain builds the targets: cargo-fuzz's few unstable flags are allowed
# on stable through RUSTC_BOOTSTRAP (a fresh machine has no nightly, and cannot fetch one).
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version > /dev/null 2>&1; then
    cargo install cargo-fuzz --locked >&2
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$root/fuzz/target}
# AddressSanitizer by default (FUZZ_SANITIZER=none to build without, as CI does: the
# workspace forbids `unsafe`, and an instrumented build of every dependency takes CI's
# machine over 20 minutes).
sanitizer=${FUZZ_SANITIZER:-address}
# -O: optimised. -a: with debug assertions and overflow checks, which `-O` alone turns off
# in cargo-fuzz; an arithmetic overflow on input is a bug we want reported, not wrapped.
cargo fuzz build -O -a -s "$sanitizer" --target-dir "$target_dir" >&2

# cargo-fuzz's own default for AddressSanitizer runs (what `cargo fuzz run` sets).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

work=$(mktemp -d "${TMPDIR:-/tmp}/argent-fuzz.XXXXXX")
failed=()

for target in $(cargo fuzz list); do
    binary="$target_dir/$triple/release/$target"
    corpus="$work/$target/corpus"
    artifacts="$work/$target/artifacts"
    log="$work/$target/log"
    mkdir -p "$corpus" "$artifacts"
    seeds="$root/fuzz/seeds/$target"
    [ -d "$seeds" ] || seeds=""

    start=$(date +%s.%N)
    status=0
    "$binary" "$corpus" ${seeds:+"$seeds"} \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" > "$log" 2>&1 || status=$?
    end=$(date +%s.%N)

    execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log" | tail -n 1)
    execs=${execs:-0}
    crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' \
        -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    ok=true
    if [ "$status" -ne 0 ] || [ -n "$crashes" ]; then
        ok=false
    fi
    awk -v t="$target" -v s="$start" -v e="$end" -v n="$execs" -v ok="$ok" 'BEGIN {
        d = e - s; if (d <= 0) d = 0.001
        printf "{\"target\":\"%s\",\"seconds\":%.1f,\"execs\":%d,\"execs_per_sec\":%d,\"ok\":%s}\n", t, d, n, n / d, ok
    }'

    if [ "$ok" = false ]; then
        failed+=("$target")
        echo "--- $target failed (exit $status); last lines of $log:" >&2
        tail -n 40 "$log" >&2
        for artifact in $crashes; do
            echo "artifact: $artifact" >&2
            echo "base64: $(base64 -w0 "$artifact")" >&2
        done
    else
        rm -rf "${work:?}/$target"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]} (artifacts and logs kept under $work)" >&2
    exit 1
fi
rm -rf "$work"
